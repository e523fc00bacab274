"""``/v1/responses`` batches through the HTTP API and the worker: Response objects the SDK parses."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from openai.types.responses import Response

from api.app import create_app
from hybatch import accounts
from hybatch.models import BatchStatus
from hybatch.prompt_tokenizer import PromptTokenizer
from tests.worker.jobs.batches import SERVED_MODEL, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs

RESPONSES = "/v1/responses"


def responses_line(custom_id: str, body: dict) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": RESPONSES,
        "body": {"model": SERVED_MODEL, **body},
    }


def test_a_responses_batch_over_http_gives_response_objects_the_sdk_parses(context: jobs.JobContext) -> None:
    lines = [
        responses_line("plain", {"input": "Count to three.", "max_output_tokens": 3, "temperature": 0}),
        responses_line(
            "conversation",
            {
                "instructions": "You count.",
                "input": [
                    {"role": "user", "content": "one"},
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "two"}],
                    },
                    {"role": "user", "content": [{"type": "input_text", "text": "next?"}]},
                ],
                "max_output_tokens": 200,
                "temperature": 0,
                "metadata": {"team": "counting"},
            },
        ),
    ]
    enqueued: list[str] = []
    app = create_app(context.settings, enqueue=enqueued.append)
    with context.session_factory() as session:
        account = accounts.create_account(session, "responses-user")
        secret = accounts.create_api_key(session, account.id).secret
        session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(app) as client:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        upload = client.post(
            "/v1/files", headers=headers, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
        )
        assert upload.status_code == 200, upload.text
        created = client.post(
            "/v1/batches",
            headers=headers,
            json={"input_file_id": upload.json()["id"], "endpoint": RESPONSES, "completion_window": "24h"},
        )
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        assert enqueued == [batch_id] and created.json()["endpoint"] == RESPONSES

        assert drive(batch_id, context) is BatchStatus.COMPLETED

        batch = client.get(f"/v1/batches/{batch_id}", headers=headers).json()
        assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 2
        output = client.get(f"/v1/files/{batch['output_file_id']}/content", headers=headers)
        assert output.status_code == 200
    app.state.engine.dispose()

    out_lines = {json.loads(raw)["custom_id"]: json.loads(raw) for raw in output.text.splitlines()}
    assert set(out_lines) == {"plain", "conversation"}
    outcome = read_outcome(context, batch_id)
    ledger = {record.custom_id: record for record in outcome.usage}
    tokenizer = PromptTokenizer.from_checkpoint(context.settings.model)
    for custom_id, line in out_lines.items():
        assert line["error"] is None and line["response"]["status_code"] == 200
        response = Response.model_validate(line["response"]["body"])
        assert response.object == "response" and response.id.startswith("resp_")
        assert response.model == SERVED_MODEL
        [message] = response.output
        assert message.type == "message" and message.role == "assistant"
        [part] = message.content
        assert part.type == "output_text" and part.text == response.output_text
        usage, record = response.usage, ledger[custom_id]
        assert usage.input_tokens == record.prompt_tokens
        assert usage.input_tokens_details.cached_tokens == record.cache_hit_input_tokens <= usage.input_tokens
        assert usage.output_tokens == record.output_tokens >= 1
        assert usage.output_tokens_details.reasoning_tokens == 0
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        # Billed like the other endpoints: the line's x_billing is the ledger row's cost.
        assert Decimal(line["x_billing"]["amount"]) == record.amount > 0
        assert line["x_billing"]["token_classes"] == {
            "cache_hit_input": record.cache_hit_input_tokens,
            "cache_miss_input": record.cache_miss_input_tokens,
            "output": record.output_tokens,
        }

    plain = Response.model_validate(out_lines["plain"]["response"]["body"])
    assert plain.usage.output_tokens == 3  # cut by max_output_tokens: incomplete, and says why
    assert plain.status == "incomplete" and plain.incomplete_details.reason == "max_output_tokens"
    assert plain.usage.input_tokens == len(
        tokenizer.encode_chat([{"role": "user", "content": "Count to three."}])
    )

    conversation = Response.model_validate(out_lines["conversation"]["response"]["body"])
    assert conversation.instructions == "You count." and conversation.metadata == {"team": "counting"}
    assert conversation.max_output_tokens == 200 and conversation.temperature == 0
    # The prompt is instructions (as a system message) then the input messages, chat-templated.
    rendered = tokenizer.encode_chat(
        [
            {"role": "system", "content": "You count."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "next?"},
        ]
    )
    assert conversation.usage.input_tokens == len(rendered)
    if conversation.status == "completed":  # stopped at end of message well within 200 tokens
        assert conversation.incomplete_details is None
    else:
        assert conversation.incomplete_details.reason == "max_output_tokens"


def test_responses_lines_the_service_cannot_serve_fail_validation_naming_each(
    context: jobs.JobContext,
) -> None:
    lines = [
        responses_line("tools", {"input": "hi", "tools": [{"type": "web_search"}]}),
        responses_line("reasoning", {"input": "hi", "reasoning": {"effort": "high"}}),
        responses_line("previous", {"input": "hi", "previous_response_id": "resp_abc"}),
        responses_line("stream", {"input": "hi", "stream": True}),
        responses_line(
            "image", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}
        ),
        responses_line("call", {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}),
        responses_line("role", {"input": [{"role": "tool", "content": "x"}]}),
        responses_line("long", {"input": "hi", "max_output_tokens": 10_000}),
        responses_line("missing", {}),
        responses_line("fine", {"input": "hi", "max_output_tokens": 2}),
    ]
    batch_id = submit(context, lines, endpoint=RESPONSES)

    assert drive(batch_id, context) is BatchStatus.FAILED

    errors = read_outcome(context, batch_id).batch.errors
    found = {(e["line"], e["code"], e["param"]) for e in errors}
    assert found == {
        (1, "unsupported_parameter", "body.tools"),
        (2, "unsupported_parameter", "body.reasoning"),
        (3, "unsupported_parameter", "body.previous_response_id"),
        (4, "unsupported_parameter", "body.stream"),
        (5, "invalid_type", "body.input[0].content"),
        (6, "unsupported_parameter", "body.input[0]"),
        (7, "invalid_value", "body.input[0].role"),
        (8, "too_many_tokens", "body.input"),
        (9, "missing_required_parameter", "body.input"),
    }
    by_line = {e["line"]: e["message"] for e in errors}
    assert "not stored" in by_line[3] and "Streaming" in by_line[4] and "function_call_output" in by_line[6]
    assert "Tools are not supported" in by_line[1]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "hi", "text": {"format": {"type": "json_object"}}}, "unsupported_parameter", "body.text"),
        ({"input": "hi", "metadata": {"k": 1}}, "invalid_value", "body.metadata"),
        ({"input": "hi", "temperature": 3}, "invalid_value", "body.temperature"),
        ({"input": "hi", "background": True}, "unsupported_parameter", "body.background"),
        ({"input": "hi", "frobnicate": 1}, "unsupported_parameter", "body.frobnicate"),
        ({"input": []}, "invalid_type", "body.input"),
    ],
)
def test_a_bad_responses_body_is_reported_with_its_parameter(
    context: jobs.JobContext, body: dict, code: str, param: str
) -> None:
    batch_id = submit(context, [responses_line("only", body)], endpoint=RESPONSES)
    assert drive(batch_id, context) is BatchStatus.FAILED
    [error] = read_outcome(context, batch_id).batch.errors
    assert (error["line"], error["code"], error["param"]) == (1, code, param), error
