"""ORM models: accounts and keys, files, batches, per-request results, the usage ledger and billing.

Timestamps are timezone-aware UTC ``datetime`` values in Python on every backend. Public ids
are strings shaped like OpenAI's (``file-...``, ``batch_...``); ledger rows use integer keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from hybatch import ids

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 64
MAX_CUSTOM_ID_CHARS = 512


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC values (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


def _enum_column(enum_type: type[StrEnum]) -> sa.Enum:
    return sa.Enum(
        enum_type,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
    )


class FilePurpose(StrEnum):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"


class FileStatus(StrEnum):
    UPLOADED = "uploaded"
    PROCESSED = "processed"
    ERROR = "error"


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (
            BatchStatus.COMPLETED,
            BatchStatus.FAILED,
            BatchStatus.EXPIRED,
            BatchStatus.CANCELLED,
        )


class ShardStatus(StrEnum):
    PENDING = "pending"  # published (or to be), no live lease
    RUNNING = "running"  # a worker holds the lease; an expired lease makes it runnable again
    DONE = "done"  # every request of the shard is recorded


class BatchEndpoint(StrEnum):
    CHAT_COMPLETIONS = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"
    RESPONSES = "/v1/responses"
    EMBEDDINGS = "/v1/embeddings"
    MESSAGES = "/v1/messages"  # Anthropic Message Batches (hybatch.message_batches)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True, default=ids.new_account_id)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class TokenQuota(Base):
    """An account's own limit on enqueued prompt tokens for one model (else the settings' default)."""

    __tablename__ = "token_quotas"

    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    enqueued_prompt_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class WebhookEndpoint(Base):
    """Where an account's batch events are sent, signed with ``secret`` (hybatch.webhooks)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(sa.String(200))
    url: Mapped[str] = mapped_column(sa.String(2048))
    event_types: Mapped[list[str]] = mapped_column(sa.JSON())
    secret: Mapped[str] = mapped_column(sa.String(128))  # whsec_<base64>, shown once
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    deleted_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One event for one endpoint, sent until it is answered 2xx or a day has passed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.Index("ix_webhook_deliveries_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)  # the webhook-id header
    endpoint_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_endpoints.id"), index=True)
    event_type: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; ``prefix`` is the visible start of the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True, default=ids.new_api_key_id)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(32), unique=True)
    key_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    revoked_at: Mapped[datetime | None]


class File(Base):
    """An uploaded input file or a batch's output/error file; the bytes live in FileStorage."""

    __tablename__ = "files"
    __table_args__ = (
        sa.Index("ix_files_account_created", "account_id", "created_at"),
        sa.Index("ix_files_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True, default=ids.new_file_id)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    purpose: Mapped[FilePurpose] = mapped_column(_enum_column(FilePurpose))
    status: Mapped[FileStatus] = mapped_column(_enum_column(FileStatus), default=FileStatus.PROCESSED)
    size_bytes: Mapped[int] = mapped_column("bytes", sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    deleted_at: Mapped[datetime | None]
    # After this the file answers 404 like a deleted one, and a sweep deletes it (hybatch.files).
    expires_at: Mapped[datetime | None]


class Batch(Base):
    """A batch job, field for field as OpenAI's Batch object (plus ``claimed_at`` and a lease).

    ``claimed_at`` is set by the worker when it starts on a ``validating`` batch; a cancel
    that finds it unset may finish the batch itself (see ``hybatch.batches.cancel_batch``).
    ``lease_owner`` / ``lease_expires_at`` belong to the worker doing the batch's own work
    (validating and cutting it into shards, or ending it); the shards have leases of their own
    (``BatchShard``). See ``hybatch.leases``.
    """

    __tablename__ = "batches"
    __table_args__ = (sa.Index("ix_batches_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True, default=ids.new_batch_id)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id"))
    endpoint: Mapped[BatchEndpoint] = mapped_column(_enum_column(BatchEndpoint))
    model: Mapped[str] = mapped_column(sa.String(200))
    input_file_id: Mapped[str] = mapped_column(sa.ForeignKey("files.id"), index=True)
    completion_window: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[BatchStatus] = mapped_column(_enum_column(BatchStatus), default=BatchStatus.VALIDATING)
    output_file_id: Mapped[str | None] = mapped_column(sa.ForeignKey("files.id"))
    error_file_id: Mapped[str | None] = mapped_column(sa.ForeignKey("files.id"))

    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    # Set by DELETE /v1/messages/batches/{id}: the row stays (its usage records point at it).
    deleted_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]  # when a task for the batch's own work was last sent

    total_requests: Mapped[int] = mapped_column(default=0)
    completed_requests: Mapped[int] = mapped_column(default=0)
    failed_requests: Mapped[int] = mapped_column(default=0)

    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", sa.JSON())
    # ``output_expires_after.seconds``: the output and error files expire this long after they are
    # written; None keeps them until deleted.
    output_expires_after_s: Mapped[int | None]
    # Prompt tokens of the input, counted at creation where a token quota applies (None: none did);
    # what an unfinished batch holds of its account's enqueued-token quota (hybatch.quotas).
    quota_prompt_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    # errors: list of {code, line, message, param}; None when there are none.
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON())

    # Batch-level usage, summed over finished requests: input = cached + computed prompt tokens.
    input_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Prefix-cache counters of this batch's engine work (worker.kv_cache.metrics), summed over runs.
    cache_metrics: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())


