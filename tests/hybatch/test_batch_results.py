import json

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_results import (
    finished_custom_ids,
    record_failure,
    record_failures,
    record_success,
    write_result_files,
)
from hybatch.models import Batch, BatchEndpoint, BatchRequestResult, File, FilePurpose, UsageRecord, utc_now
from hybatch.result_lines import TokenUsage, error_line, success_line
from hybatch.storage import LocalFileStorage
from tests.hybatch.batch_rows import add_batch


def _success(batch: Batch, custom_id: str, usage: TokenUsage) -> dict:
    return success_line(
        custom_id,
        endpoint=batch.endpoint,
        model=batch.model,
        text="hi",
        finish_reason="stop",
        usage=usage,
        created_at=utc_now(),
    )


def test_results_usage_and_counters_land_once(session_factory: sessionmaker[Session]) -> None:
    usage = TokenUsage(cache_hit_input_tokens=8, cache_miss_input_tokens=4, output_tokens=3)
    with session_factory() as session:
        batch = add_batch(session)
        assert record_success(
            session, batch, custom_id="a", line_number=1, line=_success(batch, "a", usage), usage=usage
        )
        session.commit()
        # A redelivered task repeating the same request records nothing twice.
        assert not record_success(
            session, batch, custom_id="a", line_number=1, line=_success(batch, "a", usage), usage=usage
        )
        failed = error_line("b", code="batch_expired", message="expired")
        assert record_failure(session, batch, custom_id="b", line_number=2, line=failed)
        assert not record_failure(session, batch, custom_id="b", line_number=2, line=failed)
        session.commit()

        session.refresh(batch)
        assert (batch.completed_requests, batch.failed_requests) == (1, 1)
        assert (batch.input_tokens, batch.cached_input_tokens, batch.output_tokens) == (12, 8, 3)
        [record] = session.scalars(sa.select(UsageRecord)).all()
        assert (record.account_id, record.api_key_id, record.custom_id, record.model) == (
            batch.account_id,
            batch.api_key_id,
            "a",
            "tiny-test",
        )
        assert (record.cache_hit_input_tokens, record.cache_miss_input_tokens, record.output_tokens) == (
            8,
            4,
            3,
        )
        assert record.prompt_tokens == 12
        assert finished_custom_ids(session, batch.id) == {"a", "b"}


def test_result_files_are_in_line_order(
    session_factory: sessionmaker[Session], storage: LocalFileStorage
) -> None:
    usage = TokenUsage(0, 5, 1)
    with session_factory() as session:
        batch = add_batch(session, endpoint=BatchEndpoint.COMPLETIONS)
        for line_number, custom_id in [(3, "c"), (1, "a"), (2, "b")]:
            record_success(
                session,
                batch,
                custom_id=custom_id,
                line_number=line_number,
                line=_success(batch, custom_id, usage),
                usage=usage,
            )
        session.commit()
        files = write_result_files(session, storage, batch)
        session.commit()
        assert files.error_file_id is None and batch.error_file_id is None
        assert batch.output_file_id == files.output_file_id
        output = session.get_one(File, files.output_file_id)
        assert output.purpose is FilePurpose.BATCH_OUTPUT and output.account_id == batch.account_id
        with storage.open_read(output.id) as reader:
            content = reader.read()
        assert output.size_bytes == len(content)
        lines = [json.loads(line) for line in content.decode().splitlines()]
        assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
        body = lines[0]["response"]["body"]
        assert body["object"] == "text_completion" and body["choices"][0]["text"] == "hi"
        assert body["usage"] == {
            "prompt_tokens": 5,
            "completion_tokens": 1,
            "total_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        assert write_result_files(session, storage, batch) == files  # redelivery writes nothing new


def test_chat_success_line_shape() -> None:
    usage = TokenUsage(2, 3, 4)
    line = success_line(
        "x",
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        model="m",
        text="yo",
        finish_reason="length",
        usage=usage,
        created_at=utc_now(),
    )
    assert line["id"].startswith("batch_req_") and line["error"] is None
    assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
    body = line["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "yo",
    }
    assert (
        body["usage"]["prompt_tokens"] == 5 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    )
    assert json.dumps(line)  # plain JSON


def test_error_lines_in_bulk_skip_what_is_recorded_and_count_only_the_new(
    session_factory: sessionmaker[Session],
) -> None:
    usage = TokenUsage(cache_hit_input_tokens=0, cache_miss_input_tokens=2, output_tokens=1)
    with session_factory() as session:
        batch = add_batch(session)
        assert record_success(
            session, batch, custom_id="r1", line_number=2, line=_success(batch, "r1", usage), usage=usage
        )
        session.commit()
        # Messages as users' custom_ids can make them: quotes, non-ASCII, a NUL.
        lines = [
            (f"r{i}", i + 1, error_line(f"r{i}", code="batch_cancelled", message=f'"ö" \x00 #{i}'))
            for i in range(2500)
        ]
        assert record_failures(session, batch, lines[:1000]) == 999  # r1 already has its output line
        session.commit()
        assert record_failures(session, batch, lines) == 1500  # the first 1,000 are in already
        session.commit()
        session.refresh(batch)
        assert (batch.completed_requests, batch.failed_requests) == (1, 2499)
        rows = dict(
            session.execute(
                sa.select(BatchRequestResult.custom_id, BatchRequestResult.line).where(
                    BatchRequestResult.batch_id == batch.id, BatchRequestResult.is_error.is_(True)
                )
            ).all()
        )
        assert len(rows) == 2499 and "r1" not in rows
        assert rows["r2400"] == lines[2400][2]  # the line as given, byte for byte
        line_numbers = dict(
            session.execute(
                sa.select(BatchRequestResult.custom_id, BatchRequestResult.line_number).where(
                    BatchRequestResult.batch_id == batch.id
                )
            ).all()
        )
        assert line_numbers["r7"] == 8
