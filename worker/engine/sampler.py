"""Next-token choice for each sequence that completed this step.

Each sampled request draws from its own ``torch.Generator`` (seeded from ``SamplingParams.seed``), one
draw per generated token, so a seeded request samples the same tokens whatever else is in the batch.
"""

from __future__ import annotations

import torch

from worker.engine.sequence import Sequence


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    # logits: fp32 [num_seqs, vocab]
    chosen = logits.argmax(dim=-1).tolist()
    for row, seq in enumerate(seqs):
        if not seq.params.is_greedy:
            chosen[row] = _sample_row(logits[row], seq)
    return chosen


def _sample_row(logits: torch.Tensor, seq: Sequence) -> int:
    params = seq.params
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it stays).
        before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=seq.generator).item())
