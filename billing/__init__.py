"""Billing: ``pricing`` (schedules, rating, a request's cost), ``usage`` (the ledger read back),
``invoicing`` (drafts, the monthly close, exports) and ``payments`` (Stripe).

The usage ledger (``hybatch.models.UsageRecord``) is the source of truth. Money is ``Decimal``
for rates and unrounded amounts and integer minor units for billed amounts, rounded once per
invoice line (``billing.money.round_to_minor``); no ``float`` ever touches it. See docs/billing.md.
"""
