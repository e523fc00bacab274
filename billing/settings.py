"""Billing settings, read once from ``HYBATCH_*`` environment variables (frozen).

``HYBATCH_STRIPE_API_KEY`` enables pushing invoices to Stripe; ``HYBATCH_STRIPE_WEBHOOK_SECRET``
(``whsec_...``) enables the webhook; ``HYBATCH_STRIPE_API_BASE`` points the SDK elsewhere than
``https://api.stripe.com`` (a local test server). ``HYBATCH_CREDIT_LOW_BALANCE`` (major units of
the account's credit currency, default 1.00): a prepaid account's balance at or below it is alerted.

``HYBATCH_INVOICE_ISSUER``: who sends invoices (name and address, lines separated by ``\n``),
printed at the top of invoice PDFs.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HYBATCH_", frozen=True, extra="ignore")

    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1)  # older signatures are refused
    invoice_issuer: str | None = None
    credit_low_balance: Decimal = Field(default=Decimal("1.00"), ge=0)


@lru_cache(maxsize=1)
def get_billing_settings() -> BillingSettings:
    """The process-wide billing settings, read from the environment on first use."""
    return BillingSettings()
