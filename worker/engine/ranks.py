"""The processes of a tensor-parallel engine: rank 0 is the caller's, ``start`` spawns ranks 1..N-1.

Rank 0 runs the whole engine (scheduler, prefix cache, sampling) and its shard of the model; the
other ranks only follow: ``follow`` loops over rank 0's commands (``rank_commands.py``), each answered
in the same order on every rank (lockstep): run a step or an embedding pass (after receiving this
rank's shards of the KV loads the command names), copy a block's KV out to rank 0, stop.

Startup: each follower loads its shard, then says so in the group's store (``ready/<rank>`` =
``ok`` or the error); rank 0 waits for every rank while watching the processes, so a rank that
cannot load or dies while loading fails the start with its own message. A rank that dies later
fails the next collective (``EngineFailure``, naming the dead rank and its exit code).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from worker.engine.kv_layout import KVCacheLayout
from worker.engine.model_runner import ModelRunner
from worker.engine.outputs import EngineFailure
from worker.engine.rank_commands import RunStep, SaveBlock, Stop
from worker.engine.rank_group import RankGroup
from worker.kv_cache.kv_transfer import PendingLoad
from worker.model.attention_backend import choose_backend
from worker.model.loader import load_model
from worker.model.mimo import MiMoV2Model
from worker.model.tensor_parallel import TensorParallel

log = logging.getLogger(__name__)

START_TIMEOUT_S = 900.0  # starting a rank and loading its shard
STEP_TIMEOUT_S = 600.0  # one collective: a peer alive but stuck this long fails the engine


@dataclass(frozen=True)
class RankSpec:
    """What a follower needs to build its part of the engine (picklable)."""

    checkpoint: str
    dtype: torch.dtype
    device_type: str  # "cpu" or "cuda": rank r uses cuda:r
    size: int
    expert_parallel: bool
    layout: KVCacheLayout
    backend: str
    overlap_loads: bool


def rank_device(device_type: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")


def start_ranks(spec: RankSpec, device: torch.device) -> tuple[MiMoV2Model, ModelRunner, Followers | None]:
    """Rank 0's model and runner; with several ranks, the followers started and ready too."""
    backend = choose_backend(spec.backend, device)
    if spec.size == 1:
        model = load_model(Path(spec.checkpoint), spec.dtype, device)
        return model, ModelRunner(model, spec.layout, backend, device, spec.overlap_loads), None
    followers = Followers(spec)
    try:
        group = followers.connect(device)
        tp = TensorParallel(0, spec.size, spec.expert_parallel, comm=group)
        model = load_model(Path(spec.checkpoint), spec.dtype, device, tp)
        followers.wait_ready()
    except BaseException:
        followers.close()
        raise
    return model, ModelRunner(model, spec.layout, backend, device, spec.overlap_loads, group), followers


class Followers:
    """Ranks 1..N-1 of rank 0's engine: their processes and the group rank 0 shares with them.

    ``connect`` once the processes run, then rank 0 loads its own shard, then ``wait_ready``.
    """

    def __init__(self, spec: RankSpec):
        self.spec = spec
        self.store = dist.TCPStore(
            "127.0.0.1",
            0,
            spec.size,
            is_master=True,
            timeout=timedelta(seconds=START_TIMEOUT_S),
            wait_for_workers=False,
        )
        context = multiprocessing.get_context("spawn")
        self.processes = [
            context.Process(
                target=follow, args=(rank, self.store.port, spec), name=f"hybatch-rank-{rank}", daemon=True
            )
            for rank in range(1, spec.size)
        ]
        for process in self.processes:
            process.start()
        self.group: RankGroup | None = None

    def connect(self, device: torch.device) -> RankGroup:
        """The group, once every follower has joined it (they join before loading their shard)."""
        self._wait_for("joined", "starting")
        self.group = RankGroup(
            self.store, 0, self.spec.size, device, timedelta(seconds=STEP_TIMEOUT_S), explain=self.dead
        )
        return self.group

    def wait_ready(self) -> None:
        """Returns once every follower has loaded its shard; raises EngineFailure (after stopping
        the others) naming the rank that could not."""
        self._wait_for("ready", "loading its shard")

    def _wait_for(self, key: str, doing: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = set(range(1, self.spec.size))
        while waiting:
            for rank in sorted(waiting):
                if self.store.check([f"{key}/{rank}"]):
                    answer = self.store.get(f"{key}/{rank}").decode()
                    if answer != "ok":
                        self._fail(f"tensor-parallel rank {rank} failed {doing}: {answer}")
                    waiting.discard(rank)
            dead = self.dead()
            if dead and waiting:
                self._fail(f"tensor-parallel {dead} while {doing}")
            if waiting and time.monotonic() > deadline:
                self._fail(
                    f"tensor-parallel ranks {sorted(waiting)} were still {doing} after {START_TIMEOUT_S:.0f} s"
                )
            if waiting:
                time.sleep(0.02)

    def _fail(self, message: str):
        self.close()
        raise EngineFailure(message)

    @property
    def failure(self) -> str | None:
        """What broke the group, once something has."""
        return None if self.group is None else self.group.broken

    def dead(self) -> str | None:
        """Which follower has exited, with its exit code, if any has."""
        for rank, process in enumerate(self.processes, start=1):
            if process.exitcode is not None:
                how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"code {process.exitcode}"
                return f"rank {rank} (pid {process.pid}) exited with {how}"
        return None

    def close(self) -> None:
        """Stops the followers: asks them to leave while the group works, then ends the processes."""
        if self.group is not None and self.group.broken is None:
            with contextlib.suppress(EngineFailure):  # a follower died meanwhile: kill the rest below
                self.group.broadcast_object(Stop())
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def follow(rank: int, port: int, spec: RankSpec) -> None:
    """A follower's whole life (the spawned process's target)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.size))
    device = rank_device(spec.device_type, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store = dist.TCPStore(
        "127.0.0.1", port, spec.size, is_master=False, timeout=timedelta(seconds=START_TIMEOUT_S)
    )
    store.set(f"joined/{rank}", "ok")
    group = RankGroup(store, rank, spec.size, device, timedelta(seconds=STEP_TIMEOUT_S))
    try:
        tp = TensorParallel(rank, spec.size, spec.expert_parallel, comm=group)
        model = load_model(Path(spec.checkpoint), spec.dtype, device, tp)
        backend = choose_backend(spec.backend, device)
        runner = ModelRunner(model, spec.layout, backend, device, spec.overlap_loads)
    except Exception as error:  # noqa: BLE001 - the message goes to rank 0, which raises it
        store.set(f"ready/{rank}", f"{type(error).__name__}: {error}")
        return
    store.set(f"ready/{rank}", "ok")
    try:
        _serve(group, runner)
    except EngineFailure as failure:
        log.error("rank %d stops: %s", rank, failure)
        os._exit(1)


def _serve(group: RankGroup, runner: ModelRunner) -> None:
    while True:
        command = group.broadcast_object()
        if isinstance(command, Stop):
            return
        if isinstance(command, SaveBlock):
            group.gather(runner.transfer.save(command.full_block, command.window))
            continue
        for load in command.loads:
            payload = group.recv(torch.empty(load.numel, dtype=runner.model.dtype))
            runner.transfer.schedule_load(PendingLoad(payload, load.full_block, load.window))
        if isinstance(command, RunStep):
            runner.run(command.plan)
        else:
            runner.embed(command.prompts, command.max_tokens_per_pass)
