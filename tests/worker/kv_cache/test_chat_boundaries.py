"""Chat requests carry their message boundaries from validation to the engine's prompt dict."""

from __future__ import annotations

from pathlib import Path

from hybatch.batch_input import BatchRequest
from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.request_body import check_body
from hybatch.storage import LocalFileStorage
from tests.hybatch.checkpoint import write_tiny_checkpoint
from worker.engine_requests import engine_prompt
from worker.shard_inputs import read_shard_input, write_shard_input

MESSAGES = [
    {"role": "system", "content": "You answer questions about the attached report."},
    {"role": "user", "content": "What was revenue?"},
]


def test_a_chat_request_reaches_the_engine_with_its_message_boundaries(tmp_path: Path) -> None:
    tokenizer = PromptTokenizer.from_checkpoint(write_tiny_checkpoint(tmp_path / "ckpt", context_tokens=512))
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 4}
    generation, problems = check_body(body, BatchEndpoint.CHAT_COMPLETIONS, "m", tokenizer)
    assert not problems
    ids, boundaries = tokenizer.encode_chat_with_boundaries(MESSAGES)
    assert len(boundaries) == 2 and list(generation.prompt_token_ids) == ids

    storage = LocalFileStorage(tmp_path / "files")
    write_shard_input(storage, "shard", [BatchRequest(1, "req-1", body, generation)])
    (stored,) = read_shard_input(storage, "shard")
    prompt = engine_prompt(stored, account_id="acct_1")
    assert prompt == {"prompt_token_ids": ids, "cache_salt": "acct_1", "message_boundaries": list(boundaries)}


def test_a_completion_request_carries_none(tmp_path: Path) -> None:
    tokenizer = PromptTokenizer.from_checkpoint(write_tiny_checkpoint(tmp_path / "ckpt"))
    body = {"model": "m", "prompt": "hello world", "max_tokens": 4}
    generation, problems = check_body(body, BatchEndpoint.COMPLETIONS, "m", tokenizer)
    assert not problems and generation.message_boundaries == ()
    assert "message_boundaries" not in engine_prompt(BatchRequest(1, "r", body, generation), account_id="a")
