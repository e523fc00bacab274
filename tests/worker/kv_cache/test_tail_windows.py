"""Tail windows: the spare windows in the span before a prompt's end outlive the other spare ones,
so the next question on the same document resumes where it parts from the last, not a stride above.

No model: sequences go through the KV-cache manager as the engine drives them, ``check_integrity``
after every step. Window 6, block 4: a window spans 2 blocks, so the tail of a prompt ending at
token 36 is the windows ending at 28 and 32.
"""

from __future__ import annotations

from worker.engine.sampling_params import SamplingParams
from worker.engine.sequence import Sequence
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_cache_manager import KVCacheManager
from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.radix import WindowKind

B, W = 4, 6
DOCUMENT = list(range(1, 31))  # 30 tokens: its last full block ends at 28


def run(kv: KVCacheManager, prompt: list[int], arrival: int) -> int:
    seq = Sequence(str(arrival), None, prompt, SamplingParams(max_tokens=1), arrival, "acct")
    num_tokens = kv.admit(seq, kv.match(seq), 64)
    kv.advance(seq, num_tokens)
    kv.release(seq, preempted=False)
    kv.check_integrity()
    return seq.num_cached_tokens


def test_a_second_question_resumes_at_the_document_end_after_spare_windows_thin_out():
    blocks = BlockManager(B, 64, 32, W)
    cache = PrefixCache(blocks)
    kv = KVCacheManager(blocks, cache)
    assert run(kv, DOCUMENT + [90] * 6, 1) == 0  # document + question 1: ends at 36
    kinds = {n.end_token: n.window_kind for n in cache.tree.nodes() if n.window}
    assert kinds[28] is kinds[32] is WindowKind.TAIL and kinds[36] is WindowKind.PLANNED
    assert {e for e, k in kinds.items() if k is WindowKind.SPARE} == {4, 8, 12, 16, 20, 24}
    # SWA pressure: free every block the spare windows alone hold (blocks 0-4; the tail and the
    # prompt end's windows hold blocks 5-8).
    cache.reclaim(0, blocks.swa.num_free + 5)
    kv.check_integrity()
    kept = {n.end_token: n.window_kind for n in cache.tree.nodes() if n.window}
    assert set(kept) == {28, 32, 36}
    # Question 2 parts from question 1 right after the document's last full block.
    assert run(kv, DOCUMENT + [91] * 6, 2) == 28
    assert next(n for n in cache.tree.nodes() if n.end_token == 28 and n.window).window_kind is (
        WindowKind.PLANNED
    )  # where a prompt parted: planned for the questions after it
