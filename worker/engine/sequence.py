"""One request's state while it is in the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch

from worker.engine.sampling_params import SamplingParams
from worker.engine.stop_strings import StopStringMatcher


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: int
    cache_salt: str | None = None
    generator: torch.Generator | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    # Full-attention pool: one block per block_size tokens, logical block i at full_blocks[i].
    full_blocks: list[int] = field(default_factory=list)
    # Sliding-window pool: logical block (swa_first_block + j) at swa_blocks[j]; older ones were freed.
    swa_blocks: list[int] = field(default_factory=list)
    swa_first_block: int = 0
    # Chained hashes of the completed full blocks of token_ids (the prefix cache's keys).
    block_hashes: list[bytes] = field(default_factory=list)
    output_text: str = ""  # set when a stop string ends the sequence: the text before it
    stop_matcher: StopStringMatcher | None = None  # when the request has stop strings
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[float] = field(default_factory=list)
    num_preemptions: int = 0
    # Prefix-cache plan: block-aligned positions at which to retain a sliding window, and the
    # (sequence, token count) this one waits for because that sequence computes its shared prefix.
    retain_at: frozenset[int] = frozenset()
    message_boundaries: frozenset[int] = frozenset()  # block-aligned ends of chat messages
    wait_for: tuple[Sequence, int] | None = None

    def __post_init__(self):
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len :]

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.prompt_len

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
