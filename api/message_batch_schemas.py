"""Request and response bodies of Anthropic's Message Batches API, field for field."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hybatch.message_batches import RequestCounts, ended_at, processing_status
from hybatch.models import Batch


class MessageBatchRequestIn(BaseModel):
    """One entry of ``requests``; ``params`` are checked as a whole batch (``hybatch.message_params``)."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str
    params: dict[str, Any]


class MessageBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[MessageBatchRequestIn]


class MessageBatchRequestCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatchObject(BaseModel):
    """Timestamps serialize as RFC 3339 strings (``2026-12-03T12:00:00.123456Z``)."""

    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchRequestCounts
    ended_at: datetime | None
    created_at: datetime
    expires_at: datetime
    archived_at: datetime | None = None
    cancel_initiated_at: datetime | None
    results_url: str | None

    @classmethod
    def from_row(cls, batch: Batch, counts: RequestCounts, results_url: str) -> MessageBatchObject:
        """``results_url`` is where this batch's results will be; shown once it has ended."""
        status = processing_status(batch)
        return cls(
            id=batch.id,
            processing_status=status,
            request_counts=MessageBatchRequestCounts(**asdict(counts)),
            ended_at=ended_at(batch),
            created_at=batch.created_at,
            expires_at=batch.expires_at,
            cancel_initiated_at=batch.cancelling_at,
            results_url=results_url if status == "ended" else None,
        )


class MessageBatchList(BaseModel):
    data: list[MessageBatchObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class MessageBatchDeleted(BaseModel):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"
