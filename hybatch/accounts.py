"""Accounts and API keys: keys are shown once, stored as SHA-256, listed by a visible prefix."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.errors import ConflictError, NotFoundError
from hybatch.models import Account, ApiKey, utc_now

KEY_PREFIX = "hb-"
VISIBLE_PREFIX_CHARS = 12  # "hb-" plus 9 random characters: unique, and enough to recognise a key


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: ``secret`` exists only here and is never stored."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class Caller:
    """Who is making a request: the account and the key it authenticated with."""

    account_id: str
    api_key_id: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_account(session: Session, name: str) -> Account:
    """Add an account named ``name``; raises ConflictError if the name is taken."""
    if find_account(session, name) is not None:
        raise ConflictError(f"account {name!r} already exists", code="account_exists")
    account = Account(name=name)
    session.add(account)
    session.flush()
    return account


def find_account(session: Session, name: str) -> Account | None:
    return session.scalar(sa.select(Account).where(Account.name == name))


def get_account(session: Session, name: str) -> Account:
    """The account named ``name``; raises NotFoundError."""
    account = find_account(session, name)
    if account is None:
        raise NotFoundError(f"no account named {name!r}", code="account_not_found")
    return account


def create_api_key(session: Session, account_id: str) -> NewApiKey:
    """Add a key for ``account_id``. The returned secret must be shown to the user now or never."""
    while True:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:VISIBLE_PREFIX_CHARS]
        taken = session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix))
        if taken is None:
            break
    key = ApiKey(account_id=account_id, prefix=prefix, key_sha256=hash_secret(secret))
    session.add(key)
    session.flush()
    return NewApiKey(key=key, secret=secret)


def list_api_keys(session: Session, account_id: str) -> list[ApiKey]:
    return list(
        session.scalars(sa.select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at))
    )


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the key with this visible prefix (idempotent); raises NotFoundError."""
    key = session.scalar(sa.select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFoundError(f"no API key with prefix {prefix!r}", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = utc_now()
    return key


def authenticate(session: Session, secret: str) -> Caller | None:
    """The caller for a bearer secret, or None when it is unknown or revoked."""
    row = session.execute(
        sa.select(ApiKey.id, ApiKey.account_id).where(
            ApiKey.key_sha256 == hash_secret(secret), ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Caller(account_id=row.account_id, api_key_id=row.id)
