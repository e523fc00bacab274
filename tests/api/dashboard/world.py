"""A seeded world for dashboard tests: two accounts with a month of history, a closed previous
period with invoices, a running batch with stored files, and an operator key.

Every usage record lies in the month of ``now`` or in the closed month before it, whatever the day
``now`` falls on (tests/api/dashboard/test_world.py checks this at the edges of months):

    previous month, closed and invoiced             current month
    [start+3d, start+5d) alice 60                   [now - recent, now): alice 120, bob 30
    [start+3d, start+4d) bob 20                     recent = min(RECENT, now - current.start)

so the last 7 days hold exactly the current month's usage, and a world built in the first minutes
of a month still has some (squeezed into those minutes) instead of spilling into the closed month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.invoices import close_period
from billing.periods import Period
from billing.sample_ledger import write_sample_ledger
from hybatch.db import unit_of_work
from hybatch.models import Batch, BatchEndpoint, BatchStatus, File, FilePurpose
from hybatch.storage import FileStorage

ADMIN_KEY = "hb-admin-test-key-0123456789abcdef"
MODELS = ("tiny-test", "mimo-v2.5-pro")
# How far back the current month's usage reaches when the month is old enough.
RECENT = timedelta(days=2, hours=5)


@dataclass(frozen=True)
class World:
    now: datetime
    current_period: Period
    alice_secret: str
    alice_account_id: str
    alice_running_batch_id: str
    alice_finished_batch_id: str
    alice_output_file_id: str
    closed_period: Period
    bob_secret: str
    bob_batch_id: str
    bob_output_file_id: str


def _stored_file(session: Session, storage: FileStorage, account_id: str, name: str, content: bytes) -> File:
    row = File(
        account_id=account_id, filename=name, purpose=FilePurpose.BATCH_OUTPUT, size_bytes=len(content)
    )
    session.add(row)
    session.flush()
    with storage.open_write(row.id) as handle:
        handle.write(content)
    return row


def _running_batch(
    session: Session, storage: FileStorage, account_id: str, api_key_id: str, now: datetime
) -> Batch:
    upload = _stored_file(session, storage, account_id, "in.jsonl", b'{"custom_id": "a"}\n')
    batch = Batch(
        account_id=account_id,
        api_key_id=api_key_id,
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        model=MODELS[0],
        input_file_id=upload.id,
        completion_window="24h",
        status=BatchStatus.IN_PROGRESS,
        created_at=now - timedelta(minutes=10),
        claimed_at=now - timedelta(minutes=10),
        in_progress_at=now - timedelta(minutes=10),
        expires_at=now + timedelta(hours=24),
        total_requests=40,
        completed_requests=10,
        input_tokens=5000,
        cached_input_tokens=4000,
        output_tokens=800,
        metadata_={"description": "nightly eval"},
    )
    session.add(batch)
    session.flush()
    return batch


def build_world(session_factory: sessionmaker[Session], storage: FileStorage, now: datetime) -> World:
    """Writes the world as it stands at ``now`` (aware); needs ``now`` past its month's start."""
    current = Period.containing(now)
    previous = current.previous()
    recent = min(RECENT, now - current.start)
    with unit_of_work(session_factory) as session:
        old = write_sample_ledger(
            session,
            account_name="alice",
            num_requests=60,
            start=previous.start + timedelta(days=3),
            end=previous.start + timedelta(days=5),
            models=MODELS,
            requests_per_batch=30,
            seed=1,
        )
        write_sample_ledger(
            session,
            account_name="bob",
            num_requests=20,
            start=previous.start + timedelta(days=3),
            end=previous.start + timedelta(days=4),
            requests_per_batch=20,
            seed=2,
        )
        close_period(session, previous, now=now)
    with unit_of_work(session_factory) as session:
        alice = write_sample_ledger(
            session,
            account_name="alice",
            num_requests=120,
            start=now - recent,
            end=now - recent / 100,
            models=MODELS,
            requests_per_batch=40,
            seed=3,
        )
        bob = write_sample_ledger(
            session,
            account_name="bob",
            num_requests=30,
            start=now - recent / 2,
            end=now - recent / 50,
            requests_per_batch=30,
            seed=4,
        )
        alice_batch = session.get(Batch, alice.batch_ids[-1])
        assert alice_batch is not None
        alice_output = _stored_file(
            session, storage, alice.account_id, f"{alice_batch.id}_output.jsonl", b'{"ok": 1}\n'
        )
        alice_batch.output_file_id = alice_output.id
        alice_batch.cache_metrics = {
            "lookups": 40,
            "lookup_tokens": 20_000,
            "hit_tokens": 15_000,
            "hit_tokens_device": 11_300,
            "hit_tokens_host": 2_500,
            "hit_tokens_disk": 500,
            "hit_tokens_shared": 700,
            "hits_cut_short": 2,
            "tokens_cut_short": 64,
            "hits_short_missing_window": 2,
            "tokens_short_missing_window": 64,
            "hits_short_eviction": 3,
            "tokens_short_eviction": 1_200,
            "hit_tokens_earlier_calls": 11_000,
            "hit_tokens_this_call": 4_000,
            "windows_retained": 9,
            "windows_dropped": 1,
            "evictions": 3,
            "promotions": 4,
            "hit_rate": 0.75,
        }
        bob_batch = session.get(Batch, bob.batch_ids[0])
        assert bob_batch is not None
        bob_output = _stored_file(
            session, storage, bob.account_id, f"{bob_batch.id}_output.jsonl", b'{"bob": 1}\n'
        )
        bob_batch.output_file_id = bob_output.id
        running = _running_batch(session, storage, alice.account_id, alice_batch.api_key_id, now)
        return World(
            now=now,
            current_period=current,
            alice_secret=old.api_key_secrets[0],
            alice_account_id=alice.account_id,
            alice_running_batch_id=running.id,
            alice_finished_batch_id=alice_batch.id,
            alice_output_file_id=alice_output.id,
            closed_period=previous,
            bob_secret=bob.api_key_secrets[0],
            bob_batch_id=bob_batch.id,
            bob_output_file_id=bob_output.id,
        )
