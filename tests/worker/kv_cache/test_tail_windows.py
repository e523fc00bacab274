"""Tail windows: the spare windows in the span before a plain prompt's end rank with the planned
ones, so the next question on the same document resumes where it parts from the last, not a stride
above; a chat prompt's message boundaries mark that point instead, so its span keeps spare windows.

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


def run(kv: KVCacheManager, prompt: list[int], arrival: int, boundaries=frozenset()) -> int:
    seq = Sequence(str(arrival), None, prompt, SamplingParams(max_tokens=1), arrival, "acct")
    seq.message_boundaries = frozenset(boundaries)
    num_tokens = kv.admit(seq, kv.match(seq), 64)
    kv.advance(seq, num_tokens)
    kv.release(seq, preempted=False)
    kv.check_integrity()
    return seq.num_cached_tokens


def first_token(node) -> int:
    while node.parent is not None:
        node = node.parent
    return node.token_ids[0]


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


def test_tail_windows_outlive_an_older_prompts_planned_ones():
    # Two documents, one question each; the SWA pool then asks for all but the newer document's
    # tail and end windows (blocks of one window span + 1). LRU across planned and tail windows
    # alike: the older prompt's planned end goes before the newer prompt's tail.
    blocks = BlockManager(B, 64, 32, W)
    cache = PrefixCache(blocks)
    kv = KVCacheManager(blocks, cache)
    run(kv, DOCUMENT + [90] * 6, 1)
    newer = [100 + t for t in DOCUMENT]
    run(kv, newer + [90] * 6, 2)
    cache.reclaim(0, blocks.swa.num_blocks - 3)
    kv.check_integrity()
    kept = {(first_token(n), n.end_token): n.window_kind for n in cache.tree.nodes() if n.window}
    assert kept == {(100 + 1, 32): WindowKind.TAIL, (100 + 1, 36): WindowKind.PLANNED}


def test_a_chat_prompt_keeps_spare_windows_before_its_end_and_a_message_window_where_it_parts():
    blocks = BlockManager(B, 64, 32, W)
    cache = PrefixCache(blocks)
    kv = KVCacheManager(blocks, cache)
    assert run(kv, DOCUMENT + [90] * 6, 1, boundaries={28}) == 0  # the document is one message
    kinds = {n.end_token: n.window_kind for n in cache.tree.nodes() if n.window}
    assert (kinds[28], kinds[32], kinds[36]) == (WindowKind.MESSAGE, WindowKind.SPARE, WindowKind.PLANNED)
    cache.reclaim(0, blocks.swa.num_free + 5)  # every block the spare windows alone hold (0-4)
    kv.check_integrity()
    # The spare window at 32 shares its blocks with 28's and 36's: still there, not a tail.
    assert {n.end_token for n in cache.tree.nodes() if n.window} == {28, 32, 36}
    assert run(kv, DOCUMENT + [91] * 6, 2, boundaries={28}) == 28
