"""Building blocks of a MiMo-V2 decoder layer: RMSNorm, partial rotary embedding, dense and MoE MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worker.model.config import ModelConfig, RopeConfig
from worker.model.fp8_format import BlockFP8Format
from worker.model.linear import Linear
from worker.model.tensor_parallel import SINGLE, TensorParallel

_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


def activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype, device=device), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, scale in the model dtype: the reference's order of operations.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


class RotaryEmbedding:
    """cos/sin tables for one layer type; applies rotation to the first ``rotary_dim`` channels."""

    def __init__(self, rope: RopeConfig, head_dim: int, device: torch.device):
        dim = rope.rotary_dim(head_dim)
        self.inv_freq = 1.0 / (
            rope.theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
        )

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [num_tokens] -> cos, sin: [num_tokens, 1, rotary_dim]
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [num_tokens, num_heads, head_dim]; rotates x[..., :rotary_dim] and passes the rest through.
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


class DenseMLP(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device,
        fp8: dict[str, BlockFP8Format | None] | None = None,
        tp: TensorParallel = SINGLE,
    ):
        super().__init__()
        self.tp = tp
        lo, hi = tp.split(config.intermediate_size)  # this rank's intermediate columns
        inter, hidden = hi - lo, config.hidden_size
        fp8 = fp8 or {}
        # gate and up projections fused into one matmul: rows [0, inter) gate, [inter, 2*inter) up.
        self.gate_up = Linear(
            (inter, inter), hidden, dtype=dtype, device=device, fp8=fp8.get("gate_up"), row_offsets=(lo, lo)
        )
        self.down = Linear((hidden,), inter, dtype=dtype, device=device, fp8=fp8.get("down"))
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.tp.all_reduce(self.down(self.act(gate) * up))


class MoEMLP(nn.Module):
    """Routed experts with MiMo's sigmoid top-k router (grouped selection, correction bias, no shared expert)."""

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device,
        fp8: dict[str, BlockFP8Format | None] | None = None,
        tp: TensorParallel = SINGLE,
    ):
        super().__init__()
        fp8 = fp8 or {}
        num_experts, hidden = config.num_experts, config.hidden_size
        if num_experts % config.n_group:
            raise ValueError(f"n_routed_experts {num_experts} is not divisible by n_group {config.n_group}")
        self.config = config
        self.tp = tp
        # this rank's experts [experts_lo, hi) and, of each, the intermediate columns [lo, lo + inter)
        self.experts_lo, experts_hi = tp.experts(num_experts)
        lo, hi = tp.expert_width(config.moe_intermediate_size)
        inter = hi - lo
        # The router stays in fp32 as in the reference (its weight and bias are kept fp32 there too).
        self.router = nn.Parameter(
            torch.empty(num_experts, hidden, dtype=torch.float32, device=device), requires_grad=False
        )
        self.correction_bias = nn.Parameter(
            torch.zeros(num_experts, dtype=torch.float32, device=device), requires_grad=False
        )
        stacked = {"dtype": dtype, "device": device, "num_experts": experts_hi - self.experts_lo}
        self.gate_up = Linear((inter, inter), hidden, fp8=fp8.get("gate_up"), row_offsets=(lo, lo), **stacked)
        self.down = Linear((hidden,), inter, fp8=fp8.get("down"), **stacked)
        self.act = activation(config.hidden_act)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (weights [num_tokens, top_k] fp32, expert ids [num_tokens, top_k])."""
        cfg = self.config
        scores = F.linear(x.float(), self.router).sigmoid()
        for_choice = scores + self.correction_bias
        per_group = cfg.num_experts // cfg.n_group
        group_scores = for_choice.view(-1, cfg.n_group, per_group).topk(min(2, per_group), dim=-1)[0].sum(-1)
        group_idx = group_scores.topk(cfg.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1.0)
        expert_mask = group_mask.unsqueeze(-1).expand(-1, cfg.n_group, per_group).reshape(-1, cfg.num_experts)
        for_choice = for_choice.masked_fill(expert_mask == 0, float("-inf"))
        expert_ids = for_choice.topk(cfg.num_experts_per_tok, dim=-1, sorted=False)[1]
        weights = scores.gather(1, expert_ids)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * cfg.routed_scaling_factor, expert_ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, hidden]
        weights, expert_ids = self.route(x)
        num_tokens, top_k = expert_ids.shape
        flat_ids = expert_ids.flatten()
        # (token, k) pairs sorted by expert, so each expert runs one matmul over its tokens.
        order = flat_ids.argsort(stable=True)
        counts = torch.bincount(flat_ids, minlength=self.config.num_experts).tolist()
        sorted_x = x[order // top_k]
        # Zeros for the pairs whose expert another rank holds (expert parallel): the all-reduce adds
        # that rank's result in.
        sorted_out = torch.zeros(num_tokens * top_k, x.shape[-1], dtype=x.dtype, device=x.device)
        start = 0
        held = range(self.experts_lo, self.experts_lo + self.down.weight.shape[0])
        for expert, count in enumerate(counts):
            if count and expert in held:
                rows = slice(start, start + count)
                local = expert - self.experts_lo
                gate, up = self.gate_up(sorted_x[rows], expert=local).chunk(2, dim=-1)
                sorted_out[rows] = self.down(self.act(gate) * up, expert=local)
            start += count
        per_pair = torch.empty_like(sorted_out)
        per_pair[order] = sorted_out
        # Routing weights stay fp32 until the product, as in the reference.
        weighted = per_pair.view(num_tokens, top_k, -1) * weights[:, :, None]
        out = weighted.sum(dim=1).to(x.dtype)
        return self.tp.all_reduce(out)
