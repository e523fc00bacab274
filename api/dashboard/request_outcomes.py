"""What became of a batch's requests: completed, failed, or never run (and why).

The batch row counts ``completed_requests`` and ``failed_requests``; the second, like OpenAI's
``request_counts.failed``, also holds the requests that never ran: when a batch is cancelled,
expires or fails, the worker writes each unfinished request as an error line with a code saying
so (``worker.jobs``), and ``metadata.max_cost`` skips requests the same way
(``worker.batch_generation``). ``request_outcomes`` reads those codes back so the dashboard can
show "1 completed, 299 cancelled" instead of "300 finished".
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.pricing.budget_cap import SKIPPED_BUDGET
from hybatch.models import Batch, BatchRequestResult

# Error codes of requests that never ran, as worker.jobs and worker.batch_generation write them.
CANCELLED, EXPIRED, BATCH_FAILED = "batch_cancelled", "batch_expired", "batch_failed"
NOT_RUN_CODES = (CANCELLED, EXPIRED, SKIPPED_BUDGET, BATCH_FAILED)


@dataclass(frozen=True)
class RequestOutcomes:
    """A batch's requests by outcome; ``failed`` ran (or were refused by the engine) and errored.

    ``completed + failed + not_run + pending == total``.
    """

    total: int
    completed: int
    failed: int
    cancelled: int = 0
    expired: int = 0
    skipped: int = 0  # left out to keep the batch under its metadata.max_cost
    abandoned: int = 0  # not run because the batch failed part-way

    @property
    def not_run(self) -> int:
        return self.cancelled + self.expired + self.skipped + self.abandoned

    @property
    def pending(self) -> int:
        """Requests not answered yet (only while the batch runs)."""
        return max(self.total - self.completed - self.failed - self.not_run, 0)

    def not_run_parts(self) -> list[tuple[int, str]]:
        """The non-zero reasons for requests that did not run, as (count, words)."""
        parts = [
            (self.cancelled, "cancelled"),
            (self.expired, "expired"),
            (self.skipped, "skipped (max_cost)"),
            (self.abandoned, "not run (batch failed)"),
        ]
        return [(count, words) for count, words in parts if count]


def request_outcomes(session: Session, batches: list[Batch]) -> dict[str, RequestOutcomes]:
    """``RequestOutcomes`` of each of ``batches`` by id, counting their not-run lines in one query.

    Only batches with error lines are queried: a batch still running has none of the not-run
    kind (they are written when it ends), so live polling stays a read of the batch rows.
    """
    with_errors = [batch.id for batch in batches if batch.failed_requests > 0]
    not_run: dict[str, dict[str, int]] = {batch_id: {} for batch_id in with_errors}
    if with_errors:
        code = BatchRequestResult.line[("error", "code")].as_string()
        rows = session.execute(
            sa.select(BatchRequestResult.batch_id, code, sa.func.count())
            .where(
                BatchRequestResult.batch_id.in_(with_errors),
                BatchRequestResult.is_error.is_(True),
                code.in_(NOT_RUN_CODES),
            )
            .group_by(BatchRequestResult.batch_id, code)
        )
        for batch_id, error_code, count in rows:
            not_run[batch_id][error_code] = count
    return {batch.id: _outcomes(batch, not_run.get(batch.id, {})) for batch in batches}


def _outcomes(batch: Batch, not_run: dict[str, int]) -> RequestOutcomes:
    counted = sum(not_run.values())
    return RequestOutcomes(
        total=batch.total_requests,
        completed=batch.completed_requests,
        failed=batch.failed_requests - counted,
        cancelled=not_run.get(CANCELLED, 0),
        expired=not_run.get(EXPIRED, 0),
        skipped=not_run.get(SKIPPED_BUDGET, 0),
        abandoned=not_run.get(BATCH_FAILED, 0),
    )
