"""Token stream and random training windows.

Every document is prefixed with `<|endoftext|>` and the documents are concatenated into one stream:
`[eot, doc0..., eot, doc1..., ...]`. Training draws windows at uniformly random offsets, so the model sees
contexts both with and without a leading `<|endoftext|>`.
"""

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer


def document_stream(tokenizer: Tokenizer, texts: Sequence[str], separator_id: int) -> torch.Tensor:
    """Tokenize `texts` and return the stream `[separator, doc0, separator, doc1, ...]`; int64 `[num_tokens]`."""
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        stream.append(separator_id)
        stream.extend(encoding.ids)
    return torch.tensor(stream, dtype=torch.int64)


def sample_windows(
    stream: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> torch.Tensor:
    """Return `[batch_size, seq_len]` token windows cut from `stream` at random offsets drawn from `generator`."""
    # stream: [num_tokens]
    offsets = torch.randint(0, stream.numel() - seq_len + 1, (batch_size,), generator=generator)
    positions = offsets[:, None] + torch.arange(seq_len)[None, :]
    return stream[positions]
