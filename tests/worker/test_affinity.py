"""Cache affinity's choices: the key, rendezvous hashing, and when a busy worker is passed over."""

from __future__ import annotations

import math
from collections import Counter

from hybatch.worker_registry import WorkerIdentity, own_queue
from worker.affinity import AFFINITY_TOKENS, LOAD_BOUND, SHARED, affinity_key, pick_worker, route_head_shards


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


def test_one_batch_spreads_with_bounded_loads_and_keeps_most_first_choices() -> None:
    fleet = [worker(name) for name in ("w-a", "w-b", "w-c")]
    # Keys that all prefer w-a: a batch of them must not pile onto one worker.
    keys = [k for k in (affinity_key("acct", [i]) for i in range(400)) if pick_worker(k, fleet).name == "w-a"]
    routes = route_head_shards(keys[:30], fleet, set())
    loads = Counter(route.worker.name for route in routes)
    cap = math.ceil(LOAD_BOUND * 30 / 3)  # 13
    assert loads["w-a"] == cap and sum(loads.values()) == 30 and max(loads.values()) <= cap
    # Keys spread evenly by nature keep their first choice.
    mixed = [affinity_key("acct", [i, 1]) for i in range(300)]
    routes = route_head_shards(mixed, fleet, set())
    kept = sum(route.worker == pick_worker(key, fleet) for key, route in zip(mixed, routes, strict=True))
    assert kept >= 0.9 * len(mixed)
    # The same batch routes the same way (a later batch of the same prefixes meets the same caches).
    assert route_head_shards(mixed, fleet, set()) == routes


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
