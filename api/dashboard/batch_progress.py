"""A batch as the dashboard shows it: progress, tokens, cost so far, hit rate and an ETA.

``progress_of`` reads only; the page renders the result and the live-update endpoint sends the
same fields, already formatted, so the browser only swaps text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from api.dashboard import formatting
from billing.request_cost import batch_costs_so_far
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


@dataclass(frozen=True)
class BatchProgress:
    batch: Batch
    finished_requests: int  # completed + failed
    total_requests: int
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
        if self.total_requests == 0:
            return 100 if self.batch.status.is_terminal else 0
        return int(100 * self.finished_requests / self.total_requests)

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
                "progress": f"{formatting.integer(self.finished_requests)} / "
                f"{formatting.integer(self.total_requests)}",
                "failed": formatting.integer(self.batch.failed_requests),
                "tokens": formatting.integer(self.total_tokens),
                "cost": formatting.money(self.cost, self.currency),
                "hit_rate": formatting.percent(self.hit_rate),
                "eta": formatting.duration(self.eta) if self.eta is not None else "—",
            },
        }


def _eta(batch: Batch, finished: int, now: datetime) -> timedelta | None:
    if batch.status != BatchStatus.IN_PROGRESS or batch.in_progress_at is None or finished == 0:
        return None
    elapsed = now - batch.in_progress_at
    remaining = max(batch.total_requests - finished, 0)
    return elapsed * remaining / finished


def progress_of(session: Session, batch: Batch, now: datetime) -> BatchProgress:
    """The dashboard's view of ``batch`` at ``now`` (reads its recorded lines for the cost)."""
    return progress_of_all(session, [batch], now)[0]


def progress_of_all(session: Session, batches: list[Batch], now: datetime) -> list[BatchProgress]:
    """``progress_of`` each of ``batches``, reading their costs in one query."""
    costs = batch_costs_so_far(session, [batch.id for batch in batches])
    progress = []
    for batch in batches:
        finished = batch.completed_requests + batch.failed_requests
        cost = costs[batch.id]
        progress.append(
            BatchProgress(
                batch=batch,
                finished_requests=finished,
                total_requests=batch.total_requests,
                cost=cost.amount,
                currency=cost.currency,
                eta=_eta(batch, finished, now),
            )
        )
    return progress
