"""SWA blocks that fall out of the window are freed during chunked prefill and decode."""

import math

import pytest

from worker.engine import LLM, SamplingParams
from worker.engine.sampling_params import SamplingParams as Params
from worker.engine.sequence import Sequence
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_cache_manager import KVCacheManager


@pytest.mark.parametrize(
    "window,block_size,chunk", [(8, 4, 7), (8, 4, 1), (1, 4, 5), (13, 3, 10), (200, 16, 64)]
)
def test_running_sequence_holds_at_most_window_blocks_plus_chunk(window, block_size, chunk):
    blocks = BlockManager(block_size, num_full_blocks=1000, num_swa_blocks=1000, window=window)
    kv = KVCacheManager(blocks)
    seq = Sequence("r", None, list(range(300)), Params(max_tokens=1), 0)
    bound = math.ceil(window / block_size) + 1 + math.ceil(chunk / block_size)
    steady = math.ceil(window / block_size) + 1
    while seq.num_computed_tokens < 300:
        n = min(chunk, 300 - seq.num_computed_tokens)
        assert kv.grow(seq, n)
        assert len(seq.swa_blocks) <= bound
        # Every block the step can read is resident: [first key, last token].
        first_key = max(0, seq.num_computed_tokens - window + 1)
        assert seq.swa_first_block <= first_key // block_size
        assert (
            seq.swa_first_block + len(seq.swa_blocks) - 1 >= (seq.num_computed_tokens + n - 1) // block_size
        )
        kv.advance(seq, n)
        assert len(seq.swa_blocks) <= steady
        assert len(seq.full_blocks) == math.ceil(seq.num_computed_tokens / block_size)
        kv.check_integrity([seq])
    kv.release(seq, preempted=False)
    kv.check_integrity([])
    assert blocks.full.num_used == 0 and blocks.swa.num_used == 0


def test_engine_reports_the_bound_over_a_long_generation(checkpoint_factory):
    path = checkpoint_factory(sliding_window=8, num_layers=4)
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, max_num_batched_tokens=6, kv_cache_gb=0.01)
    llm.generate([{"prompt_token_ids": list(range(1, 60))}], SamplingParams(temperature=0, max_tokens=80))
    assert llm.stats().max_swa_blocks_held <= math.ceil(8 / 4) + 1 + math.ceil(6 / 4)
    assert llm.stats().max_swa_blocks_held >= 3  # the test would pass vacuously if nothing was held


def test_block_hashes_are_chained_and_salted():
    blocks = BlockManager(4, 100, 100, window=8)
    kv = KVCacheManager(blocks)
    a = Sequence("a", None, list(range(12)), Params(max_tokens=1), 0, cache_salt="acct_1")
    b = Sequence("b", None, list(range(12)), Params(max_tokens=1), 1, cache_salt="acct_2")
    c = Sequence("c", None, list(range(12)), Params(max_tokens=1), 2, cache_salt="acct_1")
    for seq in (a, b, c):
        assert kv.grow(seq, 12)
        kv.advance(seq, 12)
    assert len(a.block_hashes) == 3
    assert a.block_hashes == c.block_hashes
    assert not set(a.block_hashes) & set(b.block_hashes)
    assert blocks.full.hashes[a.full_blocks[2]] == a.block_hashes[2]
