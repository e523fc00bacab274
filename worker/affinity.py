"""Cache affinity: which worker's own queue the first shard of a prompt subtree goes to.

A worker's prefix cache keeps what its shards computed, salted with the account; a later batch of
the same account with the same prefix hits it only on that worker. So the first shard of each
subtree (``sharding.continues_previous`` is False) goes to the worker that last finished a shard
with the same key (the account id and the first ``AFFINITY_TOKENS`` prompt tokens of the shard's
first request, in prompt order), if it is alive; else to the one rendezvous hashing picks for the
key: the same prefix picks the same worker for as long as it is alive, and when workers come or go
only the keys of those workers move.

Continuation shards go to the shared queue: they spread a large subtree over the fleet (and the
worker that ran the shard before one takes it directly when it can: ``worker.shard_job``). One
batch's first shards are spread with bounded loads (new prefixes evenly). When the picked worker is
running a shard and another live worker is idle, the shard goes to the shared queue at once; when
every worker is busy it waits in the picked worker's queue until a worker is idle and it has waited
``Settings.affinity_wait_s``; then the sweepers send it to the shared queue as well
(``hybatch.stale_work``): affinity never leaves a worker idle for long while work waits.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hybatch.worker_registry import WorkerIdentity
from worker.sharding import MIN_SHARED_TOKENS

# Two KV blocks of the default size: enough to tell apart system prompts and documents, short
# enough that requests sharing only a short preamble still count as one prefix.
AFFINITY_TOKENS = 2 * MIN_SHARED_TOKENS


def affinity_key(salt: str, prompt_token_ids: Sequence[int]) -> str:
    """A hex digest of the cache salt (the account id) and the prompt's first ``AFFINITY_TOKENS`` tokens."""
    head = prompt_token_ids[:AFFINITY_TOKENS]
    material = salt.encode() + b"\x00" + b",".join(str(token).encode() for token in head)
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def _ranked(key: str, workers: Sequence[WorkerIdentity]) -> list[WorkerIdentity]:
    """Rendezvous (highest random weight) order: the worker whose hash with ``key`` is largest first."""
    return sorted(
        workers,
        key=lambda worker: hashlib.blake2b(f"{key}:{worker.name}".encode(), digest_size=8).digest(),
        reverse=True,
    )


def pick_worker(key: str, workers: Sequence[WorkerIdentity]) -> WorkerIdentity | None:
    """The worker rendezvous hashing picks for ``key`` (None when there are none)."""
    ranked = _ranked(key, workers)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class Route:
    """Where a shard's task goes: ``worker`` None means the shared queue."""

    worker: WorkerIdentity | None

    @property
    def queue(self) -> str | None:
        return None if self.worker is None else self.worker.queue


SHARED = Route(worker=None)

# Bounded loads (consistent hashing with bounded loads): in one batch a worker takes at most
# ceil(bound x shards / workers) of the first shards; the rest go to their next choice. A prefix no
# live worker has run is a miss wherever it goes, so new prefixes are spread evenly (bound 1): the
# batch starts on every worker at once. A prefix a worker has run may load its holder up to half
# again over an even share, since moving it is a likely miss and the sweepers hand a busy worker's
# waiting shards to an idle one anyway.
NEW_PREFIX_LOAD_BOUND = 1.0
HELD_PREFIX_LOAD_BOUND = 1.5


def route_head_shards(
    keys: Sequence[str],
    workers: Sequence[WorkerIdentity],
    busy_lease_owners: set[str],
    last_runners: Mapping[str, str] | None = None,
) -> list[Route]:
    """The routes of one batch's subtree-first shards, one per key, in order.

    A key's first choice is the live worker that last ran a shard with that key (``last_runners``:
    key -> lease owner), else its rendezvous pick. Each shard goes to the first worker in that order
    under the key's load bound (``HELD_PREFIX_LOAD_BOUND`` for a key with a live runner, else
    ``NEW_PREFIX_LOAD_BOUND``); to the shared queue instead when that worker is running a shard
    while another is idle.
    """
    if not workers:
        return [SHARED] * len(keys)
    by_owner = {worker.lease_owner: worker for worker in workers}
    share = len(keys) / len(workers)
    caps = {bound: math.ceil(bound * share) for bound in (NEW_PREFIX_LOAD_BOUND, HELD_PREFIX_LOAD_BOUND)}
    load = dict.fromkeys((worker.name for worker in workers), 0)
    someone_idle = any(worker.lease_owner not in busy_lease_owners for worker in workers)
    routes = []
    for key in keys:
        ranked = _ranked(key, workers)
        holder = by_owner.get((last_runners or {}).get(key, ""))
        if holder is None:
            cap = caps[NEW_PREFIX_LOAD_BOUND]
        else:
            cap = caps[HELD_PREFIX_LOAD_BOUND]
            ranked = [holder, *(worker for worker in ranked if worker != holder)]
        chosen = next(worker for worker in ranked if load[worker.name] < cap)
        if chosen.lease_owner in busy_lease_owners and someone_idle:
            routes.append(SHARED)
            continue
        load[chosen.name] += 1
        routes.append(Route(worker=chosen))
    return routes
