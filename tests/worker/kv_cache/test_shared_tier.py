"""The shared tier: one engine loads a prefix another computed; unverifiable bytes are a miss."""

import random

import pytest

from worker.engine import LLM, SamplingParams
from worker.kv_cache.disk_store import SUFFIX, DiskEntry
from worker.kv_cache.metrics import render_prometheus
from worker.kv_cache.radix import Tier
from worker.kv_cache.shared_store import SharedStore

PARAMS = SamplingParams(temperature=0, max_tokens=8)
SYSTEM_LEN = 36


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=8)


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(5)
    system = [rng.randrange(97) for _ in range(SYSTEM_LEN)]
    return [system + [rng.randrange(97) for _ in range(rng.randint(2, 9))] for _ in range(5)]


@pytest.fixture(scope="module")
def expected(path, prompts):
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)]


def make(path, disk_dir, shared_dir, **kw):
    return LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        disk_cache_dir=disk_dir,
        disk_cache_gb=0.01,
        shared_cache_dir=shared_dir,
        **kw,
    )


def run(llm, prompts, salt=None):
    outs = llm.generate([{"prompt_token_ids": p, "cache_salt": salt} for p in prompts], PARAMS)
    llm.engine.check_integrity()
    return outs


def shared_files(shared_dir):
    return sorted(p for p in shared_dir.rglob(f"*{SUFFIX}"))


def publish_from_a(path, tmp_path, prompts, how, salt=None):
    a = make(path, tmp_path / "disk-a", tmp_path / "shared")
    run(a, prompts, salt)
    if how == "demote":  # write-through: entries the local tiers move to disk reach the shared tier
        a.engine.cache.demote_all()
        a.engine.check_integrity()
        assert a.engine.cache.num_entries(Tier.DISK) > 0
    if how != "call":  # "call": published at the end of the generate call, A still running
        a.close()
    assert shared_files(tmp_path / "shared")
    return a


@pytest.mark.parametrize("how", ["call", "close", "demote"])
def test_engine_b_hits_what_engine_a_computed_with_identical_outputs(path, prompts, expected, tmp_path, how):
    publish_from_a(path, tmp_path, prompts, how)
    b = make(path, tmp_path / "disk-b", tmp_path / "shared")
    assert b.engine.cache.num_entries(Tier.DISK) == 0  # its own disk is empty: hits come from the shared tier
    outs = run(b, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert outs[0].num_cached_tokens >= SYSTEM_LEN
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared >= SYSTEM_LEN
    assert f'tier="shared"}} {metrics.hit_tokens_shared}' in render_prometheus(metrics)
    b.close()


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_a_damaged_shared_object_is_a_miss_and_outputs_stay_right(path, prompts, expected, tmp_path, damage):
    publish_from_a(path, tmp_path, prompts, "close")
    files = shared_files(tmp_path / "shared")
    for file in files:
        raw = bytearray(file.read_bytes())
        if damage == "corrupt":
            raw[-1] ^= 0xFF
            file.write_bytes(bytes(raw))
        elif damage == "truncate":
            file.write_bytes(bytes(raw[: len(raw) - 7]))
        else:
            file.unlink()
    b = make(path, tmp_path / "disk-b", tmp_path / "shared")
    outs = run(b, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared == 0
    if damage != "delete":
        assert all(file.exists() for file in files)  # a reader never deletes a shared object
        assert metrics.failed_loads > 0


def test_a_different_salt_never_hits_the_shared_tier(path, prompts, expected, tmp_path):
    publish_from_a(path, tmp_path, prompts, "close", salt="acct_a")
    b = make(path, tmp_path / "disk-b", tmp_path / "shared")
    outs = run(b, prompts, salt="acct_b")
    assert [o.outputs[0].token_ids for o in outs] == expected
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared == 0 and metrics.hit_tokens_earlier_calls == 0
    assert b.engine.cache.num_entries(Tier.SHARED) == 0
    # The same salt does hit (the test above can fail).
    c = make(path, tmp_path / "disk-c", tmp_path / "shared")
    run(c, prompts, salt="acct_a")
    assert c.cache_metrics().hit_tokens_shared >= SYSTEM_LEN


def _entry(tokens=(1, 2, 3, 4), parent=None):
    return DiskEntry(b"\x01" * 16, parent, tuple(tokens), 0, 0)


def test_shared_store_verifies_namespace_tokens_and_parent(tmp_path):
    import torch

    payload = torch.arange(12, dtype=torch.float32)
    store = SharedStore(tmp_path, "model-a")
    assert store.put(_entry(), payload)
    assert torch.equal(store.load(_entry()), payload)
    assert store.header(_entry()) == _entry()
    assert store.load(_entry(tokens=(1, 2, 3, 5))) is None
    assert store.header(_entry(parent=b"\x02" * 16)) is None
    # The same file under another namespace's directory (copied by hand) is still refused.
    other = SharedStore(tmp_path, "model-b")
    name = _entry().block_hash.hex() + SUFFIX
    (other.directory / name).write_bytes((store.directory / name).read_bytes())
    assert other.load(_entry()) is None and other.header(_entry()) is None
    # No temporary files are left behind by a write.
    assert sorted(p.name for p in store.directory.iterdir()) == [name]


def test_without_a_disk_tier_demoted_entries_stay_in_the_shared_tier(path, prompts, expected, tmp_path):
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        shared_cache_dir=tmp_path / "shared",
    )
    run(llm, prompts)
    llm.engine.cache.demote_all()
    llm.engine.check_integrity()
    assert llm.engine.cache.num_entries(Tier.DEVICE) == 0 and llm.engine.cache.num_entries(Tier.SHARED) > 0
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert llm.cache_metrics().hit_tokens_shared >= SYSTEM_LEN
