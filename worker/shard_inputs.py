"""A shard's validated requests in file storage, so a shard task never validates the input again.

One JSONL object per request, in the shard's order: where it was in the input (``line``), its
``custom_id`` and what to generate (prompt token ids and sampling settings, as validation resolved
them). Written once when the batch is planned, read by every run of the shard and by the batch's
ending; deleted when the batch ends. The request bodies are not kept: nothing after validation
reads them (a ``/v1/responses`` request keeps the few fields its Response object repeats, in
``echo``). An embeddings request stores its inputs' token ids (``embed``) and output settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from hybatch.batch_input import BatchRequest
from hybatch.embeddings_body import EmbeddingRequest, EncodingFormat
from hybatch.request_body import GenerationRequest
from hybatch.storage import FileStorage


def shard_input_key(batch_id: str, shard_index: int) -> str:
    return f"{batch_id}-shard-{shard_index:05d}"


def write_shard_input(storage: FileStorage, key: str, requests: Iterable[BatchRequest]) -> int:
    """Stores ``requests`` under ``key``; returns how many."""
    count = 0
    with storage.open_write(key) as writer:
        for request in requests:
            generation = request.generation
            if isinstance(generation, EmbeddingRequest):
                writer.write(_encoded(_embedding_record(request, generation)))
                count += 1
                continue
            record = {
                "line": request.line_number,
                "custom_id": request.custom_id,
                "prompt": list(generation.prompt_token_ids),
                "max_tokens": generation.max_tokens,
                "temperature": generation.temperature,
                "top_p": generation.top_p,
                "seed": generation.seed,
                "stop": list(generation.stop),
                "top_k": generation.top_k,
                "echo": generation.echo,
                "message_boundaries": list(generation.message_boundaries),
            }
            writer.write(_encoded(record))
            count += 1
    return count


def read_shard_input(storage: FileStorage, key: str) -> Iterator[BatchRequest]:
    """The requests stored under ``key``, in order; raises FileNotFoundError when absent."""
    with storage.open_read(key) as reader:
        for raw in reader:
            record = json.loads(raw)
            if "embed" in record:
                yield BatchRequest(record["line"], record["custom_id"], {}, _embedding_request(record))
                continue
            generation = GenerationRequest(
                prompt_token_ids=tuple(record["prompt"]),
                max_tokens=record["max_tokens"],
                temperature=record["temperature"],
                top_p=record["top_p"],
                seed=record["seed"],
                stop=tuple(record["stop"]),
                top_k=record.get("top_k"),  # absent from shards stored before it existed
                echo=record.get("echo"),
                message_boundaries=tuple(record.get("message_boundaries", ())),  # absent from older shards
            )
            yield BatchRequest(record["line"], record["custom_id"], {}, generation)


def _encoded(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def _embedding_record(request: BatchRequest, embedding: EmbeddingRequest) -> dict[str, Any]:
    return {
        "line": request.line_number,
        "custom_id": request.custom_id,
        "embed": [list(tokens) for tokens in embedding.inputs],
        "encoding_format": embedding.encoding_format.value,
        "dimensions": embedding.dimensions,
    }


def _embedding_request(record: dict[str, Any]) -> EmbeddingRequest:
    return EmbeddingRequest(
        inputs=tuple(tuple(tokens) for tokens in record["embed"]),
        encoding_format=EncodingFormat(record["encoding_format"]),
        dimensions=record["dimensions"],
    )
