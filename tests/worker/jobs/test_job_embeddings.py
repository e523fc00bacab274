"""``/v1/embeddings`` batches through the worker: lists the SDK parses, vectors as transformers', metering."""

from __future__ import annotations

import base64
from decimal import Decimal

import numpy as np
import pytest
import torch
from openai.types import CreateEmbeddingResponse

from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from hybatch import accounts
from hybatch.batch_input import MAX_EMBEDDING_INPUTS
from hybatch.models import BatchStatus, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from tests.billing.schedule_docs import flat, model_entry, schedule, version
from tests.worker.checkpoints import load_reference
from tests.worker.jobs.batches import SERVED_MODEL, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs

EMBEDDINGS = "/v1/embeddings"


def embeddings_line(custom_id: str, body: dict) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": EMBEDDINGS,
        "body": {"model": SERVED_MODEL, **body},
    }


def sdk_decoded(body: dict) -> dict:
    """``body`` with base64 embeddings turned into float lists, as ``client.embeddings.create`` does
    (numpy ``frombuffer`` of little-endian float32) before it builds its ``CreateEmbeddingResponse``."""
    data = [
        {**item, "embedding": np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").tolist()}
        if isinstance(item["embedding"], str)
        else item
        for item in body["data"]
    ]
    return {**body, "data": data}


def reference_vector(reference, token_ids: list[int]) -> np.ndarray:
    """Mean over the prompt of transformers' final hidden states, L2-normalised (computed here)."""
    with torch.no_grad():
        hidden = reference.model(torch.tensor([token_ids])).last_hidden_state[0].double()
    pooled = hidden.mean(dim=0)
    return (pooled / pooled.norm()).numpy()


def test_an_embeddings_batch_gives_embedding_lists_equal_to_the_reference(context: jobs.JobContext) -> None:
    tokenizer = PromptTokenizer.from_checkpoint(context.settings.model)
    texts = ["Count to three.", "one two three four five", "hello"]
    token_ids = [5, 17, 3, 40, 2]
    lines = [
        embeddings_line("one-text", {"input": texts[0]}),
        embeddings_line("texts", {"input": texts, "encoding_format": "float"}),
        embeddings_line("ids", {"input": token_ids}),
        embeddings_line("id-lists", {"input": [token_ids, token_ids[:2]], "encoding_format": "base64"}),
        embeddings_line("short", {"input": texts[1], "dimensions": 8}),
    ]
    batch_id = submit(context, lines, endpoint=EMBEDDINGS)

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    assert outcome.error_lines == []
    bodies = {line["custom_id"]: line["response"]["body"] for line in outcome.output_lines}
    parsed = {
        custom_id: CreateEmbeddingResponse.model_validate(sdk_decoded(body))
        for custom_id, body in bodies.items()
    }
    reference = load_reference(context.settings.model)
    hidden_size = reference.config.hidden_size
    expected_inputs = {
        "one-text": [tokenizer.encode_completion(texts[0])],
        "texts": [tokenizer.encode_completion(t) for t in texts],
        "ids": [token_ids],
        "id-lists": [token_ids, token_ids[:2]],
        "short": [tokenizer.encode_completion(texts[1])],
    }
    ledger = {record.custom_id: record for record in outcome.usage}
    for custom_id, inputs in expected_inputs.items():
        response = parsed[custom_id]
        assert response.object == "list" and response.model == SERVED_MODEL
        assert [item.index for item in response.data] == list(range(len(inputs)))
        prompt_tokens = sum(len(ids) for ids in inputs)
        assert response.usage.prompt_tokens == response.usage.total_tokens == prompt_tokens
        # Metered as input only, every token computed (no prefix cache for embeddings).
        record = ledger[custom_id]
        assert record.model == "tiny-test:embeddings"  # metered apart from generation
        assert (record.cache_hit_input_tokens, record.cache_miss_input_tokens, record.output_tokens) == (
            0,
            prompt_tokens,
            0,
        )
        line = next(line for line in outcome.output_lines if line["custom_id"] == custom_id)
        assert Decimal(line["x_billing"]["amount"]) == record.amount > 0
        for item, ids in zip(response.data, inputs, strict=True):
            raw = bodies[custom_id]["data"][item.index]["embedding"]
            if custom_id == "id-lists":  # base64 of little-endian float32, as OpenAI sends it
                assert isinstance(raw, str)
                vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
            else:
                assert isinstance(raw, list)
                vector = np.asarray(item.embedding)
            want = reference_vector(reference, ids)
            if custom_id == "short":
                want = want[:8] / np.linalg.norm(want[:8])
            assert vector.shape == (8 if custom_id == "short" else hidden_size,)
            np.testing.assert_allclose(vector, want, atol=2e-5, rtol=1e-4)
    batch = outcome.batch
    assert batch.input_tokens == sum(r.prompt_tokens for r in outcome.usage) and batch.output_tokens == 0
    assert batch.cached_input_tokens == 0


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": ""}, "invalid_value", "body.input"),
        ({"input": ["ok", ""]}, "invalid_value", "body.input[1]"),
        ({"input": [[1, 2], [10_000]]}, "invalid_value", "body.input[1]"),
        ({"input": [["a"]]}, "invalid_type", "body.input[0]"),
        ({"input": {"text": "a"}}, "invalid_type", "body.input"),
        ({}, "missing_required_parameter", "body.input"),
        ({"input": "a", "encoding_format": "int8"}, "invalid_value", "body.encoding_format"),
        ({"input": "a", "dimensions": 10_000}, "invalid_value", "body.dimensions"),
        ({"input": "a", "dimensions": 0}, "invalid_value", "body.dimensions"),
        ({"input": [1] * 600}, "too_many_tokens", "body.input"),
        ({"input": "a", "model": "other"}, "invalid_model", "body.model"),
        ({"input": "a", "stream": True}, "unsupported_parameter", "body.stream"),
    ],
)
def test_a_bad_embeddings_body_is_reported_with_its_parameter(
    context: jobs.JobContext, body: dict, code: str, param: str
) -> None:
    batch_id = submit(context, [embeddings_line("only", body)], endpoint=EMBEDDINGS)
    assert drive(batch_id, context) is BatchStatus.FAILED
    [error] = read_outcome(context, batch_id).batch.errors
    assert (error["line"], error["code"], error["param"]) == (1, code, param), error
    assert error["message"]


