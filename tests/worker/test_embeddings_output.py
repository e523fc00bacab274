"""Embedding requests on the worker: grouped per engine call, vectors shortened by ``dimensions``,
encoded as floats or base64 on the output line."""

import base64
import struct

import numpy as np
import pytest
import torch

from hybatch.batch_input import BatchRequest
from hybatch.embeddings_body import EmbeddingRequest, EncodingFormat
from worker.embeddings import embed_requests, embedding_line, encoded, request_groups, shortened, token_usage


def test_shortened_keeps_the_first_components_at_unit_length() -> None:
    vector = np.array([0.6, 0.0, 0.8, 0.0], dtype=np.float32)  # unit length
    np.testing.assert_allclose(shortened(vector, 2), [1.0, 0.0])  # [0.6, 0] / 0.6
    np.testing.assert_allclose(shortened(vector, 3), [0.6, 0.0, 0.8])
    assert shortened(vector, None) is vector
    assert shortened(np.array([0.0, 1.0], dtype=np.float32), 1).tolist() == [0.0]  # no NaN


def test_base64_is_little_endian_float32_bytes() -> None:
    vector = np.array([1.0, -2.5, 0.125], dtype=np.float32)
    text = encoded(vector, EncodingFormat.BASE64)
    assert base64.b64decode(text) == struct.pack("<3f", 1.0, -2.5, 0.125)
    assert encoded(vector, EncodingFormat.FLOAT) == [1.0, -2.5, 0.125]


@pytest.mark.parametrize("encoding_format", list(EncodingFormat))
def test_the_line_holds_one_item_per_input_and_input_only_usage(encoding_format: EncodingFormat) -> None:
    request = EmbeddingRequest(((1, 2, 3), (4,)), encoding_format, dimensions=None)
    usage = token_usage(request)
    assert (usage.cache_hit_input_tokens, usage.cache_miss_input_tokens, usage.output_tokens) == (0, 4, 0)
    vectors = [torch.tensor([0.6, 0.8]), torch.tensor([1.0, 0.0])]
    line = embedding_line("e1", request, vectors, model="tiny-test", usage=usage)
    body = line["response"]["body"]
    assert line["custom_id"] == "e1" and line["error"] is None and line["response"]["status_code"] == 200
    assert body["object"] == "list" and body["model"] == "tiny-test"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert {item["object"] for item in body["data"]} == {"embedding"}
    first = body["data"][0]["embedding"]
    if encoding_format is EncodingFormat.BASE64:
        first = list(struct.unpack("<2f", base64.b64decode(first)))
    np.testing.assert_allclose(first, [0.6, 0.8], rtol=1e-6)


def _request(custom_id: str, *inputs: tuple[int, ...]) -> BatchRequest:
    return BatchRequest(1, custom_id, {}, EmbeddingRequest(inputs, EncodingFormat.FLOAT, None))


class _RefusesTokenZero:
    """An engine stand-in: a vector [first token, length] per prompt; any prompt holding 0 is refused."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, prompts):
        self.calls.append(len(prompts))
        if any(0 in prompt for prompt in prompts):
            raise ValueError("token 0 refused")
        return [torch.tensor([float(prompt[0]), float(len(prompt))]) for prompt in prompts]


def test_requests_are_grouped_by_input_tokens() -> None:
    requests = [
        _request("a", (1,) * 3),
        _request("b", (1,) * 4, (2,)),
        _request("c", (1,) * 9),
        _request("d", (1,)),
    ]
    groups = request_groups(requests, tokens_per_call=8)
    assert [[r.custom_id for r in group] for group in groups] == [["a", "b"], ["c"], ["d"]]


def test_one_call_per_group_and_a_refused_request_fails_alone() -> None:
    engine = _RefusesTokenZero()
    good = embed_requests(engine, [_request("a", (5, 6)), _request("b", (7,), (8, 9, 9))])
    assert engine.calls == [3]  # three inputs, one engine call
    assert [(r.request.custom_id, r.error) for r in good] == [("a", None), ("b", None)]
    assert [v.tolist() for v in good[1].vectors] == [[7.0, 1.0], [8.0, 3.0]]  # b's own inputs, in order

    engine.calls.clear()
    mixed = embed_requests(engine, [_request("a", (5,)), _request("bad", (0,)), _request("c", (3,))])
    assert engine.calls == [3, 1, 1, 1]  # refused together, then each alone
    assert [(r.request.custom_id, r.error) for r in mixed] == [
        ("a", None),
        ("bad", "token 0 refused"),
        ("c", None),
    ]
    assert mixed[1].vectors is None and mixed[2].vectors[0].tolist() == [3.0, 1.0]
