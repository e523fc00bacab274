"""What rank 0 sends the other ranks of a tensor-parallel engine, one command at a time (``ranks.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.engine.step_plan import StepPlan


@dataclass(frozen=True)
class ShardLoad:
    """A KV load of this step: the receiving rank's ``numel`` elements follow the command."""

    full_block: int
    window: tuple[int, ...]
    numel: int


@dataclass(frozen=True)
class RunStep:
    plan: StepPlan
    loads: tuple[ShardLoad, ...] = ()


@dataclass(frozen=True)
class RunEmbed:
    prompts: list[list[int]]
    max_tokens_per_pass: int
    loads: tuple[ShardLoad, ...] = ()


@dataclass(frozen=True)
class SaveBlock:
    """Copy one block's KV (and its window) to host memory and send it to rank 0."""

    full_block: int
    window: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    pass
