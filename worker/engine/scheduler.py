"""Continuous batching with chunked prefill under a per-step token budget, preempting by recompute.

Every step, running sequences go first, oldest first: a decoding sequence takes 1 token of the budget,
a sequence still in prefill takes its next chunk. Then waiting sequences are admitted while budget,
``max_num_seqs`` and free blocks allow. When a running sequence cannot get a block, the newest running
sequence is preempted: its blocks are freed and it re-enters the front of the queue, to recompute its
prompt and the tokens it already generated (greedy outputs are unchanged by this).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from worker.engine.block_manager import BlockManager
from worker.engine.model_runner import ScheduledSeq
from worker.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int


class Scheduler:
    def __init__(self, config: SchedulerConfig, blocks: BlockManager):
        self.config = config
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.config.max_num_batched_tokens
        batch: list[ScheduledSeq] = []
        scheduled: set[int] = set()
        preempted = False
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            while not self.blocks.can_allocate(seq, num_tokens):
                victim = self._newest_unscheduled(scheduled)
                if victim is None:
                    break
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING or not self.blocks.can_allocate(seq, num_tokens):
                continue
            self.blocks.allocate(seq, num_tokens)
            batch.append(ScheduledSeq(seq, num_tokens))
            scheduled.add(id(seq))
            budget -= num_tokens

        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            if not self.blocks.can_allocate(seq, num_tokens):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq, num_tokens)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.append(ScheduledSeq(seq, num_tokens))
            budget -= num_tokens
        if not batch and self.has_unfinished():
            raise RuntimeError("no sequence fits the KV cache on its own; raise the KV cache budget")
        return batch

    def _newest_unscheduled(self, scheduled: set[int]) -> Sequence | None:
        for seq in reversed(self.running):
            if seq.status is SequenceStatus.RUNNING and id(seq) not in scheduled:
                return seq
        return None

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.block_hashes.clear()
        seq.prompt_logprobs.clear()
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED
        self.running.remove(seq)

    def abort(self, seq: Sequence) -> None:
        if seq.status is SequenceStatus.RUNNING:
            self.finish(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
            seq.status = SequenceStatus.FINISHED
