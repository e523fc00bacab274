"""``/v1/usage``: the caller's usage in time buckets, shaped after OpenAI's usage API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CurrentCaller, SessionsDep
from billing.usage import build_query, usage_page

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
@router.get("/v1/organization/usage/completions")
def get_usage(
    caller: CurrentCaller,
    sessions: SessionsDep,
    start_time: int,
    end_time: int | None = None,
    bucket_width: str = "1d",
    group_by: Annotated[list[str] | None, Query()] = None,
    group_by_brackets: Annotated[list[str] | None, Query(alias="group_by[]")] = None,
    limit: int | None = None,
    page: str | None = None,
) -> dict[str, Any]:
    query = build_query(
        caller.account_id,
        start_time=start_time,
        end_time=end_time,
        bucket_width=bucket_width,
        group_by=[*(group_by or []), *(group_by_brackets or [])],
        limit=limit,
        page=page,
    )
    with sessions() as session:
        return usage_page(session, query)
