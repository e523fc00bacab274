"""Batch input validation on hand-written files: every problem, with OpenAI codes and lines."""

import json

import pytest

from hybatch.batch_input import BatchInput, validate_batch_input
from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer

MODEL = "tiny-test"
CHAT = BatchEndpoint.CHAT_COMPLETIONS
COMPLETIONS = BatchEndpoint.COMPLETIONS


def chat(custom_id: str, content: str = "hello", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT.value,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], **body},
    }


def completion(custom_id: str, prompt="hello world", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": COMPLETIONS.value,
        "body": {"model": MODEL, "prompt": prompt, **body},
    }


def lines(*objects) -> bytes:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects).encode()


def validate(
    data: bytes, tokenizer: PromptTokenizer, endpoint: BatchEndpoint = CHAT, max_requests: int = 100
) -> BatchInput:
    return validate_batch_input(
        [data], endpoint=endpoint, served_model=MODEL, tokenizer=tokenizer, max_requests=max_requests
    )


def codes(result: BatchInput) -> list[tuple]:
    return [(e.code, e.line, e.param) for e in result.errors]


def test_valid_chat_file(tokenizer: PromptTokenizer) -> None:
    result = validate(lines(chat("a"), chat("b", max_tokens=5, temperature=0, stop="\n", seed=3)), tokenizer)
    assert result.is_valid and [r.custom_id for r in result.requests] == ["a", "b"]
    first, second = result.requests
    assert first.line_number == 1 and first.generation.prompt_token_ids == tuple(
        tokenizer.encode_chat([{"role": "user", "content": "hello"}])
    )
    # Without max_tokens a chat request may use whatever the context leaves.
    assert first.generation.max_tokens == 64 - len(first.generation.prompt_token_ids)
    assert (first.generation.temperature, first.generation.top_p, first.generation.stop) == (1.0, 1.0, ())
    assert (second.generation.max_tokens, second.generation.temperature, second.generation.seed) == (
        5,
        0.0,
        3,
    )
    assert second.generation.stop == ("\n",)


def test_valid_completions_file(tokenizer: PromptTokenizer) -> None:
    result = validate(
        lines(completion("a"), completion("b", prompt=[1, 2, 3], max_tokens=2)), tokenizer, COMPLETIONS
    )
    assert result.is_valid
    assert result.requests[0].generation.max_tokens == 16  # OpenAI's completions default
    assert result.requests[1].generation.prompt_token_ids == (1, 2, 3)


def test_content_parts_are_joined(tokenizer: PromptTokenizer) -> None:
    parts = chat("a")
    parts["body"]["messages"][0]["content"] = [
        {"type": "text", "text": "hel"},
        {"type": "text", "text": "lo"},
    ]
    assert validate(lines(parts), tokenizer).is_valid


