"""Ledger rows for billing tests: accounts with a key and a batch, and usage records at set times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count

from sqlalchemy.orm import Session

from hybatch.models import Account, ApiKey, Batch, BatchEndpoint, File, FilePurpose, UsageRecord

_serial = count(1)


@dataclass
class Customer:
    account_id: str
    api_key_id: str
    batch_id: str
    name: str


def add_customer(session: Session, name: str = "acme", *, model: str = "tiny-test") -> Customer:
    account = Account(name=name)
    session.add(account)
    session.flush()
    key = ApiKey(account_id=account.id, prefix=f"hb-{name}"[:32], key_sha256=name.ljust(64, "0")[:64])
    upload = File(account_id=account.id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=1)
    session.add_all([key, upload])
    session.flush()
    batch = add_batch(session, account.id, key.id, upload.id, model=model)
    session.flush()
    return Customer(account.id, key.id, batch.id, name)


def add_api_key(session: Session, customer: Customer, prefix: str, *, model: str = "tiny-test") -> Customer:
    """Another key of ``customer``'s account, with a batch of its own (same account, new key and batch)."""
    key = ApiKey(account_id=customer.account_id, prefix=prefix, key_sha256=prefix.ljust(64, "1")[:64])
    upload = File(
        account_id=customer.account_id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=1
    )
    session.add_all([key, upload])
    session.flush()
    batch = add_batch(session, customer.account_id, key.id, upload.id, model=model)
    return Customer(customer.account_id, key.id, batch.id, customer.name)


def add_batch(session: Session, account_id: str, api_key_id: str, input_file_id: str, *, model: str) -> Batch:
    batch = Batch(
        account_id=account_id,
        api_key_id=api_key_id,
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        model=model,
        input_file_id=input_file_id,
        completion_window="24h",
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )
    session.add(batch)
    session.flush()
    return batch


def at(text: str) -> datetime:
    """``at("2026-03-05 10:00")`` -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_usage(
    session: Session,
    customer: Customer,
    created_at: datetime,
    *,
    hit: int = 0,
    miss: int = 0,
    out: int = 0,
    model: str = "tiny-test",
    batch_id: str | None = None,
    custom_id: str | None = None,
) -> UsageRecord:
    record = UsageRecord(
        account_id=customer.account_id,
        api_key_id=customer.api_key_id,
        batch_id=batch_id or customer.batch_id,
        custom_id=custom_id or f"req-{next(_serial)}",
        model=model,
        cache_hit_input_tokens=hit,
        cache_miss_input_tokens=miss,
        output_tokens=out,
        prompt_tokens=hit + miss,
        created_at=created_at,
    )
    session.add(record)
    session.flush()
    return record


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