class BatchShard(Base):
    """A slice of a batch's requests (contiguous in the prompt tree's depth-first order), run as one task.

    Its validated requests live in file storage under ``input_key``. A worker runs it only while it
    holds the lease (``lease_owner`` until ``lease_expires_at``, renewed between engine steps);
    ``published_at`` is when a task for it was last sent, so sweepers do not send it twice.
    """

    __tablename__ = "batch_shards"
    # The sweepers' question: which unfinished shards have a stale lease or publication.
    __table_args__ = (
        sa.Index("ix_batch_shards_status", "status"),
        # Cache affinity's question: which worker last ran a shard starting with this prefix.
        sa.Index("ix_batch_shards_affinity_key", "affinity_key"),
    )

    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.id"), primary_key=True)
    shard_index: Mapped[int] = mapped_column(primary_key=True)
    num_requests: Mapped[int]
    # True where this shard and the previous one are one subtree of the prompt tree cut in two (they
    # share at least a KV block of prompt): a worker that ran the previous one holds that prefix in
    # its cache and should run this one next (worker.shard_job).
    continues_previous: Mapped[bool] = mapped_column(default=False)
    input_key: Mapped[str] = mapped_column(sa.String(ID_LENGTH * 2))
    status: Mapped[ShardStatus] = mapped_column(_enum_column(ShardStatus), default=ShardStatus.PENDING)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # leases taken, the first run included
    published_at: Mapped[datetime | None]
    # The worker whose own queue the last task went to (its cache likely holds the shard's prefix:
    # worker.affinity); None when it went to the shared queue. A routed shard left untaken for
    # AFFINITY_WAIT_S is sent to the shared queue (hybatch.stale_work).
    routed_to: Mapped[str | None] = mapped_column(sa.String(128))
    # A hash of the account and the first prompt tokens of the shard's first request
    # (worker.affinity), and the lease owner that finished it: the worker whose cache that prefix is in.
    affinity_key: Mapped[str | None] = mapped_column(sa.String(32))
    done_by: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    done_at: Mapped[datetime | None]


