"""Anthropic Messages params -> the engine's request: prompts, sampling, and every refusal named."""

from __future__ import annotations

import pytest

from hybatch.message_params import check_message_params
from hybatch.prompt_tokenizer import PromptTokenizer

MODEL = "tiny-test"


def params(**overrides) -> dict:
    return {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hello"}], **overrides}


def check(tokenizer: PromptTokenizer, **overrides):
    return check_message_params(params(**overrides), MODEL, tokenizer)


def problems(tokenizer: PromptTokenizer, raw: dict | None = None, **overrides) -> dict[str, str]:
    request, found = check_message_params(raw if raw is not None else params(**overrides), MODEL, tokenizer)
    assert request is None and found
    return {p.param: p.code for p in found}


def test_system_and_text_blocks_render_through_the_chat_template(tokenizer: PromptTokenizer) -> None:
    blocks = [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Count.", "cache_control": {"type": "ephemeral"}},
    ]
    request, found = check(
        tokenizer,
        system=blocks,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
        temperature=0.5,
        top_p=0.9,
        top_k=3,
        stop_sequences=["\n\n", "END"],
        metadata={"user_id": "u-1"},
    )
    assert found == []
    expected = tokenizer.encode_chat(
        [
            {"role": "system", "content": "Be brief.\nCount."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ]
    )
    assert list(request.prompt_token_ids) == expected
    assert (request.max_tokens, request.temperature, request.top_p, request.top_k) == (2, 0.5, 0.9, 3)
    assert request.stop == ("\n\n", "END") and request.seed is None


def test_defaults_are_anthropics(tokenizer: PromptTokenizer) -> None:
    request, _ = check(tokenizer)
    assert (request.temperature, request.top_p, request.top_k, request.stop) == (1.0, 1.0, None, ())


def test_a_final_assistant_message_is_a_prefill_the_reply_continues(tokenizer: PromptTokenizer) -> None:
    request, _ = check(
        tokenizer, messages=[{"role": "user", "content": "Count:"}, {"role": "assistant", "content": "one"}]
    )
    # The template's generation prompt for the assistant, then its text, not a closed assistant turn.
    text = tokenizer.render_chat([{"role": "user", "content": "Count:"}]) + "one"
    assert list(request.prompt_token_ids) == tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    assert problems(
        tokenizer, messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b "}]
    ) == {"body.messages[1].content": "invalid_value"}


@pytest.mark.parametrize(
    ("overrides", "param", "code"),
    [
        ({"tools": [{"name": "t"}]}, "body.tools", "unsupported_parameter"),
        ({"tool_choice": {"type": "auto"}}, "body.tool_choice", "unsupported_parameter"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "body.thinking", "unsupported_parameter"),
        ({"stream": True}, "body.stream", "invalid_value"),
        ({"frequency_penalty": 1}, "body.frequency_penalty", "unsupported_parameter"),
        ({"model": "claude-x"}, "body.model", "invalid_model"),
        ({"max_tokens": 0}, "body.max_tokens", "invalid_value"),
        ({"max_tokens": True}, "body.max_tokens", "invalid_value"),
        ({"temperature": 1.5}, "body.temperature", "invalid_value"),
        ({"top_p": 0}, "body.top_p", "invalid_value"),
        ({"top_k": 0}, "body.top_k", "invalid_value"),
        ({"stop_sequences": "END"}, "body.stop_sequences", "invalid_value"),
        ({"stop_sequences": [""]}, "body.stop_sequences", "invalid_value"),
        ({"metadata": {"team": "x"}}, "body.metadata", "invalid_value"),
        ({"system": 3}, "body.system", "invalid_type"),
        ({"messages": []}, "body.messages", "invalid_type"),
        ({"messages": [{"role": "system", "content": "x"}]}, "body.messages[0].role", "invalid_value"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "body.messages[0].role", "invalid_value"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "body.messages[0].content[0]",
            "unsupported_content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "citations": []}]}]},
            "body.messages[0].content[0]",
            "invalid_value",
        ),
        ({"max_tokens": 10_000}, "body.messages", "too_many_tokens"),
    ],
)
def test_refusals_name_the_parameter(
    tokenizer: PromptTokenizer, overrides: dict, param: str, code: str
) -> None:
    assert problems(tokenizer, **overrides) == {param: code}


def test_every_problem_is_reported_and_required_ones_named(tokenizer: PromptTokenizer) -> None:
    found = problems(tokenizer, raw={"tools": [], "temperature": -1})
    assert found == {
        "body.tools": "unsupported_parameter",
        "body.model": "missing_required_parameter",
        "body.max_tokens": "missing_required_parameter",
        "body.temperature": "invalid_value",
        "body.messages": "missing_required_parameter",
    }
