"""The OpenAPI document against the running app, with schemathesis: for every ``/v1`` JSON route
(files, batches, models, usage, billing), generated requests get no server error, no status the
document does not list, and bodies and content types that match it.

The dashboard's HTML routes are left out: they are not in the document (``include_in_schema=False``)
and answer browsers, not API clients. ``/healthz`` is left out too (no ``/v1``, no parameters).
Requests carry a valid API key of an account that owns a file and a batch, so authorized paths run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from billing.settings import BillingSettings
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.settings import Settings
from tests.api.helpers import SERVED_MODEL, bearer, chat_line, create_batch, jsonl, upload

EXAMPLES_PER_ROUTE = 50  # 20 operations x 50 cases: under 10 s on the 2-core machine
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def contract_app(tmp_path: Path, sqlite_url: str) -> Iterator[FastAPI]:
    app_settings = Settings(
        data_dir=tmp_path / "var", database_url=sqlite_url, model_name=SERVED_MODEL, max_file_bytes=4096
    )
    app = create_app(app_settings, enqueue=lambda batch_id: None)
    # As deployed with Stripe: a webhook secret, so an unsigned call is a 400 (without one it is a
    # deliberate 503, which the server-error check would count).
    app.state.billing_settings = BillingSettings(stripe_webhook_secret="whsec_contract_test")
    yield app
    app.state.engine.dispose()


@dataclass(frozen=True)
class Caller:
    api_key: str
    known_ids: dict[str, str]  # path parameter -> the id of an object the caller owns


@pytest.fixture
def caller(contract_app: FastAPI) -> Caller:
    engine = make_engine(contract_app.state.settings.database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            account = accounts.create_account(session, "contract")
            secret = accounts.create_api_key(session, account.id).secret
    finally:
        engine.dispose()
    with TestClient(contract_app) as client:
        file_id = upload(client, bearer(secret), jsonl(chat_line("a")))["id"]
        batch_id = create_batch(client, bearer(secret), file_id)["id"]
    return Caller(secret, {"file_id": file_id, "batch_id": batch_id, "model_id": SERVED_MODEL})


def test_v1_routes_answer_only_what_the_document_lists(contract_app: FastAPI, caller: Caller) -> None:
    # One test looping over the operations: schemathesis's pytest integration (from_fixture) does
    # not run on this pytest version.
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app).include(path_regex="^/v1/")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 19, [operation.label for operation in operations]
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case) -> None:
            _call_and_check(case, caller)

        try:
            check()
        except (Exception, BaseExceptionGroup) as failure:  # every operation runs; all are reported
            failures[operation.label] = f"{type(failure).__name__}: {failure}"
    # Generated ids name nothing: also call each route once on the caller's own objects (deletes
    # last), so the success answers are checked against the document too.
    for operation in sorted(operations, key=lambda operation: operation.method.upper() == "DELETE"):
        names = {parameter.name for parameter in operation.path_parameters}
        if names and names <= caller.known_ids.keys():
            case = operation.Case(path_parameters={name: caller.known_ids[name] for name in names})
            try:
                _call_and_check(case, caller)
            except (Exception, BaseExceptionGroup) as failure:
                failures[f"{operation.label} (own object)"] = f"{type(failure).__name__}: {failure}"
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())


def _call_and_check(case, caller: Caller) -> None:
    response = case.call(headers=bearer(caller.api_key))
    case.validate_response(response, checks=CHECKS)