class Worker(Base):
    """A live worker process and the queue that reaches it alone (hybatch.worker_registry).

    Registered when it starts consuming, seen again by its sweeper thread, removed when it stops;
    one not seen for two leases counts as gone. ``lease_owner`` is the name on its leases.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    queue: Mapped[str] = mapped_column(sa.String(200))
    lease_owner: Mapped[str] = mapped_column(sa.String(128))
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    seen_at: Mapped[datetime] = mapped_column(default=utc_now)


class BatchRequestResult(Base):
    """One finished request of a batch: the exact line for the output or the error file."""

    __tablename__ = "batch_request_results"
    __table_args__ = (sa.UniqueConstraint("batch_id", "custom_id"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.id"))
    custom_id: Mapped[str] = mapped_column(sa.String(MAX_CUSTOM_ID_CHARS))
    line_number: Mapped[int]  # 1-based line of the request in the input file
    is_error: Mapped[bool] = mapped_column(default=False)  # True: goes to the error file
    line: Mapped[dict[str, Any]] = mapped_column(sa.JSON())  # {id, custom_id, response, error}
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class DecimalText(TypeDecorator[Decimal]):
    """An exact decimal stored as text, so SQLite never turns money into a binary float."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: sa.Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TypeError(f"a money column takes a finite Decimal, not {value!r}")
        return format(value, "f")

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UsageRecord(Base):
    """The usage ledger: one row per finished request, written with its result row, with its tokens
    and what it cost then. Readers of usage and cost read this table, never the result lines."""

    __tablename__ = "usage_records"
    __table_args__ = (
        sa.UniqueConstraint("batch_id", "custom_id"),
        sa.Index("ix_usage_records_account_created", "account_id", "created_at"),
        sa.CheckConstraint(
            "prompt_tokens = cache_hit_input_tokens + cache_miss_input_tokens", name="prompt_split"
        ),
        sa.CheckConstraint(
            "cache_hit_input_tokens >= 0 AND cache_miss_input_tokens >= 0 AND output_tokens >= 0",
            name="non_negative",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(sa.ForeignKey("api_keys.id"))
    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.id"))
    custom_id: Mapped[str] = mapped_column(sa.String(MAX_CUSTOM_ID_CHARS))
    model: Mapped[str] = mapped_column(sa.String(200))
    cache_hit_input_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    cache_miss_input_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    output_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    # What the request cost when it was recorded (its line's ``x_billing`` is rendered from the same
    # values): the marginal price at the month-to-date tier, unrounded major units. All three are
    # None for a request no price schedule could price. The month's invoice re-rates the tokens.
    amount: Mapped[Decimal | None] = mapped_column(DecimalText())
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    price_version: Mapped[str | None] = mapped_column(sa.String(130))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


# -- billing -------------------------------------------------------------------------------------
# Written and read by the ``billing`` package; the core only declares the tables. Money columns:
# ``*_minor`` are integer minor units (cents); decimal amounts and prices are exact decimal strings.


class InvoiceStatus(StrEnum):
    OPEN = "open"  # finalized: lines and totals never change again
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    VOID = "void"


class PriceScheduleVersion(Base):
    """One immutable version of a named price schedule; ``document`` is its validated body."""

    __tablename__ = "price_schedule_versions"
    __table_args__ = (
        sa.UniqueConstraint("schedule", "version"),
        sa.UniqueConstraint("schedule", "effective_from"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[str] = mapped_column(sa.String(64))
    currency: Mapped[str] = mapped_column(sa.String(3))
    effective_from: Mapped[datetime]
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    content_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class PriceScheduleAssignment(Base):
    """From ``effective_from`` on, the account is priced by ``schedule`` (else by the default)."""

    __tablename__ = "price_schedule_assignments"
    __table_args__ = (sa.UniqueConstraint("account_id", "effective_from"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    schedule: Mapped[str] = mapped_column(sa.String(64))
    effective_from: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class BillingPeriodClose(Base):
    """A closed month (``YYYY-MM``): its invoices exist; usage dated in it now counts as late."""

    __tablename__ = "billing_period_closes"

    period: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    closed_at: Mapped[datetime] = mapped_column(default=utc_now)


class Invoice(Base):
    """One account's invoice for one month; created finalized, its money never changes."""

    __tablename__ = "invoices"
    __table_args__ = (sa.UniqueConstraint("account_id", "period"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    period: Mapped[str] = mapped_column(sa.String(7))
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[InvoiceStatus] = mapped_column(_enum_column(InvoiceStatus), default=InvoiceStatus.OPEN)
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)  # = sum of the lines' amount_minor
    total_amount: Mapped[Decimal] = mapped_column(DecimalText())  # unrounded, = the ledger's priced total
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    finalized_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    payment_failed_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    stripe_invoice_id: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    stripe_finalized_at: Mapped[datetime | None]


class InvoiceLine(Base):
    """Tokens of one (origin period, price version, model, token class, context tier, price tier)."""

    __tablename__ = "invoice_lines"
    __table_args__ = (sa.UniqueConstraint("invoice_id", "line_number"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id"))
    line_number: Mapped[int]  # 1-based, stable: Stripe idempotency keys are built from it
    origin_period: Mapped[str] = mapped_column(sa.String(7))  # != the invoice's period: late usage
    is_adjustment: Mapped[bool] = mapped_column(default=False)
    price_version: Mapped[str] = mapped_column(sa.String(130))
    model: Mapped[str] = mapped_column(sa.String(200))
    token_class: Mapped[str] = mapped_column(sa.String(32))
    context_tier: Mapped[str] = mapped_column(sa.String(64))
    price_tier: Mapped[int]  # 1-based row of the tier table
    # Set on a repricing line: these units were billed at that tier, and the month's volume (late
    # usage) moved a volume-mode table to ``price_tier``; ``unit_price`` is the difference.
    repriced_from_tier: Mapped[int | None]
    tokens: Mapped[int] = mapped_column(sa.BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText())  # per 1M tokens
    amount: Mapped[Decimal] = mapped_column(DecimalText())  # tokens * unit_price / 1M, exact
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)  # amount rounded once, ROUND_HALF_UP
    currency: Mapped[str] = mapped_column(sa.String(3))


class BilledUsage(Base):
    """Which invoice billed a usage record: the primary key makes billing a record twice impossible."""

    __tablename__ = "billed_usage"

    usage_record_id: Mapped[int] = mapped_column(
        BigIntKey, sa.ForeignKey("usage_records.id"), primary_key=True, autoincrement=False
    )
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id"), index=True)


class StripeCustomer(Base):
    __tablename__ = "stripe_customers"

    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class StripeInvoiceItem(Base):
    __tablename__ = "stripe_invoice_items"

    invoice_line_id: Mapped[int] = mapped_column(
        BigIntKey, sa.ForeignKey("invoice_lines.id"), primary_key=True, autoincrement=False
    )
    stripe_invoice_item_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class StripeEvent(Base):
    """A webhook event already handled (Stripe may deliver one more than once)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(100))
    invoice_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    outcome: Mapped[str] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(default=utc_now)


# -- prepaid credits and billing alerts (billing.credits, billing.limits) ---------------------------


class CreditGrant(Base):
    """Prepaid credit of an account, drawn down as its requests are recorded; never edited.

    Grants are drawn in order of ``priority`` (lower first), then the earliest ``expires_at`` (none
    last), then creation. What is left of a grant when it expires is forfeited.
    """

    __tablename__ = "credit_grants"
    __table_args__ = (sa.Index("ix_credit_grants_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)  # cg_...
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount: Mapped[Decimal] = mapped_column(DecimalText())  # major units, whole minor units
    # The exact sum of its draws, added to by each draw under the account's lock (billing.credits).
    drawn: Mapped[Decimal] = mapped_column(DecimalText(), default=Decimal(0), server_default="0")
    priority: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class CreditDraw(Base):
    """What one grant paid of one recorded request (exact, major units), written in the transaction
    that records the request's usage; the key makes a request draw from a grant once."""

    __tablename__ = "credit_draws"

    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.id"), primary_key=True)
    custom_id: Mapped[str] = mapped_column(sa.String(MAX_CUSTOM_ID_CHARS), primary_key=True)
    grant_id: Mapped[str] = mapped_column(sa.ForeignKey("credit_grants.id"), primary_key=True, index=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(DecimalText())
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class CreditHold(Base):
    """The worst-case cost of a request admitted on a prepaid account and not yet recorded; it
    counts against the balance while its batch is unfinished."""

    __tablename__ = "credit_holds"

    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.id"), primary_key=True)
    custom_id: Mapped[str] = mapped_column(sa.String(MAX_CUSTOM_ID_CHARS), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(DecimalText())
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class InvoiceCredit(Base):
    """Prepaid credit applied on an invoice: what the grants paid of the usage it bills, as one
    deduction rounded once. Immutable like the invoice (migration 0012), but for its Stripe item."""

    __tablename__ = "invoice_credits"

    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id"), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(DecimalText())  # exact, major units, >= 0
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)  # amount rounded once, ROUND_HALF_UP
    currency: Mapped[str] = mapped_column(sa.String(3))
    stripe_invoice_item_id: Mapped[str | None] = mapped_column(sa.String(255), unique=True)


class BillingAlert(Base):
    """A threshold an account crossed (low credit balance, credits used up, a spend limit), shown
    on the dashboard and sent to its webhooks; ``dedupe_key`` makes each crossing one alert."""

    __tablename__ = "billing_alerts"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "kind", "dedupe_key"),
        sa.Index("ix_billing_alerts_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)  # alert_...
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(sa.String(64))  # the webhook event type, e.g. credits.low_balance
    dedupe_key: Mapped[str] = mapped_column(sa.String(130))
    message: Mapped[str] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class SpendLimit(Base):
    """Monthly soft and hard spend limits of an account (``scope`` "account") or one of its API
    keys (``scope`` = the key's id), in the account's currency, major units (billing.limits)."""

    __tablename__ = "spend_limits"
    __table_args__ = (sa.UniqueConstraint("account_id", "scope"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    scope: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    currency: Mapped[str] = mapped_column(sa.String(3))
    soft: Mapped[Decimal | None] = mapped_column(DecimalText())
    hard: Mapped[Decimal | None] = mapped_column(DecimalText())
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class CreditNote(Base):
    """A correction of an issued invoice: money given back on some of its lines, with a reason.
    Never edited (migration 0014); an invoice's credit notes never give back more than it charged."""

    __tablename__ = "credit_notes"
    __table_args__ = (sa.UniqueConstraint("invoice_id", "number"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)  # cn_...
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id"), index=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"))
    number: Mapped[int]  # 1-based per invoice
    reason: Mapped[str] = mapped_column(sa.String(500))
    currency: Mapped[str] = mapped_column(sa.String(3))
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)  # = sum of its lines' amount_minor, > 0
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    stripe_credit_note_id: Mapped[str | None] = mapped_column(sa.String(255), unique=True)


class CreditNoteLine(Base):
    """What a credit note gives back of one invoice line, in minor units (billed money is whole)."""

    __tablename__ = "credit_note_lines"
    __table_args__ = (sa.UniqueConstraint("credit_note_id", "line_number"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    credit_note_id: Mapped[str] = mapped_column(sa.ForeignKey("credit_notes.id"), index=True)
    line_number: Mapped[int]  # 1-based within the credit note
    invoice_line_number: Mapped[int]  # the invoice line it corrects
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)  # > 0
