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
from typing import TYPE_CHECKING, Any

import numpy as np

from hybatch.embeddings_body import EmbeddingRequest, EncodingFormat
from hybatch.result_lines import TokenUsage, success_envelope

if TYPE_CHECKING:
    import torch


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
