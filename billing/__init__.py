"""Billing: price schedules, rating, per-request cost, monthly invoices, Stripe sync, exports, usage.

The usage ledger (``hybatch.models.UsageRecord``) is the source of truth. Money is ``Decimal``
for rates and unrounded amounts and integer minor units for billed amounts, rounded once per
invoice line (``billing.money.round_to_minor``); no ``float`` ever touches it. See docs/billing.md.
"""
