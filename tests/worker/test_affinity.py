"""Cache affinity's choices: the key, rendezvous hashing, and when a busy worker is passed over."""

from __future__ import annotations

import math
from collections import Counter

from hybatch.worker_registry import WorkerIdentity, own_queue
from worker.affinity import (
    AFFINITY_TOKENS,
    HELD_PREFIX_LOAD_BOUND,
    SHARED,
    affinity_key,
    pick_worker,
    route_head_shards,
)


def worker(name: str) -> WorkerIdentity:
    return WorkerIdentity(name=name, queue=own_queue("hybatch", name), lease_owner=f"host:{name}:tag")


def test_the_key_is_the_salt_and_the_first_tokens_only() -> None:
    prefix = list(range(1000, 1000 + AFFINITY_TOKENS))
    assert affinity_key("acct_a", prefix + [1, 2, 3]) == affinity_key("acct_a", prefix + [9])
    assert affinity_key("acct_a", prefix) != affinity_key("acct_b", prefix)  # never across accounts
    changed = prefix.copy()
    changed[AFFINITY_TOKENS - 1] += 1
    assert affinity_key("acct_a", prefix) != affinity_key("acct_a", changed)
    # A short prompt is its own key; the separator keeps "ab"+"" apart from "a"+"b".
    assert affinity_key("acct_1", [2]) != affinity_key("acct_12", [])


def test_rendezvous_spreads_keys_and_moves_only_a_departed_workers_keys() -> None:
    fleet = [worker(name) for name in ("w-a", "w-b", "w-c")]
    keys = [affinity_key("acct", [i, i + 1]) for i in range(3000)]
    before = {key: pick_worker(key, fleet).name for key in keys}
    counts = Counter(before.values())
    assert set(counts) == {"w-a", "w-b", "w-c"} and min(counts.values()) > 800  # about 1000 each
    after = {key: pick_worker(key, fleet[:2]).name for key in keys}  # w-c is gone
    moved = [key for key in keys if before[key] != after[key]]
    assert moved and all(before[key] == "w-c" for key in moved)
    assert all(after[key] == before[key] for key in keys if before[key] != "w-c")
    # Order of the registry's rows does not matter.
    assert all(pick_worker(key, fleet[::-1]).name == before[key] for key in keys[:200])


def test_a_busy_pick_is_passed_over_only_while_another_worker_is_idle() -> None:
    fleet = [worker("w-a"), worker("w-b")]
    key = affinity_key("acct", [5, 6, 7])
    picked = pick_worker(key, fleet)
    other = next(w for w in fleet if w != picked)
    assert route_head_shards([key], [], set()) == [SHARED]  # no registered worker: the shared queue
    assert route_head_shards([key], fleet, set())[0].worker == picked
    assert route_head_shards([key], fleet, {other.lease_owner})[0].worker == picked
    assert route_head_shards([key], fleet, {picked.lease_owner}) == [SHARED]
    # Everyone busy: wait in the picked worker's queue (the sweepers end the wait).
    [route] = route_head_shards([key], fleet, {picked.lease_owner, other.lease_owner})
    assert route.queue == picked.queue


def test_new_prefixes_spread_evenly_and_held_ones_stay_with_their_holder_within_a_bound() -> None:
    fleet = [worker(name) for name in ("w-a", "w-b", "w-c")]
    # New keys that all hash to w-a: a batch of them starts on every worker at once.
    keys = [k for k in (affinity_key("acct", [i]) for i in range(400)) if pick_worker(k, fleet).name == "w-a"]
    routes = route_head_shards(keys[:30], fleet, set())
    assert Counter(route.worker.name for route in routes) == {"w-a": 10, "w-b": 10, "w-c": 10}
    assert all(route.worker.name == "w-a" for route in routes[:10])  # the hash's pick until it is full
    # The same 30 prefixes after w-b ran them all: w-b takes up to 1.5x an even share.
    held = {key: fleet[1].lease_owner for key in keys[:30]}
    routes = route_head_shards(keys[:30], fleet, set(), held)
    loads = Counter(route.worker.name for route in routes)
    assert loads["w-b"] == math.ceil(HELD_PREFIX_LOAD_BOUND * 30 / 3) == 15
    assert all(route.worker.name == "w-b" for route in routes[:15])
    # The same batch routes the same way (a later batch of the same prefixes meets the same caches).
    assert route_head_shards(keys[:30], fleet, set(), held) == routes


def test_own_queue_names_are_safe_for_the_broker() -> None:
    assert own_queue("hybatch", "gpu-7") == "hybatch.worker.gpu-7"
    assert own_queue("hybatch", "node 1/é") == "hybatch.worker.node_1__"


def test_the_worker_that_last_ran_a_prefix_comes_before_the_hash() -> None:
    fleet = [worker("w-a"), worker("w-b")]
    keys = [affinity_key("acct", [i, 2]) for i in range(6)]
    ran_elsewhere = {key: next(w for w in fleet if w != pick_worker(key, fleet)).lease_owner for key in keys}
    routes = route_head_shards(keys, fleet, set(), ran_elsewhere)
    assert [route.worker.lease_owner for route in routes] == [ran_elsewhere[key] for key in keys]
    # A runner that is no longer alive counts for nothing: the hash decides.
    gone = {key: "host:9:gone" for key in keys}
    assert route_head_shards(keys, fleet, set(), gone) == route_head_shards(keys, fleet, set())
