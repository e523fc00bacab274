"""The attention seam: every attention layer calls exactly this interface."""

from __future__ import annotations

from typing import Protocol

import torch

from worker.model.attention_metadata import AttentionMetadata, PagedKV


class AttentionBackend(Protocol):
    """Writes a step's new K/V into paged slots and attends the packed queries.

    ``window`` is 0 for full attention; otherwise a query at position p sees keys
    ``[max(0, p - window + 1), p]`` (the window counts the query itself). ``sinks`` is an optional
    fp32 per-query-head logit that joins the softmax denominator only. Query head h reads KV head
    ``h // (num_q_heads // num_kv_heads)``.
    """

    name: str

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim_qk]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_qk]  new keys of this step
        v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_v]   new values of this step
        k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_qk]
        v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_v]
        meta: AttentionMetadata,
        pool: PagedKV,
        *,
        window: int,
        sinks: torch.Tensor | None,
        scale: float,
    ) -> torch.Tensor:  # [num_tokens, num_q_heads, head_dim_v]
        ...


def choose_backend(name: str, device: torch.device) -> AttentionBackend:
    """``auto`` picks the Triton kernels on CUDA and the PyTorch backend elsewhere."""
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    if name == "torch":
        from worker.model.attention_torch import TorchAttention

        return TorchAttention()
    if name == "triton":
        from worker.model.attention_triton import TritonAttention

        return TritonAttention()
    raise ValueError(f"unknown attention backend {name!r} (available: auto, torch, triton)")
