"""A batch's money while it runs: the price on every output line, the budget cap and prepaid credit.

Prices come from ``billing`` (the marginal cost at the account's month-to-date tier, recorded on
the line as ``x_billing``; the month's invoice is authoritative). Two limits decide which requests
may start, both by a request's worst-case cost (every prompt token a cache miss plus ``max_tokens``
of output): a batch's ``metadata.max_cost`` (the recorded cost plus the worst case of every request
in flight stays within it) and, for a prepaid account, its credit (the worst case is held against
the balance, ``billing.credits.holds``; the real cost is drawn when the request is recorded, in the
same transaction); and the hard monthly spend limits of the account and the batch's key (the same
holds count against them, ``billing.limits``). Every request that fits is admitted, in the batch's
order; one that does not waits for the running ones to settle and is tried again; those that still
do not fit once nothing runs end as ``skipped_budget``, ``insufficient_credits`` or
``spend_limit_reached`` error lines (no usage, not billed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from billing.alerts import check_credit_alerts, check_soft_limits
from billing.credits.balance import is_prepaid
from billing.credits.drawdown import draw_credits
from billing.credits.holds import INSUFFICIENT_CREDITS, hold_credit, release_hold
from billing.limits.spend_limits import SPEND_LIMIT_REACHED, LimitState, limit_states, limits_in_force
from billing.pricing.budget_cap import SKIPPED_BUDGET, parse_max_cost, should_skip, worst_case_cost
from billing.pricing.request_cost import X_BILLING, RequestCost, batch_cost_so_far, price_request
from billing.pricing.schedule_store import price_book
from billing.settings import get_billing_settings
from hybatch.batch_input import BatchRequest
from hybatch.batch_results import usage_model
from hybatch.errors import HybatchError
from hybatch.models import Batch, utc_now
from hybatch.result_lines import TokenUsage

log = logging.getLogger(__name__)

__all__ = ["INSUFFICIENT_CREDITS", "SKIPPED_BUDGET", "SPEND_LIMIT_REACHED", "X_BILLING", "BatchCosting"]


@dataclass
class BatchCosting:
    session: Session
    batch: Batch
    max_cost: Decimal | None
    is_prepaid: bool
    has_limits: bool  # soft or hard spend limits apply (of the account or the batch's key)
    has_hard_limit: bool
    low_balance: Decimal  # credit alerts at or below this balance, major units
    spent: Decimal = Decimal(0)
    in_flight: dict[str, Decimal] = field(default_factory=dict)  # custom_id -> worst case
    refused: dict[str, str] = field(default_factory=dict)  # custom_id -> why it waits (an error code)
    # The spend limits as read at the last admission (each reads the month's ledger once), what this
    # shard recorded since, and the scopes whose soft limit is known to be reached.
    limits: list[LimitState] = field(default_factory=list)
    recorded_since: Decimal = Decimal(0)
    soft_reached: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, session: Session, batch: Batch) -> BatchCosting:
        """Reads the cap (a bad ``max_cost`` raises ValueError), whether the account is prepaid and
        what the batch already cost."""
        max_cost = parse_max_cost(batch.metadata_)
        spent = batch_cost_so_far(session, batch.id).amount
        prepaid = is_prepaid(session, batch.account_id)
        has_limits, has_hard = limits_in_force(session, batch.account_id, batch.api_key_id)
        low_balance = get_billing_settings().credit_low_balance
        return cls(session, batch, max_cost, prepaid, has_limits, has_hard, low_balance, spent)

    @property
    def holds(self) -> bool:
        """Admission holds worst cases in the database (credit or a hard limit is in force)."""
        return self.is_prepaid or self.has_hard_limit

    def admit(self, requests: list[BatchRequest]) -> tuple[list[BatchRequest], list[BatchRequest]]:
        """Splits ``requests`` (in order) into those that may start now and those that must wait.

        Without a cap or credit everything starts. Otherwise every request whose worst case still
        fits beside the running ones starts, in order, skipping over those that do not (a long prompt
        early in the batch must not hold back the short ones after it); those wait for the running
        ones to settle (their real cost is usually below the worst case) and are offered again.
        On a prepaid account the admitted requests' holds are committed here.
        """
        if self.has_limits:
            self.limits = limit_states(self.session, self.batch.account_id, self.batch.api_key_id)
            self.recorded_since = Decimal(0)
        if self.max_cost is None and not self.holds:
            return list(requests), []
        version = price_book(self.session, self.batch.account_id).at(utc_now())
        fits_cap: list[tuple[BatchRequest, Decimal]] = []
        in_flight = sum(self.in_flight.values(), Decimal(0))
        for request in requests:
            worst = self._worst_case(version, request)
            if should_skip(self.spent, in_flight + worst, self.max_cost):
                self.refused[request.custom_id] = SKIPPED_BUDGET
                continue
            in_flight += worst
            fits_cap.append((request, worst))
        held = {request.custom_id for request, _ in fits_cap}
        refused: dict[str, str] = {}
        if self.holds and fits_cap:
            result = hold_credit(
                self.session,
                account_id=self.batch.account_id,
                batch_id=self.batch.id,
                api_key_id=self.batch.api_key_id,
                candidates=[(request.custom_id, worst) for request, worst in fits_cap],
            )
            self.session.commit()  # ends the account lock; a hold alone is harmless if the lease is lost
            held, refused = set(result.held), result.refused
        for request, worst in fits_cap:
            if request.custom_id in held:
                self.in_flight[request.custom_id] = worst
                self.refused.pop(request.custom_id, None)
            else:
                self.refused[request.custom_id] = refused[request.custom_id]
        admitted = [request for request in requests if request.custom_id in self.in_flight]
        waiting = [request for request in requests if request.custom_id not in self.in_flight]
        return admitted, waiting

    def refusal(self, request: BatchRequest) -> tuple[str, str]:
        """The error code and message of a request that never fitted."""
        reason = self.refused.get(request.custom_id)
        if reason == INSUFFICIENT_CREDITS:
            return (
                INSUFFICIENT_CREDITS,
                "Skipped: its worst-case cost is more than the account's credit balance.",
            )
        if reason == SPEND_LIMIT_REACHED:
            return SPEND_LIMIT_REACHED, "Skipped: its worst-case cost could pass a monthly hard spend limit."
        return SKIPPED_BUDGET, f"Skipped: running it could pass the batch's max_cost of {self.max_cost}."

    def _worst_case(self, version, request: BatchRequest) -> Decimal:
        generation = request.generation
        try:
            return worst_case_cost(
                version, usage_model(self.batch), len(generation.prompt_token_ids), generation.max_tokens
            )
        except HybatchError:
            if self.max_cost is not None:
                raise
            return Decimal(0)  # a model no schedule prices is never billed, so it draws no credit

    def price(self, request: BatchRequest, usage: TokenUsage) -> RequestCost | None:
        """The cost of a finished request (None when no schedule prices the model); on a prepaid
        account also draws it from the credit (and drops its hold) in the session's transaction,
        which must be the one that records the request."""
        self.in_flight.pop(request.custom_id, None)
        try:
            cost = price_request(
                self.session, account_id=self.batch.account_id, model=usage_model(self.batch), usage=usage
            )
        except HybatchError as error:
            log.warning("batch %s: request %s is not priced: %s", self.batch.id, request.custom_id, error)
            if self.holds:
                release_hold(self.session, self.batch.id, request.custom_id)
            return None
        self.spent += cost.amount
        if self.has_limits:
            self._check_soft_limits(cost)
        if self.has_hard_limit and not self.is_prepaid:
            release_hold(self.session, self.batch.id, request.custom_id)  # its cost is now spent
        if self.is_prepaid:
            drawdown = draw_credits(
                self.session,
                account_id=self.batch.account_id,
                batch_id=self.batch.id,
                custom_id=request.custom_id,
                amount=cost.amount,
                currency=cost.currency,
            )
            if drawdown is not None:
                check_credit_alerts(self.session, drawdown.after, self.low_balance)
        return cost

    def _check_soft_limits(self, cost: RequestCost) -> None:
        """Soft limits against the spend read at admission plus what this shard recorded since:
        exact for one shard; with several running at once an alert may come a few requests late."""
        self.recorded_since += cost.amount
        pending = [
            state
            for state in self.limits
            if state.currency == cost.currency
            and state.soft is not None
            and state.scope not in self.soft_reached
        ]
        check_soft_limits(self.session, self.batch.account_id, pending, self.recorded_since)
        self.soft_reached |= {
            state.scope for state in pending if state.spent + self.recorded_since >= state.soft
        }

    def settle(self, request: BatchRequest) -> None:
        """A request that ended without output (an error line) costs nothing."""
        self.in_flight.pop(request.custom_id, None)
        if self.holds:
            release_hold(self.session, self.batch.id, request.custom_id)
