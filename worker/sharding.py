"""Cutting a batch into shards along its prompt tree, so that sharding keeps what planning gains.

The requests are sorted by their prompt token ids: requests that share a prefix are then next to
each other, as in a depth-first walk of the batch's prompt tree. The sorted order is cut into runs
of about ``target`` requests; each cut is placed within ``[target/2, 3*target/2]`` requests of the
previous one, where the two requests it separates share the fewest prompt tokens. So a subtree
that fits in a shard is never split, and a larger one (one system prompt over 40,000 requests) is
spread over many shards so that many workers share it; each of those shards computes the shared
prefix once (or hits it in its worker's cache), which `hybatch bench fleet` measures.

Shards of one subtree are run by one worker in a row where they can be (``send_order`` sends the
first shard of each subtree before the others, and a worker that finishes a shard takes the next
one of its subtree if it is still pending: ``worker.shard_job``), so on a fleet each shared prefix
is computed about once per worker that takes part in its subtree, not once per shard.

Inside a shard the engine plans again (``worker.kv_cache.planner``): depth-first order, waits on
shared prefixes, retained windows at branch points.
"""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def cut_shards(prompts: Sequence[Sequence[int]], *, target: int) -> list[list[int]]:
    """Indices into ``prompts``, grouped into shards of about ``target`` (the last may be smaller).

    Every index appears in exactly one shard; inside a shard the indices are in prompt order.
    """
    if target < 1:
        raise ValueError(f"shard target must be at least 1 request, not {target}")
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    n = len(order)
    # shared[c]: prompt tokens shared by the requests on either side of a cut before position c.
    shared = [0] + [common_prefix_len(prompts[order[c - 1]], prompts[order[c]]) for c in range(1, n)]
    low, high = max(1, target // 2), max(1, (3 * target) // 2)
    shards: list[list[int]] = []
    start = 0
    while start < n:
        if n - start <= high:
            end = n
        else:
            window = range(start + low, min(n, start + high) + 1)
            end = min(window, key=lambda c: (shared[c] if c < n else 0, abs(c - start - target)))
        shards.append(order[start:end])
        start = end
    return shards


# Less than one KV block of shared prompt is never a cache hit (the engine's block size, 16 tokens
# by default; a larger block only makes this a looser test).
MIN_SHARED_TOKENS = 16


def continues_previous(prompts: Sequence[Sequence[int]], shards: Sequence[Sequence[int]]) -> list[bool]:
    """For each shard of ``cut_shards``: is it one subtree with the shard before it (its first request
    shares at least a block of prompt with the previous shard's last)? False for the first."""
    continues = [False]
    for previous, shard in zip(shards, shards[1:], strict=False):
        continues.append(common_prefix_len(prompts[previous[-1]], prompts[shard[0]]) >= MIN_SHARED_TOKENS)
    return continues


def send_order(continues: Sequence[bool]) -> list[int]:
    """Shard indices in the order to send their tasks: first the shards that start a subtree, then
    the rest, each group in index order. Free workers then start on different subtrees, and the
    continuations are usually taken directly by the worker that ran the shard before them."""
    heads = [index for index, continuing in enumerate(continues) if not continuing]
    rest = [index for index, continuing in enumerate(continues) if continuing]
    return heads + rest
