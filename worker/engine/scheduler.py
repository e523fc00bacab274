"""Continuous batching with chunked prefill under a per-step token budget, preempting by recompute.

Every step, running sequences go first, oldest first: a decoding sequence takes 1 token of the budget,
a sequence still in prefill takes its next chunk. Then waiting sequences are admitted while budget,
``max_num_seqs`` and free blocks allow. When a running sequence cannot get a block, the newest running
sequence is preempted: its blocks are freed and it re-enters the front of the queue, to recompute its
prompt and the tokens it already generated (greedy outputs are unchanged by this).

Policy only: every block move (attaching a cache hit, allocating, evicting, freeing) is the
``KVCacheManager``'s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from worker.engine.model_runner import ScheduledSeq
from worker.engine.sequence import Sequence, SequenceStatus
from worker.kv_cache.kv_cache_manager import KVCacheManager


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
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
            fits = self.kv.grow(seq, num_tokens)
            while not fits:
                victim = self._newest_unscheduled(scheduled)
                if victim is None:
                    break
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
                fits = self.kv.grow(seq, num_tokens)
            if not fits:
                continue
            batch.append(ScheduledSeq(seq, num_tokens))
            scheduled.add(id(seq))
            budget -= num_tokens

        for seq in list(self.waiting) if not preempted else ():
            if budget == 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if self._is_deferred(seq):
                continue  # its shared prefix is still being computed by another sequence
            num_tokens = self._admit(seq, budget)
            if num_tokens == 0:
                break
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.append(ScheduledSeq(seq, num_tokens))
            budget -= num_tokens
        if not batch and self.has_unfinished():
            raise RuntimeError("no sequence fits the KV cache on its own; raise the KV cache budget")
        return batch

    def _admit(self, seq: Sequence, budget: int) -> int:
        """Resumes ``seq`` from the prefix cache and allocates its first chunk; 0 if it does not fit."""
        return self.kv.admit(seq, self.kv.match(seq), budget)

    @staticmethod
    def _is_deferred(seq: Sequence) -> bool:
        if seq.wait_for is None:
            return False
        leader, num_tokens = seq.wait_for
        return not leader.is_finished and leader.num_computed_tokens < num_tokens

    def _newest_unscheduled(self, scheduled: set[int]) -> Sequence | None:
        for seq in reversed(self.running):
            if seq.status is SequenceStatus.RUNNING and id(seq) not in scheduled:
                return seq
        return None

    def _preempt(self, seq: Sequence) -> None:
        self.kv.release(seq, preempted=True)
        seq.prompt_logprobs.clear()
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        self.kv.release(seq, preempted=False)
        seq.status = SequenceStatus.FINISHED
        self.running.remove(seq)

    def abort(self, seq: Sequence) -> None:
        if seq.status is SequenceStatus.RUNNING:
            self.finish(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
            seq.status = SequenceStatus.FINISHED
