"""Responses and embeddings bodies become the engine's work: prompts, output budget, echoed fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybatch.embeddings_body import MAX_INPUTS_PER_REQUEST, EncodingFormat, check_embeddings_body
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.responses_body import check_responses_body
from tests.hybatch.checkpoint import write_tiny_checkpoint

MODEL = "tiny-test"
HIDDEN_SIZE = 48


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PromptTokenizer:
    """Room for a few messages, and the hidden size an embedding's ``dimensions`` is checked against."""
    directory = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), context_tokens=512)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_size": HIDDEN_SIZE}))
    return PromptTokenizer.from_checkpoint(Path(directory))


def test_a_string_input_is_one_user_message(tokenizer: PromptTokenizer) -> None:
    request, problems = check_responses_body({"model": MODEL, "input": "hello"}, MODEL, tokenizer)
    assert problems == []
    assert request.prompt_token_ids == tuple(tokenizer.encode_chat([{"role": "user", "content": "hello"}]))
    # Without max_output_tokens the budget is what the context leaves, as for chat.
    assert request.max_tokens == tokenizer.context_tokens - len(request.prompt_token_ids)
    assert (request.temperature, request.top_p, request.stop) == (1.0, 1.0, ())


def test_instructions_and_parts_render_as_the_chat_conversation(tokenizer: PromptTokenizer) -> None:
    body = {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": "Use digits."},
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        ],
        "max_output_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "metadata": {"k": "v"},
        "user": "u-1",
        "store": False,
        "tools": [],
        "tool_choice": "auto",
        "stream": False,
    }
    request, problems = check_responses_body(body, MODEL, tokenizer)
    assert problems == []
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use digits."},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "ok"},
    ]
    assert request.prompt_token_ids == tuple(tokenizer.encode_chat(expected))
    assert (request.max_tokens, request.temperature, request.top_p, request.stop) == (7, 0.5, 0.9, ("\n",))
    assert request.echo == {
        "instructions": "Be brief.",
        "metadata": {"k": "v"},
        "max_output_tokens": 7,
        "user": "u-1",
    }


def test_every_problem_of_a_responses_body_is_reported(tokenizer: PromptTokenizer) -> None:
    body = {"model": "gpt-x", "input": "hi", "tools": [{"type": "function"}], "max_output_tokens": 0}
    request, problems = check_responses_body(body, MODEL, tokenizer)
    assert request is None
    assert {(p.code, p.param) for p in problems} == {
        ("invalid_model", "body.model"),
        ("unsupported_parameter", "body.tools"),
        ("invalid_value", "body.max_output_tokens"),
    }


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("hello", [None]),
        (["hello", "world"], [None, None]),
        ([3, 4, 5], [(3, 4, 5)]),
        ([[3, 4], [5]], [(3, 4), (5,)]),
    ],
)
def test_each_input_form_gives_its_token_ids(tokenizer: PromptTokenizer, value, inputs) -> None:
    request, problems = check_embeddings_body({"model": MODEL, "input": value}, MODEL, tokenizer)
    assert problems == []
    texts = [value] if isinstance(value, str) else value
    want = [
        tuple(tokenizer.encode_completion(text)) if expected is None else expected
        for text, expected in zip(texts, inputs, strict=False)
    ]
    assert list(request.inputs) == want
    assert request.prompt_token_ids == tuple(t for ids in want for t in ids) and request.max_tokens == 0
    assert (request.encoding_format, request.dimensions) == (EncodingFormat.FLOAT, None)


def test_embedding_settings_and_limits(tokenizer: PromptTokenizer) -> None:
    body = {"model": MODEL, "input": "a", "encoding_format": "base64", "dimensions": HIDDEN_SIZE}
    request, problems = check_embeddings_body(body, MODEL, tokenizer)
    assert problems == [] and request.encoding_format is EncodingFormat.BASE64
    assert request.dimensions == HIDDEN_SIZE
    request, problems = check_embeddings_body({**body, "dimensions": HIDDEN_SIZE + 1}, MODEL, tokenizer)
    assert request is None and [(p.code, p.param) for p in problems] == [("invalid_value", "body.dimensions")]
    too_many = {"model": MODEL, "input": ["a"] * (MAX_INPUTS_PER_REQUEST + 1)}
    request, problems = check_embeddings_body(too_many, MODEL, tokenizer)
    assert request is None and [(p.code, p.param) for p in problems] == [("invalid_value", "body.input")]
