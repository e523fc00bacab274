"""Service settings: one frozen object built once from ``HYBATCH_*`` environment variables.

Paths that default relative to another setting (the database under ``DATA_DIR``, the served
model name from the checkpoint directory) are filled in while the object is built, never
patched afterwards.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "worker" / "model" / "checkpoints" / "hybatch-tiny"

_WINDOW_PATTERN = re.compile(r"^([1-9][0-9]*)h$")
_S3_URL_PATTERN = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
# Celery brokers this service is run and tested with (kombu names many more, some only in-process).
BROKER_SCHEMES = (
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "sqla+sqlite",
    "sqla+postgresql",
    "sqla+postgresql+psycopg",
)


def completion_window_duration(window: str) -> timedelta:
    """Length of a completion window written as ``<hours>h`` (``"24h"`` -> 24 hours)."""
    match = _WINDOW_PATTERN.match(window)
    if match is None:
        raise ValueError(f"completion window {window!r} must look like '24h'")
    return timedelta(hours=int(match.group(1)))


class Settings(BaseSettings):
    """Everything configurable about a hybatch process (read-only once built)."""

    model_config = SettingsConfigDict(env_prefix="HYBATCH_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    data_dir: Path = Path("var")
    database_url: str
    broker_url: str
    task_queue: str = "hybatch"
    files_dir: Path
    # Unset: files live in FILES_DIR. "s3://bucket/prefix": in an S3-compatible object store, with
    # credentials from boto3's own chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role), never here.
    files_url: str | None = None
    s3_endpoint_url: str | None = None  # MinIO, Ceph, moto; unset: AWS S3
    s3_region: str | None = None  # unset: boto3's own (AWS_DEFAULT_REGION, ~/.aws/config)

    model: Path = DEFAULT_MODEL_DIR
    model_name: str
    device: Literal["auto", "cpu", "cuda"] = "auto"
    kv_cache_gb: float = Field(default=1.0, gt=0)
    # The sliding-window pool's share of KV_CACHE_GB's bytes (the full-attention pool gets the rest);
    # unset: the engine's own (half; docs/kv-cache.md says how it was chosen and when to move it).
    kv_swa_share: float | None = Field(default=None, gt=0, lt=1)
    host_cache_gb: float = Field(default=4.0, ge=0)
    disk_cache_dir: Path
    disk_cache_gb: float = Field(default=20.0, ge=0)
    # A prefix-cache tier every worker shares (an NFS mount, a shared volume), below the disk; unset: off.
    shared_cache_dir: Path | None = None
    # Or the same tier in an S3-compatible bucket ("s3://bucket/prefix"; S3_ENDPOINT_URL and S3_REGION
    # as for files, credentials from boto3's chain); at most one of the two.
    shared_cache_url: str | None = None
    # One engine over this many GPUs of the node (ranks of torch.distributed; `hybatch worker
    # --tensor-parallel N`), with the MoE experts spread over them when EXPERT_PARALLEL is set. The KV
    # cache budgets above are per GPU (per rank).
    tensor_parallel: int = Field(default=1, ge=1)
    expert_parallel: bool = False

    max_batch_lines: int = Field(default=50_000, ge=1)
    # Prompt tokens one account may have enqueued (in unfinished batches) per model; unset: no limit.
    # `hybatch quotas set` gives an account its own.
    enqueued_token_limit: int | None = Field(default=None, ge=0)
    max_file_bytes: int = Field(default=200_000_000, ge=1)
    completion_windows: tuple[str, ...] = ("24h",)
    default_account: str = "default"
    # The fleet (docs/operations.md, "Shards and leases"). A batch is cut into shards of about
    # SHARD_REQUESTS requests along its prompt tree; each runs as its own task under a lease of
    # LEASE_S seconds that its worker renews between engine steps. Every worker sweeps for
    # expired leases every LEASE_S / 2 seconds, so a dead worker's shard runs again within two.
    shard_requests: int = Field(default=256, ge=1)
    lease_s: float = Field(default=45.0, gt=0)
    # A pending shard whose task was sent this long ago and never started is sent again (a lost
    # message); a queue that is merely long gets a duplicate, which is harmless.
    republish_after_s: float = Field(default=900.0, gt=0)
    # Cache affinity (docs/operations.md, "Cache affinity"): the first shard of each prompt subtree
    # goes to the queue of the worker that a hash of the account and the prompt's first blocks picks
    # among the live ones, so a prefix another batch computed there hits its cache. A routed shard
    # still untaken after AFFINITY_WAIT_S (that worker is busy) goes to the shared queue once another
    # worker is idle. WORKER_NAME pins a worker's name (default: host, pid and a random tag), so a
    # restart keeps its prefixes.
    shard_affinity: bool = True
    affinity_wait_s: float = Field(default=3.0, gt=0)
    worker_name: str | None = Field(default=None, min_length=1, max_length=100)
    # Webhooks to loopback, link-local and private addresses are refused unless this is set (for
    # tests, or endpoints on the operator's own network).
    webhook_allow_private: bool = False
    # Port of the worker's Prometheus text endpoint (/metrics, prefix-cache counters); 0 = off.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Dashboard sign-in. Without a session secret one is generated into DATA_DIR/session_secret;
    # every API process behind one address must share it. No admin key: no admin view.
    session_secret: SecretStr | None = None
    admin_key: SecretStr | None = None
    session_hours: int = Field(default=12, ge=1, le=24 * 30)
    cookie_secure: bool = False  # set when the dashboard is served over HTTPS

    # The API process under load (docs/operations.md, "Sizing the API"). Sync routes run on API_THREADS
    # threads; a request holds a pooled database connection only while one of them runs its query, so
    # with DB_POOL_SIZE + DB_MAX_OVERFLOW >= API_THREADS no thread ever waits for a connection.
    api_threads: int = Field(default=40, ge=1)
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout_s: float = Field(default=30.0, gt=0)
    # Uploads killed mid-way leave `.partial` objects in the file storage: the API removes those idle
    # for longer than PARTIAL_MAX_AGE_S at start-up and then every PARTIAL_SWEEP_INTERVAL_S (0: only
    # at start-up). Keep the age well above the longest upload: a live write that is swept fails.
    partial_max_age_s: float = Field(default=3600.0, gt=0)
    partial_sweep_interval_s: float = Field(default=600.0, ge=0)
    # How often the API deletes expired files (bytes and rows; they answer 404 as soon as they
    # expire, the sweep frees the storage); 0 = never.
    expired_files_sweep_interval_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _derive_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        data_dir = Path(values.get("data_dir") or "var").resolve()
        values["data_dir"] = data_dir
        values.setdefault("database_url", f"sqlite:///{data_dir / 'hybatch.db'}")
        values.setdefault("broker_url", f"sqla+sqlite:///{data_dir / 'broker.db'}")
        values.setdefault("files_dir", data_dir / "files")
        values.setdefault("disk_cache_dir", data_dir / "kv_cache")
        model = Path(values.get("model") or DEFAULT_MODEL_DIR)
        values["model"] = model
        values.setdefault("model_name", model.name)
        return values

    @model_validator(mode="after")
    def _expert_parallel_needs_ranks(self) -> Settings:
        if self.expert_parallel and self.tensor_parallel == 1:
            raise ValueError(
                "HYBATCH_EXPERT_PARALLEL spreads the experts over the tensor-parallel ranks: it needs "
                "HYBATCH_TENSOR_PARALLEL (or --tensor-parallel) of 2 or more"
            )
        return self

    @field_validator("completion_windows")
    @classmethod
    def _windows_are_durations(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        if not windows:
            raise ValueError("at least one completion window is required")
        for window in windows:
            completion_window_duration(window)
        return windows

    @field_validator("files_url")
    @classmethod
    def _files_url_is_s3(cls, url: str | None) -> str | None:
        if url is not None and not _S3_URL_PATTERN.match(url):
            raise ValueError(
                f"HYBATCH_FILES_URL must look like s3://bucket/prefix (or be unset to keep files in "
                f"HYBATCH_FILES_DIR), not {url!r}"
            )
        return url

    @field_validator("shared_cache_url")
    @classmethod
    def _shared_cache_url_is_s3(cls, url: str | None) -> str | None:
        if url is not None and not _S3_URL_PATTERN.match(url):
            raise ValueError(
                f"HYBATCH_SHARED_CACHE_URL must look like s3://bucket/prefix (or be unset), not {url!r}"
            )
        return url

    @model_validator(mode="after")
    def _one_shared_cache(self) -> Settings:
        if self.shared_cache_dir is not None and self.shared_cache_url is not None:
            raise ValueError(
                "HYBATCH_SHARED_CACHE_DIR and HYBATCH_SHARED_CACHE_URL both name the shared KV cache "
                "tier: set one (a shared directory or an s3:// bucket), not both"
            )
        return self

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme_is_known(cls, url: str) -> str:
        scheme, separator, _ = url.partition("://")
        if not separator or scheme not in BROKER_SCHEMES:
            accepted = ", ".join(f"{name}://" for name in BROKER_SCHEMES)
            raise ValueError(f"HYBATCH_BROKER_URL must start with one of {accepted}; got {url!r}")
        return url

    @field_validator(
        "session_secret",
        "admin_key",
        "files_url",
        "shared_cache_url",
        "s3_endpoint_url",
        "s3_region",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("session_secret", "admin_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a long random string)")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
