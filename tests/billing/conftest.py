"""Billing fixtures: a session on a migrated database (SQLite, and Postgres when marked)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    from tests.hybatch.checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-test", context_tokens=256)


@pytest.fixture
def api_settings(tmp_path, database_url: str, tiny_checkpoint):
    from hybatch.settings import Settings

    return Settings(data_dir=tmp_path / "var", database_url=database_url, model=tiny_checkpoint)


@pytest.fixture
def api(api_settings) -> Iterator:
    """A TestClient on the app; ``api.app.state.billing_settings`` carries the webhook secret."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from billing.settings import BillingSettings

    app = create_app(api_settings, enqueue=lambda batch_id: None)
    app.state.billing_settings = BillingSettings(stripe_webhook_secret="whsec_test_secret")
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def caller(session_factory: sessionmaker[Session]):
    """``caller(name)`` -> (bearer headers, Customer with a batch) for a new account and key."""
    from hybatch import accounts
    from hybatch.db import unit_of_work
    from hybatch.models import File, FilePurpose
    from tests.billing.ledger import Customer, add_batch

    def make(name: str):
        with unit_of_work(session_factory) as session:
            account = accounts.create_account(session, name)
            new_key = accounts.create_api_key(session, account.id)
            upload = File(account_id=account.id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=1)
            session.add(upload)
            session.flush()
            batch = add_batch(session, account.id, new_key.key.id, upload.id, model="tiny-test")
            customer = Customer(account.id, new_key.key.id, batch.id, name)
        return {"Authorization": f"Bearer {new_key.secret}"}, customer

    return make
