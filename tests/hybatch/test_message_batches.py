"""Whole-batch checks of a Message Batch at creation: Anthropic's limits, problems named by request."""

from __future__ import annotations

import pytest

from hybatch.errors import InvalidRequestError, PayloadTooLargeError
from hybatch.message_batches import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS,
    MessageRequest,
    check_requests,
    input_file_bytes,
)
from hybatch.prompt_tokenizer import PromptTokenizer

MODEL = "tiny-test"
PARAMS = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hello"}]}


def test_prompt_tokens_are_what_the_chat_template_makes(tokenizer: PromptTokenizer) -> None:
    requests = [MessageRequest("a", PARAMS), MessageRequest("b-2_Z", {**PARAMS, "system": "Be brief."})]
    tokens = check_requests(requests, input_file_bytes(requests), served_model=MODEL, tokenizer=tokenizer)
    expected = len(tokenizer.encode_chat([{"role": "user", "content": "hello"}])) + len(
        tokenizer.encode_chat(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        )
    )
    assert tokens == expected


def test_more_requests_than_anthropic_allows_are_refused(tokenizer: PromptTokenizer) -> None:
    requests = [MessageRequest(f"r{i}", PARAMS) for i in range(MAX_REQUESTS + 1)]
    with pytest.raises(InvalidRequestError, match="at most 100,000 requests"):
        check_requests(requests, b"", served_model=MODEL, tokenizer=tokenizer)


def test_a_batch_over_256_mb_is_refused_before_anything_is_parsed(tokenizer: PromptTokenizer) -> None:
    with pytest.raises(PayloadTooLargeError):
        check_requests([], b"x" * (MAX_BATCH_BYTES + 1), served_model=MODEL, tokenizer=tokenizer)


def test_problems_are_named_by_request_and_capped_at_ten(tokenizer: PromptTokenizer) -> None:
    requests = [MessageRequest(f"bad{i}", {**PARAMS, "max_tokens": 0}) for i in range(12)]
    with pytest.raises(InvalidRequestError) as raised:
        check_requests(requests, input_file_bytes(requests), served_model=MODEL, tokenizer=tokenizer)
    message = raised.value.message
    assert (
        message.startswith("requests[0].params.max_tokens: ") and "requests[9].params.max_tokens" in message
    )
    assert "requests[10]" not in message and message.endswith("and 2 more")
