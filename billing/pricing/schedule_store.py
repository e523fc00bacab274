"""Price schedules in the database: loading versions, assigning them to accounts, resolving prices.

Versions are immutable once loaded (same label, same content: a no-op; different content: an
error). A new version must start after the schedule's latest version and after the last closed
billing period, so a closed month is never re-priced. An account is priced by the schedule of its
latest assignment in effect, else by ``default`` (loaded from the shipped file on first use).
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.pricing.schedule_parser import (
    ScheduleFile,
    ScheduleInvalidError,
    ScheduleProblem,
    read_schedule_file,
)
from billing.pricing.schedule_version import ScheduleVersion
from billing.pricing.version_document import version_document, version_from_document
from billing.sql import insert_ignoring_conflicts
from hybatch.errors import ConflictError, InvalidRequestError, NotFoundError
from hybatch.models import BillingPeriodClose, PriceScheduleAssignment, PriceScheduleVersion, utc_now

DEFAULT_SCHEDULE = "default"
DEFAULT_SCHEDULE_FILE = Path(__file__).resolve().parent / "default_schedule.yaml"

# Parsed versions by (row id, content hash): rows never change, so entries never go stale.
_parsed_versions: dict[tuple[int, str], ScheduleVersion] = {}
_MAX_PARSED_VERSIONS = 256


class NoScheduleInEffectError(InvalidRequestError):
    """No version of the account's schedule is in effect at the given time."""


@dataclass(frozen=True)
class LoadResult:
    added: list[str]  # price versions inserted
    unchanged: list[str]  # price versions already loaded with identical content


