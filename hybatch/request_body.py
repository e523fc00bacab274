"""Checks one request ``body`` for ``/v1/chat/completions`` or ``/v1/completions``.

Every problem is reported (not just the first), each with an OpenAI-style code and the
parameter path (``body.messages[1].content``). A valid body becomes a ``GenerationRequest``:
the prompt as token ids plus the sampling settings the engine needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import ChatTemplateError, PromptTokenizer

CHAT_ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_COMMON_KEYS = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "user"}
_NEUTRAL_ONLY = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "echo": False}
_KEYS = {
    BatchEndpoint.CHAT_COMPLETIONS: _COMMON_KEYS | {"messages", "max_completion_tokens"},
    BatchEndpoint.COMPLETIONS: _COMMON_KEYS | {"prompt"},
}


@dataclass(frozen=True)
class FieldProblem:
    code: str
    param: str
    message: str


@dataclass(frozen=True)
class GenerationRequest:
    """What the engine runs for one line. ``max_tokens`` is resolved (never absent).

    ``echo``: for ``/v1/responses``, the request's fields its Response object repeats, as sent
    (``instructions``, ``metadata``, ...); None for the other endpoints.
    """

    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    top_k: int | None = None  # sample from the k likeliest tokens (/v1/messages); None: all of them
    echo: dict[str, Any] | None = None
    # Chat: token offsets where each message ends (the prefix cache keeps a window there).
    message_boundaries: tuple[int, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_problem(key: str, value: Any, low: float, high: float, *, low_open: bool = False) -> str | None:
    """Why ``value`` is not a number in [low, high] (or (low, high] with ``low_open``); None if it is."""
    if not _is_number(value) or value > high or value < low or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        return f"'{key}' must be a number in {bound}."
    return None


class BodyChecker:
    """Collects the problems of one body; the shared checks of every OpenAI request body."""

    def __init__(self, body: dict[str, Any], endpoint: BatchEndpoint, served_model: str) -> None:
        self.body = body
        self.endpoint = endpoint
        self.served_model = served_model
        self.problems: list[FieldProblem] = []

    def problem(self, code: str, param: str, message: str) -> None:
        self.problems.append(FieldProblem(code, f"body.{param}", message))

    def require(self, key: str) -> Any:
        if key not in self.body:
            self.problem("missing_required_parameter", key, f"Missing required parameter: 'body.{key}'.")
        return self.body.get(key)

    def check_keys(self) -> None:
        for key, value in self.body.items():
            if key in _NEUTRAL_ONLY:
                if value not in (None, _NEUTRAL_ONLY[key]):
                    self.problem(
                        "unsupported_parameter", key, f"'{key}' is not supported (only its default)."
                    )
            elif key not in _KEYS[self.endpoint]:
                self.problem(
                    "unsupported_parameter", key, f"Unsupported parameter '{key}' for {self.endpoint}."
                )

    def check_model(self) -> None:
        model = self.require("model")
        if model is not None and model != self.served_model:
            self.problem(
                "invalid_model", "model", f"Model {model!r} is not served here; use {self.served_model!r}."
            )

    def optional_number(self, key: str, low: float, high: float, *, low_open: bool = False) -> float | None:
        value = self.body.get(key)
        if value is None:
            return None
        problem = number_problem(key, value, low, high, low_open=low_open)
        if problem is not None:
            self.problem("invalid_value", key, problem)
            return None
        return float(value)

    def optional_positive_int(self, key: str) -> int | None:
        value = self.body.get(key)
        if value is None:
            return None
        if not _is_int(value) or value < 1:
            self.problem("invalid_value", key, f"'{key}' must be a positive integer.")
            return None
        return value

    def check_fixed(self) -> None:
        if self.body.get("n") not in (None, 1):
            self.problem("invalid_value", "n", "Only n=1 is supported.")
        if self.body.get("stream") not in (None, False):
            self.problem("invalid_value", "stream", "Streaming is not available in batches.")
        if self.body.get("seed") is not None and not _is_int(self.body["seed"]):
            self.problem("invalid_type", "seed", "'seed' must be an integer.")
        if self.body.get("user") is not None and not isinstance(self.body["user"], str):
            self.problem("invalid_type", "user", "'user' must be a string.")

    def stop(self) -> tuple[str, ...]:
        value = self.body.get("stop")
        stops = [value] if isinstance(value, str) else value
        if value is None:
            return ()
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stops)
        ):
            self.problem(
                "invalid_value", "stop", f"'stop' must be a string or up to {MAX_STOP_SEQUENCES} strings."
            )
            return ()
        return tuple(stops)

    def chat_messages(self) -> list[dict[str, Any]] | None:
        messages = self.require("messages")
        if messages is None:
            return None
        if not isinstance(messages, list) or not messages:
            self.problem("invalid_type", "messages", "'messages' must be a non-empty array.")
            return None
        normalized = []
        problems_before = len(self.problems)
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                self.problem("invalid_type", where, f"'{where}' must be an object with role and content.")
                continue
            role, content = message.get("role"), _text_content(message.get("content"))
            if role not in CHAT_ROLES:
                self.problem(
                    "invalid_value", f"{where}.role", f"Role must be one of {', '.join(CHAT_ROLES)}."
                )
            if content is None:
                self.problem(
                    "invalid_type", f"{where}.content", "Content must be a string or an array of text parts."
                )
            normalized.append({"role": role, "content": content})
        return normalized if len(self.problems) == problems_before else None

    def completion_prompt(self, tokenizer: PromptTokenizer) -> list[int] | None:
        prompt = self.require("prompt")
        if prompt is None:
            return None
        if isinstance(prompt, str):
            return tokenizer.encode_completion(prompt)
        if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
            if not all(0 <= t < tokenizer.vocab_size for t in prompt):
                self.problem("invalid_value", "prompt", f"Token ids must be in [0, {tokenizer.vocab_size}).")
                return None
            return list(prompt)
        self.problem(
            "invalid_type",
            "prompt",
            "'prompt' must be a string or a non-empty array of token ids (one prompt per request).",
        )
        return None


def _text_content(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    return None


def check_body(
    body: dict[str, Any], endpoint: BatchEndpoint, served_model: str, tokenizer: PromptTokenizer
) -> tuple[GenerationRequest | None, list[FieldProblem]]:
    """Validate ``body`` for ``endpoint``; return the request to run, or None and every problem."""
    checker = BodyChecker(body, endpoint, served_model)
    checker.check_keys()
    checker.check_model()
    checker.check_fixed()
    temperature = checker.optional_number("temperature", 0.0, 2.0)
    top_p = checker.optional_number("top_p", 0.0, 1.0, low_open=True)
    stop = checker.stop()
    max_tokens = checker.optional_positive_int("max_tokens")
    boundaries: tuple[int, ...] = ()
    if endpoint is BatchEndpoint.CHAT_COMPLETIONS:
        max_tokens = checker.optional_positive_int("max_completion_tokens") or max_tokens
        messages = checker.chat_messages()
        prompt_ids = None
        if messages is not None:
            try:
                prompt_ids, boundaries = tokenizer.encode_chat_with_boundaries(messages)
            except ChatTemplateError as error:
                checker.problem("invalid_value", "messages", str(error))
    else:
        prompt_ids = checker.completion_prompt(tokenizer)
        max_tokens = max_tokens or DEFAULT_COMPLETION_MAX_TOKENS
    if prompt_ids is not None:
        param = "messages" if checker.endpoint is BatchEndpoint.CHAT_COMPLETIONS else "prompt"
        max_tokens = check_context(
            checker, len(prompt_ids), max_tokens, tokenizer.context_tokens, param=param
        )
    if checker.problems or prompt_ids is None or max_tokens is None:
        return None, checker.problems
    request = GenerationRequest(
        prompt_token_ids=tuple(prompt_ids),
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=body.get("seed"),
        stop=stop,
        message_boundaries=boundaries,
    )
    return request, []


def check_context(
    checker: BodyChecker, prompt_tokens: int, max_tokens: int | None, context_tokens: int, *, param: str
) -> int | None:
    """The resolved output budget: ``max_tokens`` as given, or (when the body may leave it out)
    whatever room the context leaves; None, with a ``too_many_tokens`` problem on ``param``, when the
    prompt and the output do not fit."""
    room = context_tokens - prompt_tokens
    if max_tokens is None and room >= 1:
        return room
    if max_tokens is None or prompt_tokens + max_tokens > context_tokens:
        asked = "no room for output" if max_tokens is None else f"{max_tokens} output tokens"
        checker.problem(
            "too_many_tokens",
            param,
            f"The prompt has {prompt_tokens} tokens and {asked} were requested; "
            f"the model's context is {context_tokens} tokens.",
        )
        return None
    return max_tokens
