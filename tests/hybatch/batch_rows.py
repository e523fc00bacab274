"""Rows for tests of the worker-facing helpers: an account, a key, an input file and a batch."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from hybatch.models import Account, ApiKey, Batch, BatchEndpoint, File, FilePurpose, utc_now


def add_batch(
    session: Session, *, account_name: str = "acme", endpoint=BatchEndpoint.CHAT_COMPLETIONS
) -> Batch:
    account = Account(name=account_name)
    session.add(account)
    session.flush()
    key = ApiKey(account_id=account.id, prefix=f"hb-{account_name}", key_sha256=account_name.ljust(64, "0"))
    upload = File(account_id=account.id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=1)
    session.add_all([key, upload])
    session.flush()
    batch = Batch(
        account_id=account.id,
        api_key_id=key.id,
        endpoint=endpoint,
        model="tiny-test",
        input_file_id=upload.id,
        completion_window="24h",
        expires_at=utc_now() + timedelta(hours=24),
    )
    session.add(batch)
    session.commit()
    return batch
