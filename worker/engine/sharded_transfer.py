"""Cached KV between tiers for a tensor-parallel group, seen from rank 0 as one ``KVTransfer``.

The prefix cache (tree, tiers, budgets) lives on rank 0 only; each rank holds its own KV heads of
every block. A payload here is the ranks' own payloads (``kv_transfer.py``'s layout over their
heads) concatenated in rank order, so the host, disk and shared tiers store it unchanged, and its
size is the sum of theirs. Each rank copies its own shard between its device and host memory;
the shards travel between rank 0 and the others over the group's gloo channel:

- ``save``: rank 0 tells the ranks which block (and window) to copy out, each copies its heads to
  host memory, and rank 0 gathers the shards into one payload (synchronous, like ``KVTransfer.save``).
- ``schedule_load``: rank 0 keeps its own shard and queues the others'; ``send_step`` sends each rank
  its shards right after the step's plan, and every rank loads its heads layer by layer in the step.
"""

from __future__ import annotations

import dataclasses

import torch

from worker.engine.rank_commands import RunEmbed, RunStep, SaveBlock, ShardLoad
from worker.engine.rank_group import RankGroup
from worker.kv_cache.kv_transfer import KVTransfer, PendingLoad


class ShardedKVTransfer:
    def __init__(self, local: KVTransfer, group: RankGroup):
        self.local = local
        self.group = group
        self._outgoing: list[tuple[PendingLoad, list[torch.Tensor]]] = []  # (rank 0's load, ranks 1..)

    # -- layout --------------------------------------------------------------------------------------
    def payload_numel(self, window_len: int) -> int:
        return self.group.size * self.local.payload_numel(window_len)

    def payload_bytes(self, window_len: int) -> int:
        return self.group.size * self.local.payload_bytes(window_len)

    # -- device -> host ------------------------------------------------------------------------------
    def save(self, full_block: int, window: tuple[int, ...]) -> torch.Tensor:
        self.group.broadcast_object(SaveBlock(full_block, tuple(window)))
        return torch.cat(self.group.gather(self.local.save(full_block, window)))

    # -- host -> device ------------------------------------------------------------------------------
    def schedule_load(self, load: PendingLoad) -> None:
        shards = list(load.payload.chunk(self.group.size))
        own = PendingLoad(shards[0], load.full_block, load.window)
        self.local.schedule_load(own)
        self._outgoing.append((own, shards[1:]))

    def send_step(self, command: RunStep | RunEmbed) -> None:
        """Sends ``command`` to every rank with the step's KV loads named in it, then each rank its
        shards of them, which ``ranks.follow`` schedules before it runs the command."""
        loads = tuple(ShardLoad(own.full_block, own.window, own.payload.numel()) for own, _ in self._outgoing)
        self.group.broadcast_object(dataclasses.replace(command, loads=loads))
        for _, shards in self._outgoing:
            for rank, shard in enumerate(shards, start=1):
                self.group.send(shard, rank)
        self._outgoing.clear()

    @property
    def has_pending(self) -> bool:
        return self.local.has_pending

    def begin_step(self) -> None:
        self.local.begin_step()

    def before_layer(self, layer: int) -> None:
        self.local.before_layer(layer)
