"""``/healthz``: the process is up and its database answers."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from api.deps import SessionsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(sessions: SessionsDep) -> dict[str, str]:
    with sessions() as session:
        session.execute(sa.text("select 1"))
    return {"status": "ok"}