def test_every_problem_is_reported(tokenizer: PromptTokenizer) -> None:
    data = lines(
        chat("a"),
        "{not json",
        {"method": "POST", "url": CHAT.value, "body": {"model": MODEL, "messages": []}},
        chat("a"),
        {**chat("c"), "method": "GET", "url": "/v1/completions"},
        chat("d", model="gpt-4o"),
        {**chat("e"), "body": "text"},
        {**chat("f"), "extra": 1},
        chat(7),
    )
    result = validate(data, tokenizer)
    assert not result.is_valid and result.requests == []
    assert codes(result) == [
        ("invalid_json_line", 2, None),
        ("missing_required_parameter", 3, "custom_id"),
        ("invalid_type", 3, "body.messages"),
        ("duplicate_custom_id", 4, "custom_id"),
        ("invalid_method", 5, "method"),
        ("invalid_url", 5, "url"),
        ("invalid_model", 6, "body.model"),
        ("invalid_type", 7, "body"),
        ("unknown_parameter", 8, "extra"),
        ("invalid_type", 9, "custom_id"),
    ]
    assert all(error.message for error in result.errors)
    assert result.errors[0].as_dict() == {
        "code": "invalid_json_line",
        "line": 2,
        "message": result.errors[0].message,
        "param": None,
    }


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"max_tokens": 0}, "invalid_value", "body.max_tokens"),
        ({"max_tokens": 2.5}, "invalid_value", "body.max_tokens"),
        ({"max_tokens": True}, "invalid_value", "body.max_tokens"),
        ({"max_completion_tokens": -1}, "invalid_value", "body.max_completion_tokens"),
        ({"temperature": 2.5}, "invalid_value", "body.temperature"),
        ({"temperature": "hot"}, "invalid_value", "body.temperature"),
        ({"top_p": 0}, "invalid_value", "body.top_p"),
        ({"top_p": 1.5}, "invalid_value", "body.top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_value", "body.stop"),
        ({"stop": [""]}, "invalid_value", "body.stop"),
        ({"n": 2}, "invalid_value", "body.n"),
        ({"stream": True}, "invalid_value", "body.stream"),
        ({"seed": "x"}, "invalid_type", "body.seed"),
        ({"tools": []}, "unsupported_parameter", "body.tools"),
        ({"frequency_penalty": 0.5}, "unsupported_parameter", "body.frequency_penalty"),
        ({"max_tokens": 60}, "too_many_tokens", "body.messages"),
    ],
)
def test_body_parameters(tokenizer: PromptTokenizer, body: dict, code: str, param: str) -> None:
    result = validate(lines(chat("a", **body)), tokenizer)
    assert codes(result) == [(code, 1, param)]


def test_neutral_values_of_unsupported_knobs_are_fine(tokenizer: PromptTokenizer) -> None:
    assert validate(
        lines(chat("a", frequency_penalty=0, presence_penalty=0, max_tokens=1)), tokenizer
    ).is_valid


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "wizard", "content": "x"}], "body.messages[0].role"),
        ([{"role": "user"}], "body.messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "body.messages[0].content"),
        (["hi"], "body.messages[0]"),
        ("hi", "body.messages"),
    ],
)
def test_bad_messages(tokenizer: PromptTokenizer, messages, param: str) -> None:
    line = chat("a")
    line["body"]["messages"] = messages
    assert [e.param for e in validate(lines(line), tokenizer).errors] == [param]


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        (["a", "b"], "invalid_type"),
        ([], "invalid_type"),
        ([1, 100_000], "invalid_value"),
        (None, "missing_required_parameter"),
        ("word " * 100, "too_many_tokens"),
    ],
)
def test_bad_prompts(tokenizer: PromptTokenizer, prompt, code: str) -> None:
    line = completion("a", prompt=prompt)
    if prompt is None:
        del line["body"]["prompt"]
    assert codes(validate(lines(line), tokenizer, COMPLETIONS)) == [(code, 1, "body.prompt")]


def test_prompt_filling_the_context_leaves_no_room(tokenizer: PromptTokenizer) -> None:
    result = validate(lines(chat("a", content="word " * 100)), tokenizer)
    assert codes(result) == [("too_many_tokens", 1, "body.messages")]
    assert "context is 64 tokens" in result.errors[0].message


def test_too_many_requests(tokenizer: PromptTokenizer) -> None:
    result = validate(lines(*(chat(f"r{i}", max_tokens=1) for i in range(4))), tokenizer, max_requests=3)
    assert codes(result) == [("too_many_requests", 4, None)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", [("empty_file", None, None)]),
        (b"\xef\xbb\xbf" + lines(chat("a", max_tokens=1)), [("invalid_file_format", 1, None)]),
        (lines(chat("a", max_tokens=1)) + b'{"custom_id": "\xff"}\n', [("invalid_file_encoding", 2, None)]),
    ],
)
def test_file_level_problems(tokenizer: PromptTokenizer, data: bytes, expected: list) -> None:
    assert codes(validate(data, tokenizer)) == expected
