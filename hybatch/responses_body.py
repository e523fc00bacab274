"""Checks one request ``body`` for ``/v1/responses`` (OpenAI's Responses API, text in and out).

``input`` is a string (one user message) or a list of messages ``{role, content}`` (``type:
"message"`` optional), roles ``user``, ``assistant``, ``system``, ``developer``, content a string
or a list of ``input_text`` / ``output_text`` parts. ``instructions`` becomes a system message in
front of them. The conversation is rendered with the checkpoint's chat template, exactly as a
``/v1/chat/completions`` request, so the same prompt hits the same prefix-cache entries.

What this service cannot do is refused per line, naming the parameter: tools, reasoning, stored
responses (``previous_response_id``: nothing is stored), streaming, background mode, non-text
output formats, images and files in the input. Every problem is reported, as for the other
endpoints.
"""

from __future__ import annotations

from typing import Any

from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import ChatTemplateError, PromptTokenizer
from hybatch.request_body import CHAT_ROLES, BodyChecker, FieldProblem, GenerationRequest, check_context

_TEXT_PART_TYPES = ("input_text", "output_text")
MAX_METADATA_KEYS = 16  # OpenAI's limits on metadata
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
_KEYS = {
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stop",
    "metadata",
    "user",
    "safety_identifier",
    "store",
    "parallel_tool_calls",
}
# Accepted only with the value that means "off": anything else asks for what is not served.
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "stream": (False,),
    "background": (False,),
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "reasoning": (),
    "previous_response_id": (),
    "conversation": (),
    "prompt": (),
    "include": ([],),
    "truncation": ("disabled",),
    "text": ({"format": {"type": "text"}},),
    "top_logprobs": (0,),
    "max_tool_calls": (),
}
_WHY_OFF = {
    "stream": "Streaming is not available in batches.",
    "background": "Batches already run in the background; 'background' must be false.",
    "tools": "Tools are not supported: the served model answers with text only.",
    "tool_choice": "Tools are not supported: 'tool_choice' must be 'none' or 'auto'.",
    "reasoning": "Reasoning settings are not supported by the served model.",
    "previous_response_id": "Responses are not stored here, so there is no previous response to continue; "
    "send the whole conversation in 'input'.",
    "conversation": "Conversations are not stored here; send the whole conversation in 'input'.",
    "prompt": "Stored prompt templates are not supported; send the text in 'input'.",
    "include": "No extra output data is available; 'include' must be empty.",
    "truncation": "Only truncation 'disabled' is supported: a prompt that does not fit is refused.",
    "text": "Only plain text output is supported (text.format.type 'text').",
    "top_logprobs": "Log probabilities are not supported.",
    "max_tool_calls": "Tools are not supported.",
}
# Repeated on the Response as sent; temperature and top_p are repeated as they ran (resolved).
ECHO_KEYS = ("instructions", "metadata", "max_output_tokens", "user")


def check_responses_body(
    body: dict[str, Any], served_model: str, tokenizer: PromptTokenizer
) -> tuple[GenerationRequest | None, list[FieldProblem]]:
    """Validate a Responses ``body``; return the request to run (with ``echo``), or None and every problem."""
    checker = BodyChecker(body, BatchEndpoint.RESPONSES, served_model)
    _check_keys(checker)
    checker.check_model()
    temperature = checker.optional_number("temperature", 0.0, 2.0)
    top_p = checker.optional_number("top_p", 0.0, 1.0, low_open=True)
    stop = checker.stop()
    max_tokens = checker.optional_positive_int("max_output_tokens")
    _check_strings(checker, ("instructions", "user", "safety_identifier"))
    _check_metadata(checker)
    for key in ("store", "parallel_tool_calls"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            checker.problem("invalid_type", key, f"'{key}' must be a boolean.")
    messages = _messages(checker)
    prompt_ids = None
    if messages is not None:
        try:
            prompt_ids = tokenizer.encode_chat(messages)
        except ChatTemplateError as error:
            checker.problem("invalid_value", "input", str(error))
    if prompt_ids is not None:
        max_tokens = check_context(
            checker, len(prompt_ids), max_tokens, tokenizer.context_tokens, param="input"
        )
    if checker.problems or prompt_ids is None or max_tokens is None:
        return None, checker.problems
    return (
        GenerationRequest(
            prompt_token_ids=tuple(prompt_ids),
            max_tokens=max_tokens,
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            seed=None,
            stop=stop,
            echo={key: body.get(key) for key in ECHO_KEYS},
        ),
        [],
    )


def _check_keys(checker: BodyChecker) -> None:
    for key, value in checker.body.items():
        if key in _OFF_VALUES:
            if value is not None and value not in _OFF_VALUES[key]:
                checker.problem("unsupported_parameter", key, _WHY_OFF[key])
        elif key not in _KEYS:
            checker.problem("unsupported_parameter", key, f"Unsupported parameter '{key}' for /v1/responses.")


def _check_strings(checker: BodyChecker, keys: tuple[str, ...]) -> None:
    for key in keys:
        if checker.body.get(key) is not None and not isinstance(checker.body[key], str):
            checker.problem("invalid_type", key, f"'{key}' must be a string.")


def _check_metadata(checker: BodyChecker) -> None:
    metadata = checker.body.get("metadata")
    if metadata is None:
        return
    if (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA_KEYS
        or not all(
            isinstance(v, str) and len(k) <= MAX_METADATA_KEY_CHARS and len(v) <= MAX_METADATA_VALUE_CHARS
            for k, v in metadata.items()
        )
    ):
        checker.problem(
            "invalid_value",
            "metadata",
            f"'metadata' must be an object of at most {MAX_METADATA_KEYS} string values "
            f"(keys up to {MAX_METADATA_KEY_CHARS} characters, values up to {MAX_METADATA_VALUE_CHARS}).",
        )


def _messages(checker: BodyChecker) -> list[dict[str, Any]] | None:
    """``instructions`` then ``input`` as chat messages, or None after reporting why not."""
    value = checker.require("input")
    instructions = checker.body.get("instructions")
    system = [{"role": "system", "content": instructions}] if isinstance(instructions, str) else []
    if value is None:
        return None
    if isinstance(value, str):
        return [*system, {"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        checker.problem("invalid_type", "input", "'input' must be a string or a non-empty array of messages.")
        return None
    messages = []
    problems_before = len(checker.problems)
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else None
            checker.problem(
                "unsupported_parameter" if isinstance(kind, str) else "invalid_type",
                where,
                f"Input items of type {kind!r} are not supported; only messages are."
                if isinstance(kind, str)
                else f"'{where}' must be a message object with role and content.",
            )
            continue
        role, content = item.get("role"), _text_content(item.get("content"))
        if role not in CHAT_ROLES:
            checker.problem("invalid_value", f"{where}.role", f"Role must be one of {', '.join(CHAT_ROLES)}.")
        if content is None:
            checker.problem(
                "invalid_type",
                f"{where}.content",
                "Content must be a string or an array of input_text / output_text parts "
                "(images, files and audio are not supported).",
            )
        messages.append({"role": role, "content": content})
    return [*system, *messages] if len(checker.problems) == problems_before else None


def _text_content(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    return None
