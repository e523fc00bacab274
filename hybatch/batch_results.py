"""Recording finished requests (result line + usage row + live counters) and writing result files.

``record_success`` / ``record_failure`` add to the caller's transaction; commit once per
request so a request's line, its usage record and the batch counters land together. Both are
idempotent per (batch, custom_id): a redelivered task that repeats a request records nothing
twice and learns (return value False) that the request was already done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hybatch.ids import new_file_id
from hybatch.models import (
    Batch,
    BatchEndpoint,
    BatchRequestResult,
    File,
    FilePurpose,
    UsageRecord,
    utc_now,
)
from hybatch.result_lines import LinePrice, TokenUsage
from hybatch.storage import FileStorage

_ROWS_PER_FETCH = 1000
EMBEDDINGS_MODEL_SUFFIX = ":embeddings"


@dataclass(frozen=True)
class ResultFiles:
    output_file_id: str | None  # None when no request succeeded
    error_file_id: str | None  # None when no request failed


def _insert_ignoring_duplicates(session: Session, model: type, values: dict[str, Any]) -> bool:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["batch_id", "custom_id"])
        .returning(model.id)
    )
    # RETURNING yields the new row's id, or nothing when the row already existed.
    return session.execute(statement).first() is not None


def usage_model(batch: Batch) -> str:
    """The model name a batch's requests are metered and priced under: the batch's model, with
    ``:embeddings`` after it for an embeddings batch, so that usage, invoices and price schedules
    (an entry matching ``*:embeddings``) keep embeddings apart from generation."""
    if batch.endpoint is BatchEndpoint.EMBEDDINGS:
        return batch.model + EMBEDDINGS_MODEL_SUFFIX
    return batch.model


def finished_custom_ids(session: Session, batch_id: str) -> set[str]:
    """custom_ids already recorded for the batch: a resumed task skips these."""
    return set(
        session.scalars(
            sa.select(BatchRequestResult.custom_id).where(BatchRequestResult.batch_id == batch_id)
        )
    )


def record_success(
    session: Session,
    batch: Batch,
    *,
    custom_id: str,
    line_number: int,
    line: dict[str, Any],
    usage: TokenUsage,
    price: LinePrice | None = None,
) -> bool:
    """Record an output line and its usage record (with ``price``, None when unpriced); bump the
    completed count and the batch's usage.

    Does not commit. Returns False (and changes nothing) if the request was already recorded.
    """
    if not _insert_result(session, batch.id, custom_id, line_number, line, is_error=False):
        return False
    _insert_ignoring_duplicates(
        session,
        UsageRecord,
        {
            "account_id": batch.account_id,
            "api_key_id": batch.api_key_id,
            "batch_id": batch.id,
            "custom_id": custom_id,
            "model": usage_model(batch),
            "cache_hit_input_tokens": usage.cache_hit_input_tokens,
            "cache_miss_input_tokens": usage.cache_miss_input_tokens,
            "output_tokens": usage.output_tokens,
            "prompt_tokens": usage.prompt_tokens,
            "amount": None if price is None else price.amount,
            "currency": None if price is None else price.currency,
            "price_version": None if price is None else price.price_version,
            "created_at": utc_now(),
        },
    )
    session.execute(
        sa.update(Batch)
        .where(Batch.id == batch.id)
        .values(
            completed_requests=Batch.completed_requests + 1,
            input_tokens=Batch.input_tokens + usage.prompt_tokens,
            cached_input_tokens=Batch.cached_input_tokens + usage.cache_hit_input_tokens,
            output_tokens=Batch.output_tokens + usage.output_tokens,
        )
    )
    return True


def record_failure(
    session: Session, batch: Batch, *, custom_id: str, line_number: int, line: dict[str, Any]
) -> bool:
    """Record an error line (no usage: nothing unfinished is billed); bump the failed count.

    Does not commit. Returns False if the request was already recorded.
    """
    if not _insert_result(session, batch.id, custom_id, line_number, line, is_error=True):
        return False
    session.execute(
        sa.update(Batch).where(Batch.id == batch.id).values(failed_requests=Batch.failed_requests + 1)
    )
    return True


def record_failures(session: Session, batch: Batch, lines: list[tuple[str, int, dict[str, Any]]]) -> int:
    """Record many error lines at once, ``(custom_id, line_number, line)`` each; returns how many
    were new (those already recorded are left as they are). Bumps the failed count; does not commit.
    """
    if not lines:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        num_new = _insert_errors_postgres(session, batch.id, lines)
    else:
        num_new = _insert_errors_sqlite(session, batch.id, lines)
    if num_new:
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch.id)
            .values(failed_requests=Batch.failed_requests + num_new)
        )
    return num_new


# Postgres: one INSERT from two parameters, the requests as a JSON recordset and their lines as
# newline-separated JSON texts (json.dumps never writes a raw newline), zipped by ROWS FROM. Not a
# multi-row VALUES list: at this size the driver spends most of its time turning placeholders into
# SQL, and arrays in dumping them (a 50,000-line cancel took 6.5 s and 4.9 s those ways). Not the
# lines inside the JSON document either: a line may hold "\u0000" (a model can write a NUL), which a
# json value stores but no json operator can read, so the lines are cast from text, never parsed.
_INSERT_ERRORS_POSTGRES = sa.text(
    f"""
    INSERT INTO {BatchRequestResult.__tablename__} (batch_id, custom_id, line_number, is_error, line, created_at)
    SELECT :batch_id, rows.custom_id, rows.line_number, TRUE, CAST(rows.line AS JSON), :created_at
    FROM ROWS FROM (
        json_to_recordset(CAST(:requests AS JSON)) AS (custom_id TEXT, line_number INTEGER),
        unnest(string_to_array(:lines, E'\\n'))
    ) AS rows (custom_id, line_number, line)
    ON CONFLICT (batch_id, custom_id) DO NOTHING
    RETURNING id
    """
).bindparams(sa.bindparam("created_at", type_=BatchRequestResult.__table__.c.created_at.type))


def _insert_errors_postgres(
    session: Session, batch_id: str, lines: list[tuple[str, int, dict[str, Any]]]
) -> int:
    requests = [{"custom_id": custom_id, "line_number": line_number} for custom_id, line_number, _ in lines]
    texts = "\n".join(json.dumps(line, ensure_ascii=False) for _, _, line in lines)
    inserted = session.execute(
        _INSERT_ERRORS_POSTGRES,
        {"batch_id": batch_id, "created_at": utc_now(), "requests": json.dumps(requests), "lines": texts},
    )
    return len(inserted.all())


def _insert_errors_sqlite(
    session: Session, batch_id: str, lines: list[tuple[str, int, dict[str, Any]]]
) -> int:
    now = utc_now()
    rows = [
        {
            "batch_id": batch_id,
            "custom_id": custom_id,
            "line_number": line_number,
            "is_error": True,
            "line": line,
            "created_at": now,
        }
        for custom_id, line_number, line in lines
    ]
    table = BatchRequestResult.__table__
    statement = (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["batch_id", "custom_id"])
        .returning(table.c.id)
    )
    # Core's multi-row INSERT (the ORM's bulk path takes twice as long); RETURNING yields only
    # the rows actually inserted.
    return len(session.connection().execute(statement, rows).all())


def _insert_result(
    session: Session, batch_id: str, custom_id: str, line_number: int, line: dict[str, Any], *, is_error: bool
) -> bool:
    values = {
        "batch_id": batch_id,
        "custom_id": custom_id,
        "line_number": line_number,
        "is_error": is_error,
        "line": line,
        "created_at": utc_now(),
    }
    return _insert_ignoring_duplicates(session, BatchRequestResult, values)


def write_result_files(session: Session, storage: FileStorage, batch: Batch) -> ResultFiles:
    """Write the output and error files from the recorded lines, in input-line order.

    Adds their File rows (purpose ``batch_output``) and sets ``batch.output_file_id`` /
    ``batch.error_file_id``; does not commit. If the batch already has its files (a
    redelivered task during ``finalizing``), returns those and writes nothing.
    """
    if batch.output_file_id is not None or batch.error_file_id is not None:
        return ResultFiles(batch.output_file_id, batch.error_file_id)
    output_file_id = _write_lines(session, storage, batch, is_error=False)
    error_file_id = _write_lines(session, storage, batch, is_error=True)
    batch.output_file_id, batch.error_file_id = output_file_id, error_file_id
    return ResultFiles(output_file_id, error_file_id)


def _write_lines(session: Session, storage: FileStorage, batch: Batch, *, is_error: bool) -> str | None:
    lines = session.scalars(
        sa.select(BatchRequestResult.line)
        .where(BatchRequestResult.batch_id == batch.id, BatchRequestResult.is_error.is_(is_error))
        .order_by(BatchRequestResult.line_number)
        .execution_options(yield_per=_ROWS_PER_FETCH)
    )
    file_id = new_file_id()
    size_bytes = 0
    with storage.open_write(file_id) as writer:
        for line in lines:
            encoded = (json.dumps(line, ensure_ascii=False) + "\n").encode()
            writer.write(encoded)
            size_bytes += len(encoded)
    if size_bytes == 0:
        storage.delete(file_id)
        return None
    kind = "error" if is_error else "output"
    created_at = utc_now()
    expires_at = None
    if batch.output_expires_after_s is not None:  # the batch's output_expires_after, from now
        expires_at = created_at + timedelta(seconds=batch.output_expires_after_s)
    session.add(
        File(
            id=file_id,
            account_id=batch.account_id,
            filename=f"{batch.id}_{kind}.jsonl",
            purpose=FilePurpose.BATCH_OUTPUT,
            size_bytes=size_bytes,
            created_at=created_at,
            expires_at=expires_at,
        )
    )
    session.flush()
    return file_id
