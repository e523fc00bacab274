"""The re-implemented peer policies of ``bench cache-trace`` on hand-built traces with known hits.

Shape used throughout: blocks of 4 tokens, window 5 (a resume after ``p`` blocks reads SWA block
``p - 1`` only), a full-layer block costs 1 byte and an SWA-layer block 2, so a block of every
layer costs 3.
"""

from worker.bench.cache_trace_every_layer import EveryLayerCache
from worker.bench.cache_trace_memory import Holding, KVBytes
from worker.bench.cache_trace_sglang import SglangSwaRadixCache
from worker.bench.cache_trace_vllm import VllmHybridCache
from worker.bench.cache_trace_workloads import TraceRequest

KV = KVBytes(block_size=4, window=5, full_block_bytes=1, swa_block_bytes=2)
A = TraceRequest("s", tuple(range(1, 13)))  # 3 full blocks
B = TraceRequest("s", A.token_ids[:8] + (99,))  # A's first 2 blocks + 1 token
C = TraceRequest("s", A.token_ids[:4] + (99,))  # A's first block + 1 token
D = TraceRequest("s", tuple(range(50, 59)))  # unrelated: 2 blocks + 1 token


def hits(policy, *requests) -> list[int]:
    return [policy.serve(r) for r in requests]


def test_window_arithmetic():
    assert [KV.window_start(p) for p in (0, 1, 2, 3)] == [0, 0, 1, 2]
    assert KV.window_blocks == 1
    # MiMo-V2.5-Pro: window 128 with 16-token blocks needs 8 blocks (127 keys) before a resume point.
    pro = KVBytes(16, 128, 0, 0)
    assert pro.window_blocks == 8 and pro.window_start(8) == 0 and pro.window_start(9) == 1


def test_capacity_multiplier_counts_full_and_swa_bytes():
    # 10 cached blocks of full KV (10 bytes) + 2 retained SWA blocks (4 bytes), vs 30 bytes for every layer.
    assert Holding(40, 14).multiplier(KV) == 30 / 14


def test_vllm_hits_every_cached_boundary_up_to_prompt_len_minus_one():
    vllm = VllmHybridCache(KV, capacity_bytes=1000, chunk_tokens=100)
    # A again: at most (12 - 1) // 4 = 2 blocks can hit (one token is always computed).
    assert hits(vllm, A, B, C, A) == [0, 8, 4, 8]


def test_vllm_evicts_out_of_window_swa_blocks_first():
    # Chunks of 4 tokens: A holds at most 3 full + 2 SWA blocks = 7 bytes. Computing its third chunk
    # frees SWA block 0 (out of the window) into the free queue, and allocating SWA block 2 with
    # 7 bytes evicts it: C, which needs SWA block 0 to resume after block 0, then misses, while B
    # (window SWA block 1) still hits. With 9 bytes nothing is evicted and C hits.
    assert hits(VllmHybridCache(KV, 7, chunk_tokens=4), A, C) == [0, 0]
    assert hits(VllmHybridCache(KV, 7, chunk_tokens=4), A, B) == [0, 8]
    assert hits(VllmHybridCache(KV, 9, chunk_tokens=4), A, C) == [0, 4]


def test_vllm_holding_counts_what_stays_cached():
    vllm = VllmHybridCache(KV, capacity_bytes=1000, chunk_tokens=100)
    vllm.serve(A)
    # 3 full + 3 SWA blocks cached (the partial-block-free prompt leaves nothing uncached).
    assert vllm.holding() == Holding(12, 3 * 1 + 3 * 2)


def test_sglang_hits_like_vllm_with_room_to_spare():
    sglang = SglangSwaRadixCache(KV, capacity_bytes=1000, chunk_tokens=100)
    assert hits(sglang, A, B, C, A) == [0, 8, 4, 8]


def test_sglang_tombstones_swa_least_recently_used_first():
    # Ratio 0.2 at 28 bytes: 28 // (1 + 0.4) = 20 full blocks, 4 SWA blocks.
    sglang = SglangSwaRadixCache(KV, capacity_bytes=28, chunk_tokens=100, swa_full_tokens_ratio=0.2)
    assert (sglang.num_full, sglang.num_swa) == (20, 4)
    # A leaves nodes a0 a1 a2 with SWA (1 SWA block free). D needs 3: a0 then a1 are tombstoned
    # (inner nodes keep their full KV). B walks a0 a1 but neither has a window: no hit; it needs 3
    # SWA blocks with 1 free, so the leaf a2 is deleted and D's inner node d0 tombstoned; B's insert
    # revives a0 and a1, so C then resumes after a0.
    assert hits(sglang, A, D, B, C) == [0, 0, 0, 4]
    assert sglang.tree.num_nodes == 4  # a0 a1 d0 d1 (a2 deleted)
    assert sglang.tree.num_swa == 3  # a0 a1 d1 (d0 tombstoned)
    assert sglang.full_free == 16 and sglang.swa_free == 1


def test_sglang_a_prompt_needs_swa_room_for_all_its_tokens():
    # The radix cache frees no SWA KV while a prompt runs: 3 SWA blocks for A do not fit in 2.
    sglang = SglangSwaRadixCache(KV, capacity_bytes=21, chunk_tokens=4, swa_full_tokens_ratio=0.2)
    assert sglang.num_swa == 3
    assert hits(sglang, A) == [0]
    small = SglangSwaRadixCache(KV, capacity_bytes=14, chunk_tokens=4, swa_full_tokens_ratio=0.2)
    assert small.num_swa == 2
    try:
        small.serve(A)
    except RuntimeError as exc:
        assert "hold no request" in str(exc)
    else:
        raise AssertionError("a prompt larger than the SWA pool ran")


def test_every_layer_evicts_least_recently_used_leaves():
    # 15 bytes = 5 blocks of every layer. A fills 3; D needs 3 (2 full + a partial): the leaf a2
    # goes. B and A still hit a0 a1; A's block 2 is recomputed.
    cache = EveryLayerCache(KV, capacity_bytes=15, chunk_tokens=100)
    assert hits(cache, A, D, B, A) == [0, 0, 8, 8]
    assert cache.holding() == Holding(5 * 4, 5 * 3)


def test_salts_never_share():
    other = TraceRequest("t", B.token_ids)
    for policy in (
        VllmHybridCache(KV, 1000, 100),
        SglangSwaRadixCache(KV, 1000, 100),
        EveryLayerCache(KV, 1000, 100),
    ):
        assert hits(policy, A, other) == [0, 0], policy.name
