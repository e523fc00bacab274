"""Every account's usage in a range, in one pass: the operators' overview.

One query over the range's usage records (with the cost each was recorded at, like
``GET /v1/usage``), summed per account. What the cache saved is left out here — it re-rates each
account's months — and shown on each account's own usage page.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.usage.buckets import account_currency, cost_columns
from billing.usage.tally import UsageTally, UsageTotals
from hybatch.models import Account, UsageRecord


@dataclass(frozen=True)
class AccountUsage:
    account_id: str
    account_name: str
    currency: str
    totals: UsageTotals  # saved_by_cache is None: not computed for the overview


def usage_by_account(session: Session, start: datetime, end: datetime) -> list[AccountUsage]:
    """Every account (those without usage too) with its usage created in ``[start, end)``; reads only.

    Sorted by cost, then total tokens (both descending), then name.
    """
    query = sa.select(
        UsageRecord.account_id,
        UsageRecord.cache_hit_input_tokens,
        UsageRecord.cache_miss_input_tokens,
        UsageRecord.output_tokens,
        *cost_columns(),
    )
    rows = session.execute(query.where(UsageRecord.created_at >= start, UsageRecord.created_at < end))
    tallies: dict[str, UsageTally] = defaultdict(UsageTally)
    for account_id, hit, miss, output, amount, currency in rows:
        tallies[account_id].add_request(hit, miss, output, amount, currency, None)
    accounts = session.execute(sa.select(Account.id, Account.name)).all()
    result = []
    for account_id, name in accounts:
        tally = tallies[account_id]
        totals = replace(tally.totals(), saved_by_cache=None)
        currency = tally.currency or account_currency(session, account_id, end)
        result.append(AccountUsage(account_id, name, currency, totals))
    return sorted(result, key=lambda row: (-row.totals.cost, -row.totals.total_tokens, row.account_name))
