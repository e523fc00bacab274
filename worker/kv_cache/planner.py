"""Plans a batch before it runs: its prompt tree, a depth-first order, branch points, dependencies.

A batch is known up front, so the shared prefixes are too. Running requests depth-first over the
tree of their prompts (per cache salt, at block granularity) keeps each shared prefix hot; a request
that shares a prefix with an earlier one waits until that one has computed past the shared part, then
resumes from the cache instead of computing it again. Branch points, where prompts of the batch part
ways, are where sliding-window windows must be retained for those hits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlannedRequest:
    index: int  # position of the request in the batch as given
    retain_at: frozenset[int]  # block-aligned token positions to retain a window at
    wait_for: tuple[int, int] | None  # (index of the request computing the shared prefix, its length)


@dataclass(eq=False)
class _TrieNode:
    depth_tokens: int
    children: dict = field(default_factory=dict)
    through: list[int] = field(default_factory=list)  # requests whose prompts contain this prefix
    ending: list[int] = field(default_factory=list)  # requests with no further full block


def plan_batch(prompts: list[list[int]], salts: list[str | None], block_size: int) -> list[PlannedRequest]:
    """Returns one plan per request, in the depth-first order to run them."""
    roots: dict[str | None, _TrieNode] = {}
    paths: list[list[_TrieNode]] = []
    for index, (prompt, salt) in enumerate(zip(prompts, salts, strict=True)):
        node = roots.setdefault(salt, _TrieNode(0))
        path = []
        for b in range(len(prompt) // block_size):
            key = tuple(prompt[b * block_size : (b + 1) * block_size])
            node = node.children.setdefault(key, _TrieNode((b + 1) * block_size))
            node.through.append(index)
            path.append(node)
        node.ending.append(index)
        paths.append(path)

    order: list[int] = []
    for root in roots.values():
        stack = [root]
        while stack:
            node = stack.pop()
            order.extend(node.ending)
            stack.extend(reversed(list(node.children.values())))
    rank = {index: r for r, index in enumerate(order)}

    plans = []
    for index in order:
        branch_points = [n for n in paths[index] if _is_branch_point(n)]
        wait_for = None
        for node in reversed(branch_points):
            leader = min(node.through, key=rank.__getitem__)
            if leader != index:
                wait_for = (leader, node.depth_tokens)
                break
        plans.append(PlannedRequest(index, frozenset(n.depth_tokens for n in branch_points), wait_for))
    return plans


def _is_branch_point(node: _TrieNode) -> bool:
    """Shared by two or more prompts, and they do not all continue down one child."""
    if len(node.through) < 2:
        return False
    return bool(node.ending) or len(node.children) != 1
