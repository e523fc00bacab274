"""Checks the ``params`` of one Anthropic Message Batches request and turns them into a prompt.

The same role as ``hybatch.request_body`` for the OpenAI bodies: every problem is reported (each
with a code and the parameter path, ``body.messages[1].content``, as a batch line puts it), and
valid params become a ``GenerationRequest`` the engine runs. Supported: ``model``, ``max_tokens``
(required), ``messages`` (``user`` / ``assistant``, content a string or text blocks), ``system``
(a string or text blocks), ``temperature`` (0-1), ``top_p``, ``top_k``, ``stop_sequences``,
``metadata`` and ``stream: false``. Text blocks may carry ``cache_control``: it is accepted and
ignored, since the prefix cache keeps every prompt's KV without being asked. Anything a text model
cannot honour (tools, images, documents, extended thinking, streaming) is refused by name.

A conversation that ends with an ``assistant`` message is a prefill, as Anthropic defines it: the
reply continues that text, and the message's content holds only the continuation.
"""

from __future__ import annotations

from typing import Any

from hybatch.prompt_tokenizer import ChatTemplateError, PromptTokenizer
from hybatch.request_body import FieldProblem, GenerationRequest, number_problem

MESSAGE_ROLES = ("user", "assistant")
MAX_STOP_SEQUENCES = 32  # Anthropic states no limit; each one is a string the engine watches for
_KEYS = frozenset(
    {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences"}
    | {"metadata", "stream"}
)
# Features of the Messages API a text-only model cannot serve: named, so the error says what to drop.
_UNSUPPORTED = {
    "tools": "tool use",
    "tool_choice": "tool use",
    "thinking": "extended thinking",
    "mcp_servers": "MCP servers",
    "container": "code execution containers",
    "service_tier": "service tiers",
}
_BLOCK_KEYS = frozenset({"type", "text", "cache_control"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _ParamsChecker:
    def __init__(self, params: dict[str, Any], served_model: str) -> None:
        self.params = params
        self.served_model = served_model
        self.problems: list[FieldProblem] = []

    def problem(self, code: str, param: str, message: str) -> None:
        self.problems.append(FieldProblem(code, f"body.{param}", message))

    def check_keys(self) -> None:
        for key in self.params:
            if key in _UNSUPPORTED:
                self.problem(
                    "unsupported_parameter",
                    key,
                    f"'{key}' is not supported: {_UNSUPPORTED[key]} is not served.",
                )
            elif key not in _KEYS:
                self.problem("unsupported_parameter", key, f"Unsupported parameter '{key}' for /v1/messages.")
        if self.params.get("stream") not in (None, False):
            self.problem("invalid_value", "stream", "Streaming is not available in batches.")
        metadata = self.params.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or set(metadata) - {"user_id"}
            or not isinstance(metadata.get("user_id", ""), str | None)
        ):
            self.problem("invalid_value", "metadata", "'metadata' may only hold 'user_id' (a string).")

    def model(self) -> None:
        model = self.params.get("model")
        if model is None:
            self.problem("missing_required_parameter", "model", "Missing required parameter: 'model'.")
        elif model != self.served_model:
            self.problem(
                "invalid_model", "model", f"Model {model!r} is not served here; use {self.served_model!r}."
            )

    def max_tokens(self) -> int | None:
        value = self.params.get("max_tokens")
        if value is None:
            self.problem(
                "missing_required_parameter", "max_tokens", "Missing required parameter: 'max_tokens'."
            )
            return None
        if not _is_int(value) or value < 1:
            self.problem("invalid_value", "max_tokens", "'max_tokens' must be a positive integer.")
            return None
        return value

    def number(self, key: str, low: float, high: float, *, low_open: bool) -> float | None:
        value = self.params.get(key)
        if value is None:
            return None
        problem = number_problem(key, value, low, high, low_open=low_open)
        if problem is not None:
            self.problem("invalid_value", key, problem)
            return None
        return float(value)

    def top_k(self) -> int | None:
        value = self.params.get("top_k")
        if value is not None and (not _is_int(value) or value < 1):
            self.problem("invalid_value", "top_k", "'top_k' must be a positive integer.")
            return None
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        value = self.params.get("stop_sequences")
        if value is None:
            return ()
        if (
            not isinstance(value, list)
            or len(value) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in value)
        ):
            self.problem(
                "invalid_value",
                "stop_sequences",
                f"'stop_sequences' must be an array of up to {MAX_STOP_SEQUENCES} non-empty strings.",
            )
            return ()
        return tuple(value)

    def text(self, content: Any, where: str) -> str | None:
        """A string, or the text of an array of text blocks joined by newlines."""
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            self.problem("invalid_type", where, f"'{where}' must be a string or an array of text blocks.")
            return None
        texts = []
        for index, block in enumerate(content):
            at = f"{where}[{index}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind != "text":
                shown = f"'{kind}' blocks are" if isinstance(kind, str) else "This block is"
                self.problem("unsupported_content", at, f"{shown} not supported; only 'text' blocks are.")
            elif not isinstance(block.get("text"), str) or set(block) - _BLOCK_KEYS:
                self.problem(
                    "invalid_value", at, "A text block holds 'type', 'text' (a string) and 'cache_control'."
                )
            else:
                texts.append(block["text"])
        return "\n".join(texts) if len(texts) == len(content) else None

    def messages(self) -> list[dict[str, str]] | None:
        messages = self.params.get("messages")
        if messages is None:
            self.problem("missing_required_parameter", "messages", "Missing required parameter: 'messages'.")
            return None
        if not isinstance(messages, list) or not messages:
            self.problem("invalid_type", "messages", "'messages' must be a non-empty array.")
            return None
        before = len(self.problems)
        turns = []
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict) or set(message) - {"role", "content"}:
                self.problem("invalid_type", where, f"'{where}' must be an object with 'role' and 'content'.")
                continue
            if message.get("role") not in MESSAGE_ROLES:
                self.problem("invalid_value", f"{where}.role", "Role must be 'user' or 'assistant'.")
            text = self.text(message.get("content"), f"{where}.content")
            turns.append({"role": message.get("role"), "content": text})
        if len(self.problems) > before:
            return None
        if turns[0]["role"] != "user":
            self.problem("invalid_value", "messages[0].role", "The first message must use the 'user' role.")
            return None
        if turns[-1]["role"] == "assistant" and turns[-1]["content"] != turns[-1]["content"].rstrip():
            self.problem(
                "invalid_value",
                f"messages[{len(turns) - 1}].content",
                "The final assistant content cannot end with trailing whitespace.",
            )
            return None
        return turns


