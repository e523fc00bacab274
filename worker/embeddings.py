"""A ``/v1/embeddings`` request's vectors, metering and output line (OpenAI's embedding list).

``dimensions`` keeps the first N components of the unit vector and renormalises them to unit
length (what OpenAI documents for its shortened embeddings). ``encoding_format: base64`` sends
each vector as base64 of its little-endian float32 bytes, which the ``openai`` SDK decodes.

Metering: embeddings read no prefix cache (``worker/engine/embed.py``), so every input token is a
cache-miss input token and there are no output tokens; the body's usage is
``{prompt_tokens, total_tokens}`` with total = prompt.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hybatch.batch_input import BatchRequest
from hybatch.embeddings_body import EmbeddingRequest, EncodingFormat
from hybatch.result_lines import TokenUsage, success_envelope

if TYPE_CHECKING:
    import torch

# Requests are embedded in groups of about this many input tokens per engine call: enough to fill
# the engine's forward passes (one tiny request per call would leave a GPU idle between launches),
# few enough that a cancel or shutdown, asked between calls, is answered within a few passes.
TOKENS_PER_CALL = 8192


class Embedder(Protocol):
    def embed(self, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class EmbeddedRequest:
    """One request's vectors, one per input in order; or, when the engine refused it, why."""

    request: BatchRequest
    vectors: list[torch.Tensor] | None
    error: str | None


def request_groups(requests: Sequence[BatchRequest], tokens_per_call: int) -> list[list[BatchRequest]]:
    """Consecutive requests whose input tokens add up to about ``tokens_per_call`` (a bigger
    request is a group of its own)."""
    groups: list[list[BatchRequest]] = []
    tokens = 0
    for request in requests:
        size = len(request.generation.prompt_token_ids)
        if groups and tokens + size <= tokens_per_call:
            groups[-1].append(request)
            tokens += size
        else:
            groups.append([request])
            tokens = size
    return groups


def embed_requests(embedder: Embedder, requests: list[BatchRequest]) -> list[EmbeddedRequest]:
    """Embeds every input of ``requests`` in one engine call; if the engine refuses the call, each
    request is tried alone so only the one it refuses ends in an error."""
    inputs = [tokens for request in requests for tokens in request.generation.inputs]
    try:
        vectors = embedder.embed(inputs)
    except ValueError as error:
        if len(requests) == 1:
            return [EmbeddedRequest(requests[0], None, str(error))]
        return [result for request in requests for result in embed_requests(embedder, [request])]
    results = []
    start = 0
    for request in requests:
        end = start + len(request.generation.inputs)
        results.append(EmbeddedRequest(request, vectors[start:end], None))
        start = end
    return results


def token_usage(request: EmbeddingRequest) -> TokenUsage:
    return TokenUsage(
        cache_hit_input_tokens=0, cache_miss_input_tokens=len(request.prompt_token_ids), output_tokens=0
    )


def shortened(vector: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` components of ``vector`` (float32 [n]), back at unit length."""
    if dimensions is None:
        return vector
    head = vector[:dimensions]
    norm = float(np.linalg.norm(head))
    # A head of zeros has no direction; it stays zeros rather than becoming NaN.
    return head / norm if norm > 0 else head


def encoded(vector: np.ndarray, encoding_format: EncodingFormat) -> list[float] | str:
    little_endian = vector.astype("<f4")
    if encoding_format is EncodingFormat.BASE64:
        return base64.b64encode(little_endian.tobytes()).decode("ascii")
    return little_endian.tolist()


def embedding_line(
    custom_id: str,
    request: EmbeddingRequest,
    vectors: list[torch.Tensor],
    *,
    model: str,
    usage: TokenUsage,
) -> dict[str, Any]:
    """The output-file line for ``request``: one ``embedding`` object per input, in input order."""
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encoded(
                shortened(vector.numpy().astype(np.float32), request.dimensions), request.encoding_format
            ),
        }
        for index, vector in enumerate(vectors)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return success_envelope(custom_id, body)
