"""What the engine returns for each request (vLLM-shaped)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop" or "length" once finished
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it, if any


@dataclass
class RequestOutput:
    """One request's result. ``error`` is set (and ``outputs`` empty) when the request was rejected."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    num_cached_tokens: int = 0
    finished: bool = True
    error: str | None = None
    # log p(prompt[i] | prompt[:i]) for i = 1 .. len(prompt) - 1, when asked for with prompt_logprobs.
    prompt_logprobs: list[float] | None = None

    @property
    def num_computed_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids) - self.num_cached_tokens


class RequestError(ValueError):
    """A request the engine cannot run; the message names the request and the reason."""


class EngineFailure(RuntimeError):
    """The engine can no longer run any request (a tensor-parallel rank died or stopped answering).

    Nothing of the failed step was returned; the process must stop using this engine. The message
    names the rank and what happened to it.
    """
