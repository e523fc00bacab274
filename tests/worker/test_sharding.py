"""Cutting a batch into shards along its prompt tree (worker.sharding)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sharding import common_prefix_len, continues_previous, cut_shards, send_order

prompts_strategy = st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=12), min_size=0, max_size=80)


@settings(max_examples=200, deadline=None)
@given(prompts=prompts_strategy, target=st.integers(1, 20))
def test_every_request_is_in_exactly_one_shard_of_bounded_size(prompts: list[list[int]], target: int) -> None:
    shards = cut_shards(prompts, target=target)
    assert sorted(i for shard in shards for i in shard) == list(range(len(prompts)))
    high = max(1, (3 * target) // 2)
    assert all(1 <= len(shard) <= high for shard in shards)
    # All but the last are at least half a target: a batch is never cut into slivers.
    assert all(len(shard) >= max(1, target // 2) for shard in shards[:-1])


def test_requests_sharing_a_prefix_stay_together_when_their_group_fits() -> None:
    rng = random.Random(7)
    groups = {g: [100 + g] * 40 for g in range(12)}  # 12 system prompts of 40 tokens
    prompts, group_of = [], []
    for g, prefix in groups.items():
        for q in range(rng.randint(3, 8)):  # 3-8 questions each, fewer than a shard
            prompts.append(prefix + [g, q, rng.randint(0, 9)])
            group_of.append(g)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    prompts = [prompts[i] for i in order]
    group_of = [group_of[i] for i in order]

    shards = cut_shards(prompts, target=10)

    for g in groups:
        holding = [s for s, shard in enumerate(shards) if any(group_of[i] == g for i in shard)]
        assert len(holding) == 1, f"group {g} split over shards {holding}"


def test_one_prefix_over_many_requests_is_spread_over_many_shards() -> None:
    system = list(range(500, 564))
    prompts = [system + [i % 7, i] for i in range(1000)]
    shards = cut_shards(prompts, target=100)
    assert 7 <= len(shards) <= 20
    # Each shard shares the whole system prompt: computed once per shard (or hit in the cache).
    for shard in shards:
        assert all(common_prefix_len(prompts[shard[0]], prompts[i]) >= len(system) for i in shard)


def test_cuts_fall_where_the_fewest_tokens_are_shared() -> None:
    a = [[1] * 30 + [i] for i in range(6)]
    b = [[2] * 30 + [i] for i in range(6)]
    shards = cut_shards(a + b, target=5)  # window [2, 7]: the cut between the two groups is at 6
    assert [sorted(shard) for shard in shards] == [list(range(6)), list(range(6, 12))]


def test_a_target_below_one_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least 1"):
        cut_shards([[1]], target=0)


def test_shards_that_continue_a_subtree_say_so_and_are_sent_last() -> None:
    a = [[1] * 40 + [i] for i in range(8)]  # one subtree of 8: two shards
    b = [[2] * 40 + [i] for i in range(4)]  # one of 4: one shard
    prompts = a + b
    shards = cut_shards(prompts, target=4)
    assert [sorted(shard) for shard in shards] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    continues = continues_previous(prompts, shards)
    assert continues == [False, True, False]
    assert send_order(continues) == [0, 2, 1]  # both subtrees start before the continuation
    # Less than a block in common is a new subtree: nothing of it could be a cache hit.
    c = [[3] * 15 + [9, i] for i in range(4)]
    assert continues_previous(b + c, cut_shards(b + c, target=4)) == [False, False]
