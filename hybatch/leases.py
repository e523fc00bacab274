"""Leases: which worker may do a batch's or a shard's work right now, decided by conditional UPDATEs.

A lease is ``(lease_owner, lease_expires_at)`` on a row of ``batches`` (the batch's own work:
validating and cutting it into shards, or ending it) or of ``batch_shards`` (running one shard).
Taking it is one UPDATE that succeeds only while the row is free (no owner, or the lease has
expired) or already ours; renewing and releasing are UPDATEs that succeed only while we still own
it. So two workers never hold one lease at once, and a worker that lost its lease (it stalled past
the expiry and another took over) learns so at its next renewal and stops without recording more::

    pending --take--> running --renew...--> running --finish--> done
                         |  \\--release (shutdown, error)--> pending
                         \\-- expires (worker died) --> taken by the next worker

Expiry is compared with this host's clock: the workers' clocks must agree to well under a lease
(NTP does that). Every function here changes only the caller's transaction unless it says it
commits.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.batch_lifecycle import UNFINISHED
from hybatch.models import Batch, BatchShard, ShardStatus, utc_now


def new_lease_owner() -> str:
    """A name for one worker process: host, pid and a random tag (a pid can be reused)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Lease:
    """Who holds leases (one worker process) and for how long each take or renewal lasts."""

    owner: str
    duration: timedelta

    def expiry(self):
        return utc_now() + self.duration


def _free_or_ours(model: type, owner: str):
    now = utc_now()
    return sa.or_(model.lease_owner.is_(None), model.lease_expires_at < now, model.lease_owner == owner)


# -- shards -----------------------------------------------------------------------------------


def _shard_key(batch_id: str, shard_index: int):
    return sa.and_(BatchShard.batch_id == batch_id, BatchShard.shard_index == shard_index)


def _held_by(batch_id: str, shard_index: int, lease: Lease):
    """The shard is running under ``lease``: what renewing, releasing and finishing require."""
    return sa.and_(
        _shard_key(batch_id, shard_index),
        BatchShard.status == ShardStatus.RUNNING,
        BatchShard.lease_owner == lease.owner,
    )


def take_shard(session: Session, batch_id: str, shard_index: int, lease: Lease) -> bool:
    """Take the shard's lease if it is not done and nobody else holds a live one; commits."""
    taken = session.execute(
        sa.update(BatchShard)
        .where(
            _shard_key(batch_id, shard_index),
            BatchShard.status != ShardStatus.DONE,
            _free_or_ours(BatchShard, lease.owner),
        )
        .values(
            status=ShardStatus.RUNNING,
            lease_owner=lease.owner,
            lease_expires_at=lease.expiry(),
            # A new run of the shard unless we hold it already (a redelivered message of ours).
            attempts=sa.case(
                (BatchShard.lease_owner == lease.owner, BatchShard.attempts), else_=BatchShard.attempts + 1
            ),
        )
    )
    session.commit()
    return taken.rowcount == 1


def renew_shard(session: Session, batch_id: str, shard_index: int, lease: Lease) -> bool:
    """Extend our lease on a running shard; False when it is no longer ours (stop, record nothing)."""
    renewed = session.execute(
        sa.update(BatchShard)
        .where(_held_by(batch_id, shard_index, lease))
        .values(lease_expires_at=lease.expiry())
    )
    return renewed.rowcount == 1


def release_shard(session: Session, batch_id: str, shard_index: int, lease: Lease) -> bool:
    """Give our lease back, leaving the shard pending for the next task; commits."""
    released = session.execute(
        sa.update(BatchShard)
        .where(_held_by(batch_id, shard_index, lease))
        .values(status=ShardStatus.PENDING, lease_owner=None, lease_expires_at=None)
    )
    session.commit()
    return released.rowcount == 1


def finish_shard(session: Session, batch_id: str, shard_index: int, lease: Lease) -> bool:
    """Mark our shard done (every request recorded); commits. False if the lease was lost."""
    finished = session.execute(
        sa.update(BatchShard)
        .where(_held_by(batch_id, shard_index, lease))
        .values(
            status=ShardStatus.DONE,
            lease_owner=None,
            lease_expires_at=None,
            done_at=utc_now(),
            done_by=lease.owner,
        )
    )
    session.commit()
    return finished.rowcount == 1


# -- batches ----------------------------------------------------------------------------------


def take_batch(session: Session, batch_id: str, lease: Lease) -> bool:
    """Take the lease on an unfinished batch's own work; stamps ``claimed_at`` once; commits."""
    taken = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(UNFINISHED), _free_or_ours(Batch, lease.owner))
        .values(
            lease_owner=lease.owner,
            lease_expires_at=lease.expiry(),
            claimed_at=sa.func.coalesce(Batch.claimed_at, utc_now()),
        )
    )
    session.commit()
    return taken.rowcount == 1


def renew_batch(session: Session, batch_id: str, lease: Lease) -> bool:
    """Extend our lease on the batch; False when another worker took it over. Commits."""
    renewed = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.lease_owner == lease.owner)
        .values(lease_expires_at=lease.expiry())
    )
    session.commit()
    return renewed.rowcount == 1


def release_batch(session: Session, batch_id: str, lease: Lease) -> None:
    """Give our lease on the batch back (its work is done, or handed on); commits."""
    session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.lease_owner == lease.owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    session.commit()
