"""A batch as the dashboard shows it: progress, tokens, cost so far, hit rate and an ETA.

``progress_of`` reads only; the page renders the result and the live-update endpoint sends the
same fields, already formatted, so the browser only swaps text. Progress is the share of requests
*completed*; failed requests and requests that never ran (cancelled, expired, skipped) are counted
beside it, never in it (``api.dashboard.request_outcomes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from api.dashboard import formatting
from api.dashboard.request_outcomes import RequestOutcomes, request_outcomes
from billing.pricing.request_cost import batch_costs_so_far
from hybatch.batches import CANCELLABLE
from hybatch.models import Batch, BatchStatus

STATUS_LABELS = {
    BatchStatus.VALIDATING: "Validating",
    BatchStatus.IN_PROGRESS: "In progress",
    BatchStatus.FINALIZING: "Finalizing",
    BatchStatus.COMPLETED: "Completed",
    BatchStatus.FAILED: "Failed",
    BatchStatus.EXPIRED: "Expired",
    BatchStatus.CANCELLING: "Cancelling",
    BatchStatus.CANCELLED: "Cancelled",
}


# Why a batch that ended without recording any request has no files.
_ENDED_BEFORE_ANY_REQUEST = {
    BatchStatus.FAILED: "the batch failed before any request ran (see Errors)",
    BatchStatus.CANCELLED: "the batch was cancelled before any request ran",
    BatchStatus.EXPIRED: "the batch expired before any request ran",
    BatchStatus.COMPLETED: "the batch had no requests",
}


@dataclass(frozen=True)
class BatchProgress:
    batch: Batch
    outcomes: RequestOutcomes
    cost: Decimal
    currency: str | None
    eta: timedelta | None  # None when finished, not started, or nothing done yet

    @property
    def status(self) -> BatchStatus:
        return self.batch.status

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.batch.status]

    @property
    def is_live(self) -> bool:
        return not self.batch.status.is_terminal

    @property
    def can_cancel(self) -> bool:
        return self.batch.status in CANCELLABLE

    @property
    def percent_done(self) -> int:
        """Completed requests as a share of all (a batch with no requests shows an empty bar)."""
        if self.outcomes.total == 0:
            return 0
        return int(100 * self.outcomes.completed / self.outcomes.total)

    @property
    def progress_text(self) -> str:
        """``1 / 300`` (completed of total); words when the batch has no counted requests."""
        if self.outcomes.total == 0:
            return "none ran" if self.batch.status.is_terminal else "not counted yet"
        return f"{formatting.integer(self.outcomes.completed)} / {formatting.integer(self.outcomes.total)}"

    @property
    def outcomes_text(self) -> str:
        """The requests that did not complete, by outcome: ``299 cancelled``; empty when none."""
        parts = [(self.outcomes.failed, "failed"), *self.outcomes.not_run_parts()]
        return " · ".join(f"{formatting.integer(count)} {words}" for count, words in parts if count)

    @property
    def not_run_text(self) -> str:
        """``299 cancelled``, or ``none`` when every request ran (or may still run)."""
        parts = self.outcomes.not_run_parts()
        return ", ".join(f"{formatting.integer(count)} {words}" for count, words in parts) or "none"

    @property
    def cache_lookups_are_billed_tokens(self) -> bool:
        """Whether the engine's prefix-cache counters equal the batch's billed input tokens.

        They differ when the engine started requests that did not complete (cancelled, expired,
        failed: looked up, never billed) or ran requests again after a worker restart (looked up
        twice, billed once): see ``worker.engine.scheduler`` (one lookup per admitted request)
        and ``worker.batch_generation`` (counters summed per engine call).
        """
        cache = self.batch.cache_metrics or {}
        return (
            cache.get("lookup_tokens") == self.batch.input_tokens
            and cache.get("hit_tokens") == self.batch.cached_input_tokens
        )

    @property
    def ended_before_any_request(self) -> str | None:
        """Why no request of an ended batch was recorded, in words; None if some were (or it runs)."""
        outcomes = self.outcomes
        if self.is_live or outcomes.completed + outcomes.failed + outcomes.not_run > 0:
            return None
        return _ENDED_BEFORE_ANY_REQUEST.get(self.batch.status, "no request was recorded")

    @property
    def files_note(self) -> str | None:
        """Why the batch's file list lacks an output or error file, in words; None when it has both."""
        batch = self.batch
        if self.is_live:
            return "Output and error files appear here when the batch finishes."
        if batch.output_file_id is None and batch.error_file_id is None:
            if self.ended_before_any_request is not None:
                return f"This batch produced no output or error file: {self.ended_before_any_request}."
            return "No output or error file is stored for this batch."
        if batch.output_file_id is None:
            return "No output file: none of this batch's requests completed (the error file says why, line by line)."
        if batch.error_file_id is None:
            return "No error file: no request failed."
        return None

    @property
    def total_tokens(self) -> int:
        return self.batch.input_tokens + self.batch.output_tokens

    @property
    def hit_rate(self) -> Decimal | None:
        if self.batch.input_tokens == 0:
            return None
        return Decimal(self.batch.cached_input_tokens) / Decimal(self.batch.input_tokens)

    def as_live_fields(self) -> dict[str, Any]:
        """What the page's live-update script writes into the batch's row (text only)."""
        return {
            "id": self.batch.id,
            "status": self.batch.status.value,
            "is_live": self.is_live,
            "can_cancel": self.can_cancel,
            "percent": self.percent_done,
            "text": {
                "status": self.status_label,
                "progress": self.progress_text,
                "outcomes": self.outcomes_text,
                "failed": formatting.integer(self.outcomes.failed),
                "not_run": self.not_run_text,
                "tokens": formatting.integer(self.total_tokens),
                "cost": formatting.money(self.cost, self.currency),
                "hit_rate": formatting.percent(self.hit_rate),
                "eta": formatting.duration(self.eta) if self.eta is not None else "—",
            },
        }


def _eta(batch: Batch, outcomes: RequestOutcomes, now: datetime) -> timedelta | None:
    answered = outcomes.completed + outcomes.failed
    if batch.status != BatchStatus.IN_PROGRESS or batch.in_progress_at is None or answered == 0:
        return None
    elapsed = now - batch.in_progress_at
    return elapsed * outcomes.pending / answered


def progress_of(session: Session, batch: Batch, now: datetime) -> BatchProgress:
    """The dashboard's view of ``batch`` at ``now`` (reads its recorded lines for the cost)."""
    return progress_of_all(session, [batch], now)[0]


def progress_of_all(session: Session, batches: list[Batch], now: datetime) -> list[BatchProgress]:
    """``progress_of`` each of ``batches``, reading their costs in one query and their outcomes in another."""
    costs = batch_costs_so_far(session, [batch.id for batch in batches])
    outcomes = request_outcomes(session, batches)
    progress = []
    for batch in batches:
        cost = costs[batch.id]
        progress.append(
            BatchProgress(
                batch=batch,
                outcomes=outcomes[batch.id],
                cost=cost.amount,
                currency=cost.currency,
                eta=_eta(batch, outcomes[batch.id], now),
            )
        )
    return progress
