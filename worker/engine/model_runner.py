"""The only place that builds tensors: turns a scheduled step into model inputs and logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.kv_layout import KVCacheLayout, allocate_kv_tensors
from worker.engine.sequence import Sequence
from worker.kv_cache.kv_transfer import KVTransfer
from worker.model.attention_backend import AttentionBackend
from worker.model.attention_metadata import AttentionMetadata, PagedKV
from worker.model.mimo import MiMoV2Model


@dataclass(frozen=True)
class ScheduledSeq:
    seq: Sequence
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
    ):
        """``overlap_loads``: cached KV loaded from the host or disk streams in layer by layer on a
        copy stream during the step (CUDA), instead of all of it before the step."""
        self.model = model
        self.layout = layout
        self.backend = backend
        self.device = device
        self.kv_caches = allocate_kv_tensors(model.config, layout, model.dtype, device)
        self.transfer = KVTransfer(model.config, self.kv_caches, device, overlap=overlap_loads)

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSeq], all_logits: bool = False) -> StepLogits:
        input_ids, positions, meta = self._prepare(batch)
        self.transfer.begin_step()
        hidden = self.model(
            input_ids,
            positions,
            self.kv_caches,
            meta,
            self.backend,
            before_layer=self.transfer.before_layer if self.transfer.has_pending else None,
        )
        ends = meta.query_start_loc[1:].long() - 1
        rows = ends[[i for i, item in enumerate(batch) if item.completes]]
        sampled = self.model.logits(hidden[rows])
        return StepLogits(sampled, self.model.logits(hidden) if all_logits else None)

    def _prepare(self, batch: list[ScheduledSeq]):
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
        dev = self.device
        seqs = [item.seq for item in batch]
        meta = AttentionMetadata(
            query_start_loc=torch.tensor(starts, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            query_lens=query_lens,
            context_lens=seq_lens,
            full=self._paged([s.full_blocks for s in seqs], [0] * len(seqs), full_slots, block_size),
            sliding=self._paged(
                [s.swa_blocks for s in seqs], [s.swa_first_block for s in seqs], swa_slots, block_size
            ),
        )
        return (
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(pos, dtype=torch.long, device=dev),
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
