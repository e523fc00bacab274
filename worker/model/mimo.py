"""The MiMo-V2 hybrid-attention decoder, run over packed tokens and paged KV.

Parameter layout differs from the checkpoint (fused gate/up, stacked experts); ``loader.py`` maps names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from worker.model.attention_backend import AttentionBackend
from worker.model.attention_metadata import AttentionMetadata
from worker.model.config import FULL, SLIDING, ModelConfig
from worker.model.fp8_format import BlockFP8Format, FP8Modules
from worker.model.layers import DenseMLP, MoEMLP, RMSNorm, RotaryEmbedding, apply_rotary
from worker.model.linear import Linear
from worker.model.tensor_parallel import SINGLE, TensorParallel, local_kv_config


def _param(*shape, dtype, device) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device), requires_grad=False)


class Attention(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        layer_idx: int,
        dtype: torch.dtype,
        device: torch.device,
        fp8: dict[str, BlockFP8Format | None],
        tp: TensorParallel = SINGLE,
    ):
        super().__init__()
        self.tp = tp
        self.is_sliding = config.is_sliding(layer_idx)
        # this rank's query heads [q_lo, q_hi) and the KV heads they read [kv_lo, kv_hi)
        q_lo, q_hi = tp.split(config.num_attention_heads)
        kv_lo, kv_hi = tp.kv_heads(config.num_kv_heads(layer_idx))
        self.num_heads, self.num_kv_heads = q_hi - q_lo, kv_hi - kv_lo
        self.head_dim, self.v_head_dim = config.head_dim, config.v_head_dim
        self.window = config.sliding_window if self.is_sliding else 0
        self.scale = config.head_dim**-0.5
        self.v_scale = config.attention_value_scale
        hidden = config.hidden_size
        q_rows = self.num_heads * self.head_dim
        k_rows = self.num_kv_heads * self.head_dim
        v_rows = self.num_kv_heads * self.v_head_dim
        self.qkv_sizes = (q_rows, k_rows, v_rows)
        # q, k and v projections fused into one matmul, rows in that order (this rank's heads of each).
        self.qkv = Linear(
            self.qkv_sizes,
            hidden,
            dtype=dtype,
            device=device,
            fp8=fp8.get("qkv"),
            bias=config.attention_bias,
            row_offsets=(q_lo * self.head_dim, kv_lo * self.head_dim, kv_lo * self.v_head_dim),
        )
        self.o_proj = Linear(
            (hidden,), self.num_heads * self.v_head_dim, dtype=dtype, device=device, fp8=fp8.get("o_proj")
        )
        self.sinks = _param(self.num_heads, dtype=torch.float32, device=device) if self.is_sliding else None

    def forward(self, x, cos_sin, kv_cache, meta: AttentionMetadata, backend: AttentionBackend):
        # x: [num_tokens, hidden]
        num_tokens = x.shape[0]
        q, k, v = self.qkv(x).split(self.qkv_sizes, dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.reshape(num_tokens, self.num_kv_heads, self.v_head_dim) * self.v_scale
        cos, sin = cos_sin
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k_cache, v_cache = kv_cache
        out = backend.forward(
            q,
            k,
            v,
            k_cache,
            v_cache,
            meta,
            meta.pool(self.is_sliding),
            window=self.window,
            sinks=self.sinks,
            scale=self.scale,
        )
        return self.tp.all_reduce(self.o_proj(out.reshape(num_tokens, -1)))


class DecoderLayer(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        layer_idx: int,
        dtype: torch.dtype,
        device: torch.device,
        fp8: FP8Modules | None = None,
        tp: TensorParallel = SINGLE,
    ):
        super().__init__()

        def formats(module: str) -> dict[str, BlockFP8Format]:
            return fp8.formats_under(f"layers.{layer_idx}.{module}") if fp8 else {}

        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.attn = Attention(config, layer_idx, dtype, device, formats("attn"), tp)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        is_moe = config.mlp_layer_types[layer_idx] == "sparse"
        mlp = MoEMLP if is_moe else DenseMLP
        self.mlp = mlp(config, dtype, device, formats("mlp"), tp)

    def forward(self, x, cos_sin, kv_cache, meta, backend):
        x = x + self.attn(self.input_norm(x), cos_sin, kv_cache, meta, backend)
        return x + self.mlp(self.post_attn_norm(x))


class MiMoV2Model(nn.Module):
    """Hidden states and logits for packed tokens; KV lives in the caller's paged tensors.

    ``fp8`` names the linears held in block FP8 (the rest, and embeddings, norms, router, lm_head, in
    ``dtype``, which is also the activation dtype). ``tp`` is the part of the model this rank holds
    (``tensor_parallel.py``); every rank of a group runs ``forward`` and ``logits`` together.
    """

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device,
        fp8: FP8Modules | None = None,
        tp: TensorParallel = SINGLE,
    ):
        super().__init__()
        self.config = config
        self.tp = tp
        self.kv_config = local_kv_config(config, tp.size)  # the KV heads this rank's pools hold
        # vocabulary rows [vocab_lo, vocab_lo + rows) (the last rank's tail past vocab_size is zeros)
        self.vocab_lo, vocab_hi = tp.vocab_rows(config.vocab_size)
        rows = vocab_hi - self.vocab_lo
        self.embed = _param(rows, config.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, dtype, device, fp8, tp) for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.lm_head = (
            self.embed
            if config.tie_word_embeddings
            else _param(rows, config.hidden_size, dtype=dtype, device=device)
        )
        self.rotary = {
            kind: RotaryEmbedding(config.rope[kind], config.head_dim, device)
            for kind in (FULL, SLIDING)
            if kind in config.layer_types
        }

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [num_tokens]
        positions: torch.Tensor,  # int64 [num_tokens]
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],  # per layer (k_cache, v_cache)
        meta: AttentionMetadata,
        backend: AttentionBackend,
        before_layer: Callable[[int], None] | None = None,
    ) -> torch.Tensor:  # hidden states after the final norm: [num_tokens, hidden]
        """``before_layer(i)`` runs right before layer i (the prefix cache's per-layer KV loads)."""
        x = self._embed(input_ids)
        cos_sin = {kind: rope.cos_sin(positions, x.dtype) for kind, rope in self.rotary.items()}
        layers = zip(self.layers, self.config.layer_types, kv_caches, strict=True)
        for i, (layer, layer_type, kv_cache) in enumerate(layers):
            if before_layer is not None:
                before_layer(i)
            x = layer(x, cos_sin[layer_type], kv_cache, meta, backend)
        return self.norm(x)

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.embed)
        local = input_ids - self.vocab_lo
        held = (local >= 0) & (local < self.embed.shape[0])
        x = F.embedding(local.clamp(0, self.embed.shape[0] - 1), self.embed) * held[:, None].to(self.dtype)
        return self.tp.all_reduce(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [n, hidden] -> fp32 logits [n, vocab]
        local = F.linear(hidden, self.lm_head).float()
        if self.tp.size == 1:
            return local
        return self.tp.all_gather(local)[:, : self.config.vocab_size]
