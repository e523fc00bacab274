from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hybatch.models import (
    Account,
    ApiKey,
    Batch,
    BatchEndpoint,
    BatchStatus,
    File,
    FilePurpose,
    UsageRecord,
)


def _batch_fixture(session: Session) -> Batch:
    account = Account(name="acme")
    session.add(account)
    session.flush()
    key = ApiKey(account_id=account.id, prefix="hb-abc", key_sha256="0" * 64)
    upload = File(account_id=account.id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=10)
    session.add_all([key, upload])
    session.flush()
    batch = Batch(
        account_id=account.id,
        api_key_id=key.id,
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        model="tiny",
        input_file_id=upload.id,
        completion_window="24h",
        expires_at=datetime.now(UTC) + timedelta(hours=24),
        metadata_={"team": "a"},
    )
    session.add(batch)
    session.flush()
    return batch


def _usage(batch: Batch, custom_id: str, hit: int, miss: int) -> UsageRecord:
    return UsageRecord(
        account_id=batch.account_id,
        api_key_id=batch.api_key_id,
        batch_id=batch.id,
        custom_id=custom_id,
        model="tiny",
        cache_hit_input_tokens=hit,
        cache_miss_input_tokens=miss,
        output_tokens=3,
        prompt_tokens=hit + miss,
    )


def test_ids_defaults_and_utc_round_trip(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        batch = _batch_fixture(session)
        batch_id = batch.id
    with session_factory() as session:
        loaded = session.get_one(Batch, batch_id)
        assert loaded.id.startswith("batch_") and len(loaded.id) == len("batch_") + 24
        assert loaded.input_file_id.startswith("file-")
        assert loaded.status is BatchStatus.VALIDATING
        assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
        assert loaded.metadata_ == {"team": "a"}
        assert (loaded.total_requests, loaded.completed_requests, loaded.failed_requests) == (0, 0, 0)


def test_usage_is_unique_per_batch_and_custom_id(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        batch = _batch_fixture(session)
        session.add(_usage(batch, "req-1", hit=2, miss=5))
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(_usage(batch, "req-1", hit=0, miss=7))
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(UsageRecord)) == 1


def test_usage_prompt_split_is_checked(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        batch = _batch_fixture(session)
    record = _usage(batch, "req-2", hit=2, miss=5)
    record.prompt_tokens = 8
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(record)


def test_foreign_keys_are_enforced(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(ApiKey(account_id="acct_missing", prefix="hb-x", key_sha256="1" * 64))


def test_naive_datetimes_are_refused(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(sa.exc.StatementError), session_factory.begin() as session:
        session.add(Account(name="naive", created_at=datetime.now()))
