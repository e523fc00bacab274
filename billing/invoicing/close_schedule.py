"""The monthly close on a schedule: a Celery beat entry and the plain function behind its task.

The worker's Celery app merges ``beat_schedule`` and registers a task named
``billing.close_previous_month`` that calls ``close_previous_month(session_factory)``. It runs
hourly and is idempotent, so a missed or repeated run is harmless: it closes every period that
ended at least ``CLOSE_GRACE`` ago and is not closed yet, oldest first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.invoices import CloseResult, close_period
from billing.periods import Period
from billing.pricing.schedule_store import last_closed_period
from hybatch.db import unit_of_work
from hybatch.models import UsageRecord, utc_now

CLOSE_TASK = "billing.close_previous_month"
# Requests that finish just before midnight commit a moment later; wait for them.
CLOSE_GRACE = timedelta(hours=1)

beat_schedule = {
    "billing-close-previous-month": {"task": CLOSE_TASK, "schedule": timedelta(hours=1)},
}


def periods_due(session: Session, now: datetime) -> list[Period]:
    """Periods ended at least CLOSE_GRACE before ``now`` and not closed yet, oldest first."""
    newest_due = Period.containing(now - CLOSE_GRACE).previous()
    last_closed = last_closed_period(session)
    if last_closed is not None:
        first = last_closed.next()
    else:
        earliest = session.scalar(sa.select(sa.func.min(UsageRecord.created_at)))
        if earliest is None:
            return []
        first = Period.containing(earliest)
    due = []
    period = first
    while period <= newest_due:
        due.append(period)
        period = period.next()
    return due


def close_previous_month(
    session_factory: sessionmaker[Session], now: datetime | None = None
) -> list[CloseResult]:
    """Close every due period, each in its own transaction (the body of the beat task)."""
    now = now or utc_now()
    with session_factory() as session:
        due = periods_due(session, now)
    results = []
    for period in due:
        with unit_of_work(session_factory) as session:
            results.append(close_period(session, period, now=now))
    return results
