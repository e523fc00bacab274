"""The worker's one engine: options from settings, loaded once, replaced only for other settings."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import worker.engine
from hybatch.settings import Settings
from worker import engine_pool


def test_options_come_from_settings_and_skip_tiers_the_engine_lacks(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, device="cpu", kv_cache_gb=0.5, host_cache_gb=2.0, disk_cache_gb=3.0
    )
    base = {
        "device": "cpu",
        "dtype": "auto",
        "enable_prefix_caching": True,
        "kv_cache_gb": 0.5,
        "max_num_seqs": 64,
        "tensor_parallel_size": 1,
        "expert_parallel": False,
    }

    assert engine_pool.llm_options(settings, accepted=set(base)) == base
    with_tiers = engine_pool.llm_options(
        settings, accepted={*base, "host_cache_gb", "disk_cache_dir", "disk_cache_gb"}
    )
    assert with_tiers == {
        **base,
        "host_cache_gb": 2.0,
        "disk_cache_dir": str(tmp_path / "kv_cache"),
        "disk_cache_gb": 3.0,
    }


def test_the_shared_tier_is_off_by_default_and_passed_when_set(tmp_path: Path) -> None:
    accepted = {"shared_cache_dir"}
    assert engine_pool.llm_options(Settings(data_dir=tmp_path), accepted)["shared_cache_dir"] is None
    shared = Settings(data_dir=tmp_path, shared_cache_dir=tmp_path / "shared")
    assert engine_pool.llm_options(shared, accepted)["shared_cache_dir"] == str(tmp_path / "shared")
    assert "shared_cache_dir" in set(inspect.signature(worker.engine.LLM.__init__).parameters)


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


def test_the_engine_takes_the_tensor_and_expert_parallel_options_passed_to_it() -> None:
    # Passed always, never sniffed: an engine without them must fail loudly, not run on one GPU.
    accepted = set(inspect.signature(worker.engine.LLM.__init__).parameters)
    assert {"tensor_parallel_size", "expert_parallel"} <= accepted
