"""``/v1/usage``: the caller's usage in time buckets, shaped after OpenAI's usage API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CurrentCaller, SessionsDep
from api.openapi import error_responses
from billing.usage.buckets import build_query, usage_page

router = APIRouter(tags=["usage"])

# Times are Unix seconds; datetime cannot go past the year 9999.
MAX_UNIX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
UnixSeconds = Annotated[int, Query(ge=0, le=MAX_UNIX_SECONDS)]


@router.get("/v1/usage", responses=error_responses(400, 401))
@router.get("/v1/organization/usage/completions", responses=error_responses(400, 401))
def get_usage(
    caller: CurrentCaller,
    sessions: SessionsDep,
    start_time: UnixSeconds,
    end_time: UnixSeconds | None = None,
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