def prompt_token_ids(
    tokenizer: PromptTokenizer, system: str | None, turns: list[dict[str, str]]
) -> list[int]:
    """The conversation as the engine's prompt; raises ChatTemplateError.

    With a final assistant turn (a prefill) the rest is rendered up to the assistant's generation
    prompt and the prefill text follows it, so the model continues that text.
    """
    prefill = turns[-1]["content"] if turns[-1]["role"] == "assistant" else None
    conversation = turns[:-1] if prefill is not None else turns
    messages = ([{"role": "system", "content": system}] if system is not None else []) + conversation
    text = tokenizer.render_chat(messages) + (prefill or "")
    return tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def check_message_params(
    params: dict[str, Any], served_model: str, tokenizer: PromptTokenizer
) -> tuple[GenerationRequest | None, list[FieldProblem]]:
    """Validate one request's ``params``; return the request to run, or None and every problem."""
    checker = _ParamsChecker(params, served_model)
    checker.check_keys()
    checker.model()
    max_tokens = checker.max_tokens()
    temperature = checker.number("temperature", 0.0, 1.0, low_open=False)
    top_p = checker.number("top_p", 0.0, 1.0, low_open=True)
    top_k = checker.top_k()
    stop = checker.stop_sequences()
    system = None if params.get("system") is None else checker.text(params["system"], "system")
    turns = checker.messages()
    prompt_ids = None
    if turns is not None:
        try:
            prompt_ids = prompt_token_ids(tokenizer, system, turns)
        except ChatTemplateError as error:
            checker.problem("invalid_value", "messages", str(error))
    if (
        prompt_ids is not None
        and max_tokens is not None
        and len(prompt_ids) + max_tokens > tokenizer.context_tokens
    ):
        checker.problem(
            "too_many_tokens",
            "messages",
            f"prompt is too long: {len(prompt_ids)} tokens + max_tokens {max_tokens} > "
            f"{tokenizer.context_tokens}, the model's context.",
        )
    if checker.problems or prompt_ids is None or max_tokens is None:
        return None, checker.problems
    request = GenerationRequest(
        prompt_token_ids=tuple(prompt_ids),
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,  # Anthropic's default
        top_p=1.0 if top_p is None else top_p,
        seed=None,
        stop=stop,
        top_k=top_k,
    )
    return request, []
