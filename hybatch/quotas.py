"""Enqueued-token quotas: how many prompt tokens an account may have waiting in unfinished batches.

As OpenAI's batch limits: per account and model, the prompt tokens of every batch not yet ended
count against a limit, and a batch that would pass it is refused at creation with
``token_limit_exceeded``. The limit is the account's own (``TokenQuota``, set with
``hybatch quotas set``) or else ``HYBATCH_ENQUEUED_TOKEN_LIMIT``; with neither there is none, and
nothing is counted. A batch's prompt tokens are counted at creation exactly as the worker's
validation will count them (the checkpoint's tokenizer and chat template) and kept on the batch
(``quota_prompt_tokens``) until it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.batch_input import validate_batch_input
from hybatch.batch_lifecycle import UNFINISHED
from hybatch.errors import InvalidRequestError
from hybatch.models import Batch, BatchEndpoint, TokenQuota, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer

TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"


@dataclass(frozen=True)
class QuotaState:
    """An account's enqueued-token quota for one model: its limit (None: none) and what is enqueued."""

    model: str
    limit: int | None
    enqueued: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.enqueued)


def token_limit(session: Session, account_id: str, model: str, default: int | None) -> int | None:
    """The account's own limit for ``model``, else ``default`` (the settings'); None: no limit."""
    own = session.scalar(
        sa.select(TokenQuota.enqueued_prompt_tokens).where(
            TokenQuota.account_id == account_id, TokenQuota.model == model
        )
    )
    return default if own is None else own


def enqueued_tokens(session: Session, account_id: str, model: str) -> int:
    """Prompt tokens of the account's unfinished batches for ``model`` (those counted at creation)."""
    total = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Batch.quota_prompt_tokens), 0)).where(
            Batch.account_id == account_id, Batch.model == model, Batch.status.in_(UNFINISHED)
        )
    )
    return int(total or 0)


def quota_state(session: Session, account_id: str, model: str, default: int | None) -> QuotaState:
    return QuotaState(
        model, token_limit(session, account_id, model, default), enqueued_tokens(session, account_id, model)
    )


def count_prompt_tokens(
    chunks: Iterable[bytes],
    *,
    endpoint: BatchEndpoint,
    model: str,
    tokenizer: PromptTokenizer,
    max_requests: int,
) -> int:
    """Prompt tokens of an input file as validation counts them (0 for a file that fails it: the
    worker fails such a batch at once, so it holds nothing for long)."""
    batch_input = validate_batch_input(
        chunks, endpoint=endpoint, served_model=model, tokenizer=tokenizer, max_requests=max_requests
    )
    return sum(len(request.generation.prompt_token_ids) for request in batch_input.requests)


def check_room(state: QuotaState, prompt_tokens: int) -> None:
    """Raises InvalidRequestError ``token_limit_exceeded`` when ``prompt_tokens`` more do not fit."""
    if state.limit is not None and state.enqueued + prompt_tokens > state.limit:
        raise InvalidRequestError(
            f"Enqueued token limit reached for {state.model}: this batch has {prompt_tokens:,} prompt tokens, "
            f"{state.enqueued:,} are enqueued in unfinished batches and the limit is {state.limit:,}. "
            "Wait for batches to finish, then try again.",
            param="input_file_id",
            code=TOKEN_LIMIT_EXCEEDED,
        )


def set_token_limit(session: Session, account_id: str, model: str, tokens: int | None) -> None:
    """Give the account its own limit for ``model`` (None: back to the default); does not commit."""
    session.execute(
        sa.delete(TokenQuota).where(TokenQuota.account_id == account_id, TokenQuota.model == model)
    )
    if tokens is not None:
        if tokens < 0:
            raise InvalidRequestError(
                "a token limit cannot be negative", param="tokens", code="invalid_value"
            )
        session.add(
            TokenQuota(
                account_id=account_id, model=model, enqueued_prompt_tokens=tokens, updated_at=utc_now()
            )
        )
