"""One engine step's model inputs as plain lists (built by ``ModelRunner``, sent to the other ranks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    """One step's model inputs as plain lists: what rank 0 sends the other tensor-parallel ranks."""

    input_ids: list[int]
    positions: list[int]
    full_slots: list[int]
    swa_slots: list[int]
    query_starts: list[int]  # [num_seqs + 1]
    seq_lens: list[int]
    query_lens: list[int]
    full_tables: list[list[int]]
    swa_tables: list[list[int]]
    swa_first_blocks: list[int]
    sample_rows: list[int]  # packed rows whose logits are sampled (the last row of completing seqs)
    all_logits: bool
