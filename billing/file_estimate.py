"""The price preview of an uploaded input file: read it, validate it as the worker will, estimate."""

from __future__ import annotations

from sqlalchemy.orm import Session

from billing.preview import CostEstimate, PreviewRequest, estimate_for_account
from hybatch import files
from hybatch.batch_input import validate_batch_input
from hybatch.errors import InvalidRequestError
from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.settings import Settings
from hybatch.storage import FileStorage

MAX_REPORTED_ERRORS = 5


def estimate_file(
    session: Session,
    storage: FileStorage,
    settings: Settings,
    *,
    account_id: str,
    input_file_id: str,
    endpoint: str,
) -> CostEstimate:
    """Estimate the cost of a batch over ``input_file_id``; raises InvalidRequestError (400) or
    NotFoundError (404, also for another account's file). Reads only."""
    try:
        batch_endpoint = BatchEndpoint(endpoint)
    except ValueError as error:
        supported = ", ".join(e.value for e in BatchEndpoint)
        raise InvalidRequestError(
            f"endpoint must be one of {supported}", code="invalid_value", param="endpoint"
        ) from error
    upload = files.get_file(session, account_id, input_file_id)
    batch_input = validate_batch_input(
        files.open_file_content(storage, upload),
        endpoint=batch_endpoint,
        served_model=settings.model_name,
        tokenizer=PromptTokenizer.from_checkpoint(settings.model),
        max_requests=settings.max_batch_lines,
    )
    if not batch_input.is_valid:
        shown = "; ".join(
            f"line {e.line}: {e.message}" if e.line else e.message
            for e in batch_input.errors[:MAX_REPORTED_ERRORS]
        )
        more = len(batch_input.errors) - MAX_REPORTED_ERRORS
        suffix = f" (and {more} more)" if more > 0 else ""
        raise InvalidRequestError(
            f"The input file would fail validation: {shown}{suffix}",
            code="invalid_batch_input",
            param="input_file_id",
        )
    requests = [PreviewRequest.from_batch_request(request) for request in batch_input.requests]
    return estimate_for_account(session, account_id, settings.model_name, requests)