def test_more_than_50000_embedding_inputs_fail_the_batch(context: jobs.JobContext) -> None:
    per_line = 2048
    num_lines = MAX_EMBEDDING_INPUTS // per_line + 1  # 25 lines: 51,200 inputs
    lines = [embeddings_line(f"r{i}", {"input": [[1]] * per_line}) for i in range(num_lines)]
    batch_id = submit(context, lines, endpoint=EMBEDDINGS)

    assert drive(batch_id, context) is BatchStatus.FAILED

    [error] = read_outcome(context, batch_id).batch.errors
    assert MAX_EMBEDDING_INPUTS == 50_000
    assert error["code"] == "too_many_embedding_inputs" and error["line"] == num_lines
    assert "50000" in error["message"]


# The default schedule has no embeddings entry: its "*" entry prices them, at its cache-miss input
# price (USD 0.70 per 1M tokens, first tier; billing/pricing/default_schedule.yaml).
DEFAULT_MISS_PER_1M = Decimal("0.70")


def test_embeddings_are_billed_as_input_tokens_by_their_own_schedule_entry(context: jobs.JobContext) -> None:
    # Embeddings at 0.02 per 1M input tokens; generation far dearer, so the entry used shows in the sum.
    embeddings = {"cache_hit_input": flat("0"), "cache_miss_input": flat("0.02"), "output": flat("0")}
    generation = {"cache_hit_input": flat("1"), "cache_miss_input": flat("10"), "output": flat("30")}
    with context.session_factory() as session:
        account = accounts.create_account(session, "embedder")
        document = schedule(
            "emb",
            version(
                "v1", "2026-01-01", [model_entry("*:embeddings", embeddings), model_entry("*", generation)]
            ),
        )
        load_schedule(session, parse_schedule(document))
        assign_schedule(session, account.id, "emb", utc_now())
        session.commit()
    lines = [
        embeddings_line("a", {"input": ["one two three", "four"]}),
        embeddings_line("b", {"input": [7] * 50}),
    ]
    batch_id = submit(context, lines, endpoint=EMBEDDINGS, account="embedder")
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    by_id = {line["custom_id"]: line for line in outcome.output_lines}
    for record in outcome.usage:
        x_billing = by_id[record.custom_id]["x_billing"]
        assert x_billing["token_classes"] == {
            "cache_hit_input": 0,
            "cache_miss_input": record.prompt_tokens,
            "output": 0,
        }
        assert x_billing["price_version"] == "emb@v1"
        assert Decimal(x_billing["amount"]) == record.amount == record.prompt_tokens * Decimal("0.02") / 10**6
    assert {r.custom_id: r.prompt_tokens for r in outcome.usage}["b"] == 50


def test_without_an_embeddings_entry_they_cost_the_models_cache_miss_input(context: jobs.JobContext) -> None:
    batch_id = submit(context, [embeddings_line("a", {"input": [3] * 40})], endpoint=EMBEDDINGS)
    assert drive(batch_id, context) is BatchStatus.COMPLETED
    [line] = read_outcome(context, batch_id).output_lines
    assert Decimal(line["x_billing"]["amount"]) == 40 * DEFAULT_MISS_PER_1M / 10**6


def test_a_budget_cap_admits_embeddings_by_their_input_cost(context: jobs.JobContext) -> None:
    # Each line costs exactly 100 cache-miss tokens (no output to reserve): a cap of 2.5 lines' cost.
    line_cost = 100 * DEFAULT_MISS_PER_1M / 10**6
    lines = [embeddings_line(f"r{i}", {"input": [4] * 100}) for i in range(4)]
    batch_id = submit(
        context, lines, endpoint=EMBEDDINGS, metadata={"max_cost": str(line_cost * Decimal("2.5"))}
    )
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    assert [line["custom_id"] for line in outcome.output_lines] == ["r0", "r1"]
    assert {line["custom_id"]: line["error"]["code"] for line in outcome.error_lines} == {
        "r2": "skipped_budget",
        "r3": "skipped_budget",
    }
    assert sorted(record.custom_id for record in outcome.usage) == ["r0", "r1"]
    assert sum(Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines) == 2 * line_cost
