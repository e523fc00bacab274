"""Windows a later prompt has gone past: a growing conversation keeps one live window per chat.

No model: sequences go through the KV-cache manager as the engine drives them (match and admit,
advance chunk by chunk, release), and ``check_integrity`` runs after every request. Window 6, block
4: a window is 2 SWA blocks; spare windows off, so a window is kept only where one is planned (a
prompt's end, a divergence) or at a message boundary.
"""

from __future__ import annotations

from worker.engine.sampling_params import SamplingParams
from worker.engine.sequence import Sequence
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_cache_manager import KVCacheManager
from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.radix import WindowKind

B, W = 4, 6
CHUNK = 4  # a running sequence holds at most 2 + 1 + 1 SWA blocks


class Cache:
    def __init__(self, swa_blocks: int) -> None:
        self.blocks = BlockManager(B, 128, swa_blocks, W)
        self.cache = PrefixCache(self.blocks, opportunistic_windows=False)
        self.kv = KVCacheManager(self.blocks, self.cache)
        self.arrivals = 0

    def run(self, prompt: list[int], message_ends: frozenset[int] = frozenset()) -> int:
        """One request (every chat its own salt, named by its first token); returns its hit tokens."""
        self.arrivals += 1
        seq = Sequence(
            str(self.arrivals),
            None,
            prompt,
            SamplingParams(max_tokens=1),
            self.arrivals,
            f"chat-{prompt[0]}",
            message_boundaries=message_ends,
        )
        num_tokens = self.kv.admit(seq, self.kv.match(seq), CHUNK)
        assert num_tokens, "the request did not fit"
        while num_tokens:
            self.kv.advance(seq, num_tokens)
            num_tokens = min(CHUNK, seq.num_uncomputed_tokens)
            if num_tokens:
                assert self.kv.grow(seq, num_tokens)
        self.kv.release(seq, preempted=False)
        self.kv.check_integrity()
        return seq.num_cached_tokens

    def kinds(self, chat_id: int) -> dict[int, WindowKind]:
        """The chat's windows: kind by the token position each ends at."""
        kinds = {}
        for node in self.cache.tree.nodes():
            root = node
            while root.parent is not None:
                root = root.parent
            if node.window and root.token_ids[0] == chat_id:
                kinds[node.end_token] = node.window_kind
        return kinds


def turn(chat_id: int, k: int) -> list[int]:
    """Turn ``k`` (from 0) of a chat: 9 tokens, and 12 more each turn (the reply and a message),
    so the last prompt's end lies before the span of boundaries that leads to the next one's."""
    return [chat_id] + [chat_id * 1000 + i for i in range(8 + 12 * k)]


def test_the_next_turn_lowers_the_window_it_resumed_at_and_plans_its_own():
    cache = Cache(swa_blocks=64)
    assert cache.run(turn(1, 0)) == 0
    assert cache.kinds(1) == {8: WindowKind.PLANNED}
    assert cache.run(turn(1, 1)) == 8
    # Turn 1's end is passed: spare now (no message boundary there); turn 2 planned its own end.
    assert cache.kinds(1) == {8: WindowKind.SPARE, 20: WindowKind.PLANNED}
    assert cache.run(turn(1, 2), message_ends=frozenset({8, 20, 32})) == 20
    # At one of its message boundaries a passed window stays a message window; one lowered
    # before stays as it is (passing never raises a window).
    assert cache.kinds(1) == {8: WindowKind.SPARE, 20: WindowKind.MESSAGE, 32: WindowKind.PLANNED}
    assert cache.cache.stats.windows_passed == 2


def test_a_prompt_that_parts_at_a_passed_window_plans_it_again():
    cache = Cache(swa_blocks=64)
    cache.run(turn(1, 0))
    cache.run(turn(1, 1))
    assert cache.kinds(1)[8] is WindowKind.SPARE
    edited = turn(1, 0)[:8] + [7] * 9  # the same chat, a different second message: parts at 8
    assert cache.run(edited) == 8
    assert cache.kinds(1)[8] is WindowKind.PLANNED


def test_a_branch_point_window_stays_planned_when_one_branch_grows():
    cache = Cache(swa_blocks=64)
    cache.run(turn(1, 0))
    cache.run(turn(1, 0)[:8] + [7] * 9)  # parts at 8: the tree branches there
    assert cache.run(turn(1, 1)) == 8  # extends the first branch's leaf, through the branch point
    assert cache.kinds(1)[8] is WindowKind.PLANNED


def test_under_swa_pressure_an_idle_chat_keeps_its_live_window():
    # Room for the running sequence (4 blocks) and three windows of 2 blocks. Chat 2 waits while
    # chat 1 grows three turns: before, chat 1's passed prompt ends (planned, and more recently
    # used) pushed out chat 2's only window; now they are spare and go first.
    cache = Cache(swa_blocks=10)
    cache.run(turn(1, 0))
    cache.run(turn(2, 0))
    for k in (1, 2, 3):
        assert cache.run(turn(1, k)) == 8 + 12 * (k - 1)
    assert cache.run(turn(2, 1)) == 8
    assert cache.kinds(1)[44] is WindowKind.PLANNED