def content_sha256(version: ScheduleVersion) -> str:
    encoded = json.dumps(version_document(version), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def last_closed_period(session: Session) -> Period | None:
    latest = session.scalar(sa.select(sa.func.max(BillingPeriodClose.period)))
    return Period.parse(latest) if latest else None


def load_schedule(session: Session, schedule_file: ScheduleFile) -> LoadResult:
    """Insert the file's new versions; raises ScheduleInvalidError listing every conflict. No commit."""
    existing = {
        row.version: row
        for row in session.scalars(
            sa.select(PriceScheduleVersion).where(PriceScheduleVersion.schedule == schedule_file.schedule)
        )
    }
    latest = max(existing.values(), key=lambda row: row.effective_from, default=None)
    closed = last_closed_period(session)
    problems: list[ScheduleProblem] = []
    added: list[ScheduleVersion] = []
    unchanged: list[str] = []
    for index, version in enumerate(schedule_file.versions):
        path = f"versions[{index}]"
        row = existing.get(version.version)
        if row is not None:
            if row.content_sha256 == content_sha256(version):
                unchanged.append(version.price_version)
            else:
                problems.append(
                    ScheduleProblem(
                        path,
                        f"version {version.price_version} is already loaded with other prices "
                        "(versions are immutable: add a new version)",
                    )
                )
            continue
        if latest is not None and latest.currency != version.currency:
            problems.append(
                ScheduleProblem("currency", f"schedule {version.schedule!r} is priced in {latest.currency}")
            )
        if latest is not None and version.effective_from <= latest.effective_from:
            problems.append(
                ScheduleProblem(
                    f"{path}.effective_from",
                    f"overlaps loaded version {version.schedule}@{latest.version} "
                    f"(effective from {latest.effective_from.isoformat()}): a new version must start later",
                )
            )
        if closed is not None and version.effective_from < closed.end:
            problems.append(
                ScheduleProblem(
                    f"{path}.effective_from", f"falls in closed billing period {closed} or earlier"
                )
            )
        added.append(version)
    if problems:
        raise ScheduleInvalidError(problems)
    for version in added:
        session.add(_version_row(version))
    session.flush()
    return LoadResult([v.price_version for v in added], unchanged)


def _version_row(version: ScheduleVersion) -> PriceScheduleVersion:
    return PriceScheduleVersion(
        schedule=version.schedule,
        version=version.version,
        currency=version.currency,
        effective_from=version.effective_from,
        document=version_document(version),
        content_sha256=content_sha256(version),
    )


def ensure_default_schedule(session: Session) -> None:
    """Load the shipped default schedule if no version of ``default`` exists (safe to race)."""
    has_default = session.scalar(
        sa.select(PriceScheduleVersion.id).where(PriceScheduleVersion.schedule == DEFAULT_SCHEDULE).limit(1)
    )
    if has_default is not None:
        return
    for version in read_schedule_file(DEFAULT_SCHEDULE_FILE).versions:
        row = _version_row(version)
        values = {column.key: getattr(row, column.key) for column in PriceScheduleVersion.__table__.columns}
        values.pop("id")
        values["created_at"] = utc_now()
        insert_ignoring_conflicts(session, PriceScheduleVersion, values)


def assign_schedule(session: Session, account_id: str, schedule: str, effective_from: datetime) -> None:
    """Price ``account_id`` by ``schedule`` from ``effective_from`` on. No commit.

    Refused (ConflictError) inside a closed period, or when the currency would change.
    """
    if schedule == DEFAULT_SCHEDULE:
        ensure_default_schedule(session)
    currency = session.scalar(
        sa.select(PriceScheduleVersion.currency).where(PriceScheduleVersion.schedule == schedule).limit(1)
    )
    if currency is None:
        raise NotFoundError(f"no price schedule named {schedule!r} is loaded", code="schedule_not_found")
    closed = last_closed_period(session)
    if closed is not None and effective_from < closed.end:
        raise ConflictError(
            f"effective_from {effective_from.isoformat()} falls in closed billing period {closed} or earlier",
            code="period_closed",
        )
    book = price_book(session, account_id)
    current = book.schedule_at(effective_from)
    current_currency = book.currency_of(current)
    if current_currency is not None and current_currency != currency:
        raise ConflictError(
            f"schedule {schedule!r} is priced in {currency}, the account in {current_currency}",
            code="currency_change",
        )
    exists = session.scalar(
        sa.select(PriceScheduleAssignment.id).where(
            PriceScheduleAssignment.account_id == account_id,
            PriceScheduleAssignment.effective_from == effective_from,
        )
    )
    if exists is not None:
        raise ConflictError(
            f"the account already has an assignment effective {effective_from.isoformat()}",
            code="assignment_exists",
        )
    session.add(
        PriceScheduleAssignment(account_id=account_id, schedule=schedule, effective_from=effective_from)
    )
    session.flush()


def _parsed(row: PriceScheduleVersion) -> ScheduleVersion:
    key = (row.id, row.content_sha256)
    version = _parsed_versions.get(key)
    if version is None:
        version = version_from_document(row.document)
        if len(_parsed_versions) >= _MAX_PARSED_VERSIONS:
            _parsed_versions.clear()
        _parsed_versions[key] = version
    return version


class PriceBook:
    """Which schedule version prices one account at any moment (assignments + versions)."""

    def __init__(
        self,
        account_id: str,
        assignments: list[tuple[datetime, str]],
        versions: dict[str, list[ScheduleVersion]],
    ) -> None:
        self.account_id = account_id
        self._assignment_starts = [start for start, _ in assignments]
        self._assignment_schedules = [schedule for _, schedule in assignments]
        self._versions = versions
        self._version_starts = {name: [v.effective_from for v in vs] for name, vs in versions.items()}
        # Equal fingerprints price alike: assignments, and the loaded (immutable) versions by name.
        self.fingerprint = (
            tuple(assignments),
            tuple(sorted((name, tuple(v.price_version for v in vs)) for name, vs in versions.items())),
        )

    def schedule_at(self, moment: datetime) -> str:
        index = bisect.bisect_right(self._assignment_starts, moment) - 1
        return self._assignment_schedules[index] if index >= 0 else DEFAULT_SCHEDULE

    def currency_of(self, schedule: str) -> str | None:
        versions = self._versions.get(schedule)
        return versions[0].currency if versions else None

    def at(self, moment: datetime) -> ScheduleVersion:
        """The version pricing usage created at ``moment``; raises NoScheduleInEffectError."""
        schedule = self.schedule_at(moment)
        starts = self._version_starts.get(schedule, [])
        index = bisect.bisect_right(starts, moment) - 1
        if index < 0:
            raise NoScheduleInEffectError(
                f"no version of price schedule {schedule!r} is in effect at {moment.isoformat()}",
                code="no_price_schedule",
            )
        return self._versions[schedule][index]


def price_book(session: Session, account_id: str) -> PriceBook:
    """The account's price book, loading the shipped default schedule if the database has none."""
    ensure_default_schedule(session)
    assignments = [
        (row.effective_from, row.schedule)
        for row in session.scalars(
            sa.select(PriceScheduleAssignment)
            .where(PriceScheduleAssignment.account_id == account_id)
            .order_by(PriceScheduleAssignment.effective_from)
        )
    ]
    names = {DEFAULT_SCHEDULE} | {schedule for _, schedule in assignments}
    versions: dict[str, list[ScheduleVersion]] = {name: [] for name in names}
    for row in session.scalars(
        sa.select(PriceScheduleVersion)
        .where(PriceScheduleVersion.schedule.in_(names))
        .order_by(PriceScheduleVersion.effective_from)
    ):
        versions[row.schedule].append(_parsed(row))
    return PriceBook(account_id, assignments, versions)


def list_versions(session: Session) -> list[PriceScheduleVersion]:
    ensure_default_schedule(session)
    return list(
        session.scalars(
            sa.select(PriceScheduleVersion).order_by(
                PriceScheduleVersion.schedule, PriceScheduleVersion.effective_from
            )
        )
    )
