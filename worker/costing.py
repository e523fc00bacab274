"""A batch's money while it runs: the price on every output line and the optional budget cap.

Prices come from ``billing`` (the marginal cost at the account's month-to-date tier, recorded on
the line as ``x_billing``; the month's invoice is authoritative). A batch may carry
``metadata.max_cost``: a request is admitted only while the recorded cost plus the worst case of
every request in flight stays within it. Every request that fits is admitted, in the batch's order;
one that does not waits for the running ones to settle and is tried again; those that still do not
fit once nothing runs are skipped (``skipped_budget`` error lines, no usage, not billed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from billing.pricing.budget_cap import SKIPPED_BUDGET, parse_max_cost, should_skip, worst_case_cost
from billing.pricing.request_cost import X_BILLING, RequestCost, batch_cost_so_far, price_request
from billing.pricing.schedule_store import price_book
from hybatch.batch_input import BatchRequest
from hybatch.batch_results import usage_model
from hybatch.errors import HybatchError
from hybatch.models import Batch, utc_now
from hybatch.result_lines import TokenUsage

log = logging.getLogger(__name__)

__all__ = ["SKIPPED_BUDGET", "X_BILLING", "BatchCosting"]


@dataclass
class BatchCosting:
    session: Session
    batch: Batch
    max_cost: Decimal | None
    spent: Decimal = Decimal(0)
    in_flight: dict[str, Decimal] = field(default_factory=dict)  # custom_id -> worst case

    @classmethod
    def open(cls, session: Session, batch: Batch) -> BatchCosting:
        """Reads the cap (a bad ``max_cost`` raises ValueError) and what the batch already cost."""
        max_cost = parse_max_cost(batch.metadata_)
        spent = batch_cost_so_far(session, batch.id).amount
        return cls(session, batch, max_cost, spent)

    def admit(self, requests: list[BatchRequest]) -> tuple[list[BatchRequest], list[BatchRequest]]:
        """Splits ``requests`` (in order) into those that may start now and those that must wait.

        Without a cap everything starts. With one, every request whose worst case still fits beside
        the running ones starts, in order, skipping over those that do not (a long prompt early in
        the batch must not hold back the short ones after it); those wait for the running ones to
        settle (their real cost is usually below the worst case) and are offered again.
        """
        if self.max_cost is None:
            return list(requests), []
        version = price_book(self.session, self.batch.account_id).at(utc_now())
        admitted: list[BatchRequest] = []
        waiting: list[BatchRequest] = []
        in_flight = sum(self.in_flight.values(), Decimal(0))
        for request in requests:
            generation = request.generation
            worst = worst_case_cost(
                version, usage_model(self.batch), len(generation.prompt_token_ids), generation.max_tokens
            )
            if should_skip(self.spent, in_flight + worst, self.max_cost):
                waiting.append(request)
                continue
            self.in_flight[request.custom_id] = worst
            in_flight += worst
            admitted.append(request)
        return admitted, waiting

    def price(self, request: BatchRequest, usage: TokenUsage) -> RequestCost | None:
        """The cost of a finished request (None when no schedule prices the model)."""
        self.in_flight.pop(request.custom_id, None)
        try:
            cost = price_request(
                self.session, account_id=self.batch.account_id, model=usage_model(self.batch), usage=usage
            )
        except HybatchError as error:
            log.warning("batch %s: request %s is not priced: %s", self.batch.id, request.custom_id, error)
            return None
        self.spent += cost.amount
        return cost

    def settle(self, request: BatchRequest) -> None:
        """A request that ended without output (an error line) costs nothing."""
        self.in_flight.pop(request.custom_id, None)
