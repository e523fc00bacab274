"""``/healthz``: the process is up and its database answers."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from api.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    session.execute(sa.text("select 1"))
    return {"status": "ok"}
