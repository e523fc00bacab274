"""Request and response bodies, field for field as OpenAI's Files and Batches objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from hybatch.models import Batch, File, WebhookEndpoint
from hybatch.quotas import QuotaState
from hybatch.webhooks import secret_hint

Item = TypeVar("Item")


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def optional_unix_seconds(moment: datetime | None) -> int | None:
    return None if moment is None else unix_seconds(moment)


class ListPage(BaseModel, Generic[Item]):
    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, items: list[Any], has_more: bool) -> ListPage[Any]:
        return cls(
            data=items,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
            has_more=has_more,
        )


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: str
    status_details: str | None = None

    @classmethod
    def from_row(cls, file: File) -> FileObject:
        return cls(
            id=file.id,
            bytes=file.size_bytes,
            created_at=unix_seconds(file.created_at),
            expires_at=None if file.expires_at is None else unix_seconds(file.expires_at),
            filename=file.filename,
            purpose=file.purpose.value,
            status=file.status.value,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ExpiresAfter(BaseModel):
    """OpenAI's expiration policy: ``seconds`` (an hour to 30 days) after ``anchor`` (created_at)."""

    model_config = ConfigDict(extra="forbid")

    anchor: str
    seconds: int


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str | None
    line: int | None
    message: str | None
    param: str | None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class InputTokensDetails(BaseModel):
    cached_tokens: int


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    usage: BatchUsage

    @classmethod
    def from_row(cls, batch: Batch) -> BatchObject:
        errors = None
        if batch.errors:
            errors = BatchErrors(data=[BatchError.model_validate(error) for error in batch.errors])
        return cls(
            id=batch.id,
            endpoint=batch.endpoint.value,
            model=batch.model,
            errors=errors,
            input_file_id=batch.input_file_id,
            completion_window=batch.completion_window,
            status=batch.status.value,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            created_at=unix_seconds(batch.created_at),
            in_progress_at=optional_unix_seconds(batch.in_progress_at),
            expires_at=unix_seconds(batch.expires_at),
            finalizing_at=optional_unix_seconds(batch.finalizing_at),
            completed_at=optional_unix_seconds(batch.completed_at),
            failed_at=optional_unix_seconds(batch.failed_at),
            expired_at=optional_unix_seconds(batch.expired_at),
            cancelling_at=optional_unix_seconds(batch.cancelling_at),
            cancelled_at=optional_unix_seconds(batch.cancelled_at),
            request_counts=RequestCounts(
                total=batch.total_requests,
                completed=batch.completed_requests,
                failed=batch.failed_requests,
            ),
            metadata=batch.metadata_,
            usage=BatchUsage(
                input_tokens=batch.input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=batch.cached_input_tokens),
                output_tokens=batch.output_tokens,
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                total_tokens=batch.input_tokens + batch.output_tokens,
            ),
        )


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class QuotaObject(BaseModel):
    """One model's enqueued-token quota: ``limit`` None means none; ``remaining`` = limit - enqueued."""

    object: Literal["quota"] = "quota"
    model: str
    enqueued_prompt_tokens: int
    limit: int | None
    remaining: int | None

    @classmethod
    def from_state(cls, state: QuotaState) -> QuotaObject:
        return cls(
            model=state.model,
            enqueued_prompt_tokens=state.enqueued,
            limit=state.limit,
            remaining=state.remaining,
        )


class QuotaList(BaseModel):
    object: Literal["list"] = "list"
    data: list[QuotaObject]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    name: str | None = None
    event_types: list[str] | None = None  # None: every batch event


class WebhookEndpointObject(BaseModel):
    """OpenAI's WebhookEndpoint; ``signing_secret`` only in the answer to its creation."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret: str | None = None
    signing_secret_hint: str
    updated_at: int

    @classmethod
    def from_row(
        cls, endpoint: WebhookEndpoint, *, signing_secret: str | None = None
    ) -> WebhookEndpointObject:
        return cls(
            id=endpoint.id,
            created_at=unix_seconds(endpoint.created_at),
            event_types=list(endpoint.event_types),
            name=endpoint.name,
            url=endpoint.url,
            signing_secret=signing_secret,
            signing_secret_hint=secret_hint(endpoint.secret),
            updated_at=unix_seconds(endpoint.created_at),
        )


class DeletedWebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True
