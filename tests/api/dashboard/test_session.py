"""Signed session cookies: round trip, tampering, expiry, and the generated secret."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api.dashboard.session import DashboardSession, SessionCodec, load_session_secret
from hybatch.settings import Settings

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_round_trip_and_tampering() -> None:
    codec = SessionCodec(b"k" * 32)
    session = DashboardSession.for_developer("acct_1", "key_1", timedelta(hours=1), NOW)
    cookie = codec.encode(session)
    assert codec.decode(cookie, NOW) == session
    payload, signature = cookie.split(".")
    forged_payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert codec.decode(f"{forged_payload}.{signature}", NOW) is None
    assert SessionCodec(b"x" * 32).decode(cookie, NOW) is None  # another secret
    assert codec.decode("garbage", NOW) is None and codec.decode(None, NOW) is None
    assert codec.decode(cookie, NOW + timedelta(hours=1)) is None  # expired


def test_admin_fingerprint_follows_the_admin_key() -> None:
    codec = SessionCodec(b"k" * 32)
    assert codec.admin_fingerprint("one") == codec.admin_fingerprint("one")
    assert codec.admin_fingerprint("one") != codec.admin_fingerprint("two")
    assert "one" not in codec.encode(
        DashboardSession.for_admin(codec.admin_fingerprint("one"), timedelta(hours=1), NOW)
    )


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    first = load_session_secret(settings)
    assert len(first) == 64 and first == load_session_secret(settings)
    path = tmp_path / "var" / "session_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_session_secret(Settings(data_dir=tmp_path / "var", session_secret="s" * 20)) == b"s" * 20
