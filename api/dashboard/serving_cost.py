"""``/dashboard/admin/serving-cost``: what a token costs to serve, beside the prices in force (operators).

The page states the measured inputs (the shipped ``measured_serving.yaml``), lets the operator
change any of them in a GET form (nothing is stored), and renders the same ``ServingCostReport``
as ``hybatch billing serving-cost``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.dashboard.deps import AdminDep
from api.dashboard.pages import render
from api.deps import SessionsDep
from billing.pricing.schedule_version import TokenClass
from billing.pricing.serving_cost_report import CLASS_NAMES, serving_cost_report
from billing.pricing.serving_inputs import (
    MEASURED_SERVING_FILE,
    CacheTier,
    ServingInputsInvalidError,
    read_serving_document,
)
from hybatch.errors import HybatchError
from hybatch.models import Account, utc_now

router = APIRouter(prefix="/dashboard/admin", include_in_schema=False)

# Form fields: a top-level figure each, and one per cache tier ("hit_tps.device", "hit_share.host").
SCALAR_FIELDS = ("hourly_price", "utilization", "prefill_tokens_per_s", "decode_tokens_per_s")
TIER_FIELDS = {"hit_tps": "cache_hit_tokens_per_s", "hit_share": "cache_hit_shares"}


def _same_figure(given: str, stated: object) -> bool:
    try:
        return Decimal(given) == Decimal(str(stated))
    except InvalidOperation:
        return False


def form_overrides(query: dict[str, str], document: dict) -> dict[str, object]:
    """The figures the form changed: a field left empty or equal to the file's keeps the file's."""
    overrides: dict[str, object] = {}
    for key in SCALAR_FIELDS:
        given = query.get(key, "").strip()
        if given and not _same_figure(given, document.get(key)):
            overrides[key] = given
    for prefix, key in TIER_FIELDS.items():
        stated = document.get(key) or {}
        changed = {}
        for tier in CacheTier:
            given = query.get(f"{prefix}.{tier}", "").strip()
            if given and not _same_figure(given, stated.get(tier.value)):
                changed[tier.value] = given
        if changed:
            overrides[key] = changed
    return overrides


@router.get("/serving-cost")
def serving_cost_page(request: Request, viewer: AdminDep, sessions: SessionsDep) -> HTMLResponse:
    document = read_serving_document(MEASURED_SERVING_FILE)
    query = dict(request.query_params)
    overrides = form_overrides(query, document)
    account_name = query.get("account") or None
    model = request.app.state.settings.model_name
    report, problems = None, []
    with sessions() as db:  # reads only (the default schedule, loaded on first use, is not kept)
        names = list(db.scalars(sa.select(Account.name).order_by(Account.name)))
        account_id = (
            db.scalar(sa.select(Account.id).where(Account.name == account_name)) if account_name else None
        )
        if account_name and account_id is None:
            problems = [f"No account named '{account_name}'."]
        else:
            try:
                report = serving_cost_report(
                    db, document, overrides, account_id=account_id, model=model, at=utc_now()
                )
            except ServingInputsInvalidError as error:
                problems = error.problems
            except HybatchError as error:  # no schedule in force, or it does not price the model
                problems = [error.message]
    form = {key: query.get(key) or str(document.get(key, "")) for key in SCALAR_FIELDS}
    for prefix, key in TIER_FIELDS.items():
        for tier in CacheTier:
            form[f"{prefix}.{tier}"] = query.get(f"{prefix}.{tier}") or str(
                (document.get(key) or {}).get(tier.value, "")
            )
    return render(
        request,
        "serving_cost.html",
        viewer,
        status_code=400 if problems else 200,
        active="serving-cost",
        report=report,
        problems=problems,
        form=form,
        account_names=names,
        account_name=account_name,
        model=model,
        tiers=list(CacheTier),
        token_classes=list(TokenClass),
        class_names=CLASS_NAMES,
        file_name=MEASURED_SERVING_FILE.name,
    )
