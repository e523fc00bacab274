"""The only place that builds tensors: turns a scheduled step into model inputs and logits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from worker.engine import sequence
from worker.engine.embed import embed_prompts
from worker.engine.kv_layout import KVCacheLayout, allocate_kv_tensors
from worker.engine.rank_commands import RunEmbed, RunStep
from worker.engine.rank_group import RankGroup
from worker.engine.sharded_transfer import ShardedKVTransfer
from worker.engine.step_plan import StepPlan
from worker.kv_cache.kv_transfer import KVTransfer
from worker.model.attention_backend import AttentionBackend
from worker.model.attention_metadata import AttentionMetadata, PagedKV
from worker.model.mimo import MiMoV2Model


@dataclass(frozen=True)
class ScheduledSeq:
    seq: sequence.Sequence
    num_tokens: int  # tokens computed this step, from seq.num_computed_tokens on

    @property
    def completes(self) -> bool:
        """True when this step reaches the end of the sequence, so its last row is sampled."""
        return self.seq.num_computed_tokens + self.num_tokens == self.seq.num_tokens


@dataclass
class StepLogits:
    sampled: torch.Tensor  # fp32 [num_completing_seqs, vocab], in batch order of completing seqs
    all_rows: torch.Tensor | None  # fp32 [num_tokens, vocab] when every position was asked for


class ModelRunner:
    def __init__(
        self,
        model: MiMoV2Model,
        layout: KVCacheLayout,
        backend: AttentionBackend,
        device: torch.device,
        overlap_loads: bool = True,
        group: RankGroup | None = None,
    ):
        """``overlap_loads``: cached KV loaded from the host or disk streams in layer by layer on a
        copy stream during the step (CUDA), instead of all of it before the step.

        ``group``: on rank 0 of a tensor-parallel group, the other ranks, which run every step (and
        every KV copy between tiers) this runner runs; their side is ``ranks.follow``."""
        self.model = model
        self.layout = layout
        self.backend = backend
        self.device = device
        self.group = group
        # The KV heads this rank holds (all of them on one rank).
        self.kv_caches = allocate_kv_tensors(model.kv_config, layout, model.dtype, device)
        local = KVTransfer(model.kv_config, self.kv_caches, device, overlap=overlap_loads)
        self.transfer = local if group is None else ShardedKVTransfer(local, group)

    def execute(self, batch: list[ScheduledSeq], all_logits: bool = False) -> StepLogits:
        plan = self._plan(batch, all_logits)
        if self.group is not None:
            self.transfer.send_step(RunStep(plan))
        return self.run(plan)

    @torch.inference_mode()
    def run(self, plan: StepPlan) -> StepLogits:
        """Runs one planned step on this rank's shard (every rank of a group calls it together)."""
        input_ids, positions, meta = self._tensors(plan)
        self.transfer.begin_step()
        hidden = self.model(
            input_ids,
            positions,
            self.kv_caches,
            meta,
            self.backend,
            before_layer=self.transfer.before_layer if self.transfer.has_pending else None,
        )
        sampled = self.model.logits(hidden[plan.sample_rows])
        return StepLogits(sampled, self.model.logits(hidden) if plan.all_logits else None)

    def embed(self, prompts: Sequence[Sequence[int]], max_tokens_per_pass: int) -> list[torch.Tensor]:
        """``embed.embed_prompts`` on this runner's model (every rank of a group computes it)."""
        if self.group is not None:
            self.transfer.send_step(RunEmbed([list(p) for p in prompts], max_tokens_per_pass))
        return embed_prompts(
            self.model,
            self.backend,
            prompts,
            block_size=self.layout.block_size,
            max_tokens_per_pass=max_tokens_per_pass,
        )

    def _plan(self, batch: list[ScheduledSeq], all_logits: bool) -> StepPlan:
        block_size = self.layout.block_size
        ids, pos, full_slots, swa_slots = [], [], [], []
        starts, seq_lens, query_lens = [0], [], []
        for item in batch:
            seq, lo = item.seq, item.seq.num_computed_tokens
            hi = lo + item.num_tokens
            ids.extend(seq.token_ids[lo:hi])
            pos.extend(range(lo, hi))
            for p in range(lo, hi):
                b, off = divmod(p, block_size)
                full_slots.append(seq.full_blocks[b] * block_size + off)
                if seq.swa_blocks:
                    swa_slots.append(seq.swa_blocks[b - seq.swa_first_block] * block_size + off)
            starts.append(starts[-1] + item.num_tokens)
            seq_lens.append(hi)
            query_lens.append(item.num_tokens)
        seqs = [item.seq for item in batch]
        return StepPlan(
            input_ids=ids,
            positions=pos,
            full_slots=full_slots,
            swa_slots=swa_slots,
            query_starts=starts,
            seq_lens=seq_lens,
            query_lens=query_lens,
            full_tables=[list(s.full_blocks) for s in seqs],
            swa_tables=[list(s.swa_blocks) for s in seqs],
            swa_first_blocks=[s.swa_first_block for s in seqs],
            sample_rows=[starts[i + 1] - 1 for i, item in enumerate(batch) if item.completes],
            all_logits=all_logits,
        )

    def _tensors(self, plan: StepPlan):
        block_size = self.layout.block_size
        dev = self.device
        meta = AttentionMetadata(
            query_start_loc=torch.tensor(plan.query_starts, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(plan.seq_lens, dtype=torch.int32, device=dev),
            query_lens=plan.query_lens,
            context_lens=plan.seq_lens,
            full=self._paged(plan.full_tables, [0] * len(plan.full_tables), plan.full_slots, block_size),
            sliding=self._paged(plan.swa_tables, plan.swa_first_blocks, plan.swa_slots, block_size),
        )
        return (
            torch.tensor(plan.input_ids, dtype=torch.long, device=dev),
            torch.tensor(plan.positions, dtype=torch.long, device=dev),
            meta,
        )

    def _paged(
        self, tables: list[list[int]], first_blocks: list[int], slots: list[int], block_size: int
    ) -> PagedKV:
        width = max((len(t) for t in tables), default=0) or 1
        padded = [t + [0] * (width - len(t)) for t in tables]
        dev = self.device
        return PagedKV(
            block_table=torch.tensor(padded, dtype=torch.int32, device=dev),
            block_table_start=torch.tensor(first_blocks, dtype=torch.int32, device=dev),
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            block_size=block_size,
        )
