"""The enqueued-token quota's check and insert are one transaction under a lock on the account: a
creation that starts while another one is between its check and its commit waits for it, then
counts its tokens, so the two cannot both slip under the limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch import batches
from hybatch.accounts import Caller
from hybatch.db import make_engine, make_session_factory
from hybatch.errors import InvalidRequestError
from hybatch.models import Account, Batch, utc_now
from tests.hybatch.batch_rows import add_batch

LIMIT = 50


@pytest.fixture
def session_factory(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    """Postgres only: the lock is its row lock (SQLite lets one writer in at a time anyway)."""
    engine = make_engine(postgres_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.mark.postgres
def test_a_creation_waits_for_one_in_flight_and_then_counts_its_tokens(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        existing = add_batch(session)
        caller = Caller(existing.account_id, existing.api_key_id)
        input_file_id = existing.input_file_id

    # Creation A, between its quota check and its commit: the account's row locked, its batch of
    # 30 prompt tokens inserted but not committed.
    in_flight = session_factory()
    in_flight.execute(sa.update(Account).where(Account.id == caller.account_id).values(name=Account.name))
    in_flight.add(
        Batch(
            account_id=caller.account_id,
            api_key_id=caller.api_key_id,
            endpoint=existing.endpoint,
            model="tiny-test",
            input_file_id=input_file_id,
            completion_window="24h",
            expires_at=utc_now() + timedelta(hours=24),
            quota_prompt_tokens=30,
        )
    )
    in_flight.flush()

    outcome: list[object] = []

    def create_b() -> None:  # creation B, 30 more prompt tokens: 60 > 50 once A counts
        with session_factory() as session:
            request = batches.NewBatchRequest(
                input_file_id, "/v1/chat/completions", "24h", None, quota_prompt_tokens=30
            )
            try:
                outcome.append(
                    batches.create_batch(
                        session,
                        lambda _batch_id: None,
                        caller,
                        request,
                        served_model="tiny-test",
                        completion_windows=("24h",),
                        token_limit=LIMIT,
                    ).id
                )
            except InvalidRequestError as error:
                outcome.append(error)

    thread = threading.Thread(target=create_b)
    thread.start()
    try:
        thread.join(timeout=1.0)
        assert thread.is_alive() and outcome == []  # B waits on A's lock instead of reading 0 enqueued
    finally:
        in_flight.commit()
        in_flight.close()
    thread.join(timeout=10)
    [refused] = outcome
    assert isinstance(refused, InvalidRequestError) and refused.code == "token_limit_exceeded"
    assert "30 are enqueued" in refused.message
