"""The worker's one engine: options from settings, loaded once, replaced only for other settings."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import worker.engine
from hybatch.settings import Settings
from worker import engine_pool


def test_every_option_comes_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        device="cpu",
        kv_cache_gb=0.5,
        kv_swa_share=0.3,
        host_cache_gb=2.0,
        disk_cache_gb=3.0,
    )
    assert engine_pool.llm_options(settings) == {
        "device": "cpu",
        "dtype": "auto",
        "enable_prefix_caching": True,
        "kv_cache_gb": 0.5,
        "kv_swa_share": 0.3,
        "max_num_seqs": 64,
        "tensor_parallel_size": 1,
        "expert_parallel": False,
        "host_cache_gb": 2.0,
        "disk_cache_dir": str(tmp_path / "kv_cache"),
        "disk_cache_gb": 3.0,
        "shared_cache_dir": None,
        "shared_cache_url": None,
        "s3_endpoint_url": None,
        "s3_region": None,
    }
    shared = Settings(data_dir=tmp_path, shared_cache_dir=tmp_path / "shared")
    assert engine_pool.llm_options(shared)["shared_cache_dir"] == str(tmp_path / "shared")
    in_s3 = Settings(
        data_dir=tmp_path,
        shared_cache_url="s3://kv-bucket/kv",
        s3_endpoint_url="http://minio:9000",
        s3_region="eu-west-1",
    )
    options = engine_pool.llm_options(in_s3)
    assert (options["shared_cache_dir"], options["shared_cache_url"]) == (None, "s3://kv-bucket/kv")
    assert (options["s3_endpoint_url"], options["s3_region"]) == ("http://minio:9000", "eu-west-1")


def test_the_engine_accepts_every_option_the_worker_passes(tmp_path: Path) -> None:
    # Passed always, never sniffed: an engine without one must fail loudly, not run without it
    # (on one GPU, with no host tier, ...).
    accepted = set(inspect.signature(worker.engine.LLM.__init__).parameters)
    assert set(engine_pool.llm_options(Settings(data_dir=tmp_path))) <= accepted


def test_the_engine_is_loaded_once_per_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []

    class FakeLLM:
        def __init__(
            self,
            model,
            *,
            device="auto",
            dtype="auto",
            enable_prefix_caching=False,
            kv_cache_gb=1.0,
            max_num_seqs=64,
            tensor_parallel_size=1,
            expert_parallel=False,
            **tiers,
        ):
            loads.append((model, kv_cache_gb, tensor_parallel_size, expert_parallel))

    monkeypatch.setattr(worker.engine, "LLM", FakeLLM)
    monkeypatch.setattr(engine_pool, "_loaded", None)
    settings = Settings(data_dir=tmp_path, model=tmp_path / "ckpt", kv_cache_gb=0.5)

    first = engine_pool.get_llm(settings)
    assert engine_pool.get_llm(settings) is first
    other = engine_pool.get_llm(settings.model_copy(update={"kv_cache_gb": 0.25}))
    assert other is not first
    assert loads == [(tmp_path / "ckpt", 0.5, 1, False), (tmp_path / "ckpt", 0.25, 1, False)]
    node = engine_pool.get_llm(settings.model_copy(update={"tensor_parallel": 8, "expert_parallel": True}))
    assert node is not other and loads[-1] == (tmp_path / "ckpt", 0.5, 8, True)
