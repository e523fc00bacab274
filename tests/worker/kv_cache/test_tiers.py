"""Host and disk tiers: demotion, promotion, restart, corruption, bad disks, overlapped loads."""

import logging
import random

import pytest

from worker.engine import LLM, SamplingParams
from worker.kv_cache.disk_store import CacheDirectoryInUse, DiskStore
from worker.kv_cache.radix import Tier, WindowKind

PARAMS = SamplingParams(temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=8)


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(3)
    system = [rng.randrange(97) for _ in range(36)]
    return [system + [rng.randrange(97) for _ in range(rng.randint(2, 9))] for _ in range(5)]


@pytest.fixture(scope="module")
def expected(path, prompts):
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)]


def make(path, **kw):
    return LLM(
        path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01, enable_prefix_caching=True, **kw
    )


def run(llm, prompts):
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    llm.engine.check_integrity()
    return outs


def test_hits_from_the_host_tier_give_identical_outputs(path, prompts, expected):
    llm = make(path, host_cache_gb=0.01)
    run(llm, prompts)
    llm.engine.cache.demote_all()
    assert llm.engine.cache.num_entries(Tier.DEVICE) == 0 and llm.engine.cache.num_entries(Tier.HOST) > 0
    llm.engine.check_integrity()
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.num_cached_tokens >= 36 for o in outs)
    stats = llm.engine.cache.stats
    assert stats.hit_tokens_by_tier["host"] > 0 and stats.promotions > 0


@pytest.mark.parametrize("overlap", [True, False])
def test_disk_tier_hits_and_overlapped_or_not_loads_agree(path, prompts, expected, tmp_path, overlap):
    llm = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01, overlap_loads=overlap)
    run(llm, prompts)
    llm.engine.cache.demote_all()
    assert llm.engine.cache.num_entries(Tier.DISK) > 0
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert llm.engine.cache.stats.hit_tokens_by_tier["disk"] > 0
    llm.close()


def test_host_overflow_spills_to_disk(path, prompts, expected, tmp_path):
    llm = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01, host_cache_gb=2e-6)  # ~2 KB of host memory
    run(llm, prompts)
    llm.engine.cache.demote_all()
    cache = llm.engine.cache
    assert cache.num_entries(Tier.HOST) > 0 and cache.num_entries(Tier.DISK) > 0
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    llm.close()


def test_a_restarted_worker_finds_the_disk_cache_warm(path, prompts, expected, tmp_path):
    first = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    run(first, prompts)
    first.close()
    second = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    assert second.engine.cache.num_entries(Tier.DISK) > 0
    outs = run(second, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.num_cached_tokens >= 36 for o in outs)
    second.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_truncated_or_missing_files_are_misses(path, prompts, expected, tmp_path, damage):
    first = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    run(first, prompts)
    first.close()
    files = sorted(tmp_path.rglob("*.kv"))
    assert files
    for f in files:
        data = bytearray(f.read_bytes())
        if damage == "flip":
            data[-5] ^= 0xFF
            f.write_bytes(bytes(data))
        elif damage == "truncate":
            f.write_bytes(bytes(data[: len(data) - 7]))
        else:
            f.unlink()
    second = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    outs = run(second, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    if damage != "delete":
        assert second.engine.cache.stats.failed_loads > 0
    second.close()


def test_two_workers_on_one_cache_directory_are_refused(path, tmp_path):
    first = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    with pytest.raises(CacheDirectoryInUse, match="in use by pid"):
        make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    first.close()


def test_a_disk_that_fails_writes_degrades_to_fewer_tiers(
    path, prompts, expected, tmp_path, monkeypatch, caplog
):
    llm = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01)
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    run(llm, prompts)
    with caplog.at_level(logging.WARNING):
        llm.engine.cache.demote_all()
    assert "turning the disk tier off" in caplog.text
    assert not llm.disk_store.enabled
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected


def test_zero_budgets_turn_tiers_off(path, prompts, expected, tmp_path):
    llm = make(path, host_cache_gb=0.0, disk_cache_dir=tmp_path, disk_cache_gb=0.0)
    run(llm, prompts)
    llm.engine.cache.demote_all()
    cache = llm.engine.cache
    assert cache.tiers.host is None and cache.tiers.disk is None and not cache.tiers.enabled
    assert cache.tree.num_nodes == 0
    assert [o.outputs[0].token_ids for o in run(llm, prompts)] == expected


def test_disk_store_survives_an_unwritable_directory(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        store = DiskStore(blocker / "cache", 10**6, "ns")
    assert not store.enabled and "unavailable" in caplog.text


def test_spare_windows_move_down_with_their_entries_where_the_tier_has_room(path, prompts):
    # Parts from the cached path inside the shared system prompt, 2 tokens into block 6: the hit ends at
    # 24, a multiple of the window's span (2 blocks), where spare windows move down to the host.
    probe = prompts[0][:26] + [95, 96, 3]
    plain = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    expected = plain.generate([{"prompt_token_ids": probe}], PARAMS)[0].outputs[0].token_ids
    llm = make(path, host_cache_gb=0.01)
    run(llm, prompts)
    cache = llm.engine.cache
    cache.demote_all()
    spare_below = [n for n in cache.tree.nodes() if n.tier is Tier.HOST and n.window_kind is WindowKind.SPARE]
    assert spare_below and all(n.window_len > 0 and (n.depth + 1) % 2 == 0 for n in spare_below)
    out = run(llm, [probe])[0]
    assert out.num_cached_tokens == 24  # a spare window's boundary, served from the host
    assert cache.stats.hit_tokens_by_tier["host"] == 24
    assert out.outputs[0].token_ids == expected


def test_a_spare_window_without_room_below_is_dropped_and_its_entry_still_moves(path, prompts):
    llm = make(path, host_cache_gb=0.01)
    run(llm, prompts)
    cache = llm.engine.cache
    spare = [n for n in cache.tree.nodes() if n.window_kind is WindowKind.SPARE]
    assert spare
    # A host tier too small for any entry with its window, but not for a bare one.
    cache.tiers.host.budget_bytes = cache.transfer.payload_bytes(max(n.window_len for n in spare)) - 1
    assert cache.transfer.payload_bytes(0) <= cache.tiers.host.budget_bytes
    dropped_before = cache.stats.windows_dropped
    cache.demote_all()
    llm.engine.check_integrity()
    bare = [n for n in cache.tree.nodes() if n.tier is Tier.HOST]
    assert bare and all(n.window_len == 0 and n.window_dropped for n in bare)
    assert cache.stats.windows_dropped > dropped_before


def test_spare_windows_never_reach_the_disk(path, prompts, expected, tmp_path):
    llm = make(path, disk_cache_dir=tmp_path, disk_cache_gb=0.01, host_cache_gb=2e-6)  # host spills
    run(llm, prompts)
    cache = llm.engine.cache
    assert any(n.window_kind is WindowKind.SPARE for n in cache.tree.nodes())
    cache.demote_all()
    cache.tiers.spill_host_to_disk(list(cache.tree.nodes()))
    llm.engine.check_integrity()
    on_disk = [n for n in cache.tree.nodes() if n.tier is Tier.DISK]
    assert on_disk and all(n.window_kind is not WindowKind.SPARE for n in on_disk)
    assert any(n.window_kind is WindowKind.PLANNED for n in on_disk)  # the prompt ends' windows went down
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.num_cached_tokens >= 36 for o in outs)
    llm.close()
