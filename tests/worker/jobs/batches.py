"""Submitting batches the way the API does, and reading back what the job left behind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hybatch import accounts
from hybatch.batches import NewBatchRequest, create_batch
from hybatch.files import upload_file
from hybatch.models import Batch, BatchRequestResult, UsageRecord
from hybatch.storage import FileStorage
from worker.jobs import JobContext, TextGenerator

SERVED_MODEL = "tiny-test"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat_line(custom_id: str, content: str, *, system: str | None = None, max_tokens: int = 4) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": content}
    ]
    body = {"model": SERVED_MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def completion_line(custom_id: str, prompt: str, *, max_tokens: int = 4) -> dict:
    body = {"model": SERVED_MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return {"custom_id": custom_id, "method": "POST", "url": COMPLETIONS, "body": body}


def chat_lines(count: int, *, max_tokens: int = 4) -> list[dict]:
    return [
        chat_line(f"req-{i}", f"Count to {i}: one two three.", max_tokens=max_tokens) for i in range(count)
    ]


def submit(
    context: JobContext,
    lines: list[dict],
    *,
    endpoint: str = CHAT,
    account: str = "acme",
    metadata: dict | None = None,
) -> str:
    """Upload ``lines`` and create a batch for the account (created if new); returns the batch id
    (not yet run)."""
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with context.session_factory() as session:
        account_row = accounts.find_account(session, account) or accounts.create_account(session, account)
        key = accounts.create_api_key(session, account_row.id).key
        session.commit()
        upload = upload_file(
            session,
            context.storage,
            account_id=account_row.id,
            filename="in.jsonl",
            purpose="batch",
            chunks=[content],
            max_file_bytes=10_000_000,
        )
        batch = create_batch(
            session,
            lambda _batch_id: None,
            accounts.Caller(account_row.id, key.id),
            NewBatchRequest(upload.id, endpoint, "24h", metadata),
            served_model=SERVED_MODEL,
            completion_windows=("24h",),
        )
        return batch.id


@dataclass(frozen=True)
class Outcome:
    """Everything a finished job left: the batch row, its file lines, its usage records."""

    batch: Batch
    output_lines: list[dict]
    error_lines: list[dict]
    usage: list[UsageRecord]
    results: list[BatchRequestResult]

    @property
    def custom_ids(self) -> list[str]:
        return [line["custom_id"] for line in self.output_lines + self.error_lines]


def read_outcome(context: JobContext, batch_id: str) -> Outcome:
    with context.session_factory() as session:
        batch = session.get(Batch, batch_id)
        usage = list(session.scalars(sa.select(UsageRecord).where(UsageRecord.batch_id == batch_id)))
        results = list(
            session.scalars(sa.select(BatchRequestResult).where(BatchRequestResult.batch_id == batch_id))
        )
        session.expunge_all()
    return Outcome(
        batch=batch,
        output_lines=_file_lines(context.storage, batch.output_file_id),
        error_lines=_file_lines(context.storage, batch.error_file_id),
        usage=usage,
        results=results,
    )


def _file_lines(storage: FileStorage, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    with storage.open_read(file_id) as reader:
        return [json.loads(line) for line in reader.read().decode().splitlines()]


def assert_usage_consistent(outcome: Outcome) -> None:
    """Each output line's usage adds up, matches its ledger row, and the batch totals match both."""
    by_custom_id = {record.custom_id: record for record in outcome.usage}
    assert len(by_custom_id) == len(outcome.usage) == len(outcome.output_lines)
    for line in outcome.output_lines:
        usage = line["response"]["body"]["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        record = by_custom_id[line["custom_id"]]
        assert 0 <= cached <= usage["prompt_tokens"]
        assert usage["prompt_tokens"] == record.cache_hit_input_tokens + record.cache_miss_input_tokens
        assert cached == record.cache_hit_input_tokens
        assert usage["completion_tokens"] == record.output_tokens
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    batch = outcome.batch
    assert batch.input_tokens == sum(r.prompt_tokens for r in outcome.usage)
    assert batch.cached_input_tokens == sum(r.cache_hit_input_tokens for r in outcome.usage)
    assert batch.output_tokens == sum(r.output_tokens for r in outcome.usage)
    assert batch.completed_requests == len(outcome.output_lines)
    assert batch.failed_requests == len(outcome.error_lines)
    for line in outcome.error_lines:
        assert line["response"] is None and line["error"]["code"]


class InterceptedLLM:
    """A real engine whose stream calls ``after(n)`` once the n-th output has been handed over.

    ``after`` may cancel the batch from another session, move the clock, request a shutdown or
    raise (a crash between two recorded requests).
    """

    def __init__(self, llm: TextGenerator, after: Callable[[int], None]) -> None:
        self.llm = llm
        self.after = after
        self.num_outputs = 0

    def generate_stream(self, prompts, sampling_params, request_ids, should_stop=None) -> Iterator[Any]:
        with closing(self.llm.generate_stream(prompts, sampling_params, request_ids, should_stop)) as stream:
            for output in stream:
                yield output
                self.num_outputs += 1
                self.after(self.num_outputs)
