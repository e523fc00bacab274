"""``GET /v1/quotas``: the caller's enqueued-token limit and what its unfinished batches hold (ours)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentCaller, SessionsDep, SettingsDep
from api.openapi import error_responses
from api.schemas import QuotaList, QuotaObject
from hybatch import quotas

router = APIRouter(prefix="/v1/quotas", tags=["quotas"])


@router.get("", responses=error_responses(401))
def list_quotas(caller: CurrentCaller, sessions: SessionsDep, settings: SettingsDep) -> QuotaList:
    with sessions() as session:
        state = quotas.quota_state(
            session, caller.account_id, settings.model_name, settings.enqueued_token_limit
        )
    return QuotaList(data=[QuotaObject.from_state(state)])
