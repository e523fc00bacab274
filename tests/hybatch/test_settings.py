import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from hybatch.settings import DEFAULT_MODEL_DIR, REPO_ROOT, Settings, completion_window_duration


def test_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'hybatch.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'data' / 'broker.db'}"
    assert settings.files_dir == tmp_path / "data" / "files"
    assert settings.disk_cache_dir == tmp_path / "data" / "kv_cache"
    assert settings.is_sqlite


def test_default_model_is_the_shipped_checkpoint() -> None:
    settings = Settings()
    assert settings.model == DEFAULT_MODEL_DIR
    assert settings.model_name == "hybatch-tiny"
    assert settings.max_batch_lines == 50_000
    assert settings.max_file_bytes == 200_000_000
    assert settings.completion_windows == ("24h",)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYBATCH_PORT", "9001")
    monkeypatch.setenv("HYBATCH_DATABASE_URL", "postgresql+psycopg://u@db/hybatch")
    monkeypatch.setenv("HYBATCH_MODEL", str(tmp_path / "my-model"))
    monkeypatch.setenv("HYBATCH_COMPLETION_WINDOWS", '["24h", "1h"]')
    settings = Settings()
    assert settings.port == 9001
    assert settings.database_url == "postgresql+psycopg://u@db/hybatch"
    assert not settings.is_sqlite
    assert settings.model_name == "my-model"
    assert settings.completion_windows == ("24h", "1h")


def test_explicit_model_name_wins(tmp_path: Path) -> None:
    assert Settings(model=tmp_path / "ckpt", model_name="served").model_name == "served"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("windows", [(), ("24 hours",), ("0h",)])
def test_bad_completion_windows_are_rejected(windows: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        Settings(completion_windows=windows)


def test_completion_window_duration() -> None:
    assert completion_window_duration("24h") == timedelta(hours=24)
    with pytest.raises(ValueError):
        completion_window_duration("1d")


def test_readme_settings_table_matches_the_settings() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(HYBATCH_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == {f"HYBATCH_{name.upper()}" for name in Settings.model_fields}


def test_dashboard_secrets_empty_means_unset_and_short_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYBATCH_SESSION_SECRET", "")
    monkeypatch.setenv("HYBATCH_ADMIN_KEY", "  ")
    settings = Settings()
    assert settings.session_secret is None and settings.admin_key is None
    monkeypatch.setenv("HYBATCH_ADMIN_KEY", "short")
    with pytest.raises(ValueError, match="at least 16"):
        Settings()


def test_pool_threads_and_sweep_defaults_leave_every_api_thread_a_connection() -> None:
    settings = Settings()
    assert settings.db_pool_size + settings.db_max_overflow >= settings.api_threads == 40
    assert settings.db_pool_timeout_s == 30.0
    assert settings.partial_max_age_s > settings.partial_sweep_interval_s > 0


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache:6380/1", "amqp://guest@mq//", "sqla+sqlite:///b.db"]
)
def test_known_broker_schemes_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HYBATCH_BROKER_URL", url)
    assert Settings().broker_url == url


@pytest.mark.parametrize("url", ["foo://x", "redis", "sqla+mysql://db/broker", "memory://"])
def test_an_unknown_broker_scheme_is_one_error_naming_the_accepted_ones(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("HYBATCH_BROKER_URL", url)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert raised.value.error_count() == 1
    message = str(raised.value)
    assert "HYBATCH_BROKER_URL must start with one of redis://, rediss://" in message
    assert "sqla+sqlite://" in message and repr(url) in message


def test_tensor_and_expert_parallel_default_to_one_gpu_and_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().tensor_parallel, Settings().expert_parallel) == (1, False)
    monkeypatch.setenv("HYBATCH_TENSOR_PARALLEL", "8")
    monkeypatch.setenv("HYBATCH_EXPERT_PARALLEL", "true")
    assert (Settings().tensor_parallel, Settings().expert_parallel) == (8, True)


def test_tensor_parallel_below_one_and_expert_parallel_on_one_gpu_are_refused() -> None:
    with pytest.raises(ValidationError, match="tensor_parallel"):
        Settings(tensor_parallel=0)
    with pytest.raises(ValidationError, match="HYBATCH_TENSOR_PARALLEL"):
        Settings(expert_parallel=True)
    assert Settings(tensor_parallel=2, expert_parallel=True).expert_parallel


def test_shared_cache_url_is_an_s3_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().shared_cache_url is None
    monkeypatch.setenv("HYBATCH_SHARED_CACHE_URL", "")
    assert Settings().shared_cache_url is None
    monkeypatch.setenv("HYBATCH_SHARED_CACHE_URL", "s3://kv-bucket/fleet/kv")
    assert Settings().shared_cache_url == "s3://kv-bucket/fleet/kv"
    monkeypatch.setenv("HYBATCH_SHARED_CACHE_URL", "/mnt/shared")
    with pytest.raises(ValidationError, match="HYBATCH_SHARED_CACHE_URL must look like s3://bucket/prefix"):
        Settings()


def test_shared_cache_dir_and_url_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="HYBATCH_SHARED_CACHE_DIR and HYBATCH_SHARED_CACHE_URL"):
        Settings(shared_cache_dir=tmp_path / "shared", shared_cache_url="s3://kv-bucket/kv")
    assert Settings(shared_cache_dir=tmp_path / "shared").shared_cache_url is None
