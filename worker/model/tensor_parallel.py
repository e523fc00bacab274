"""Which part of the model one tensor-parallel rank holds, and the collectives its layers call.

With ``size`` ranks (Megatron-style, the activations between layers replicated on every rank):

- attention: rank ``r`` holds query heads ``[r*h, (r+1)*h)``, ``h = num_heads / size``, with their
  sinks, and the KV heads those queries read. With at least as many KV heads as ranks each rank holds
  ``kv / size`` of them; with fewer (MiMo-V2-Flash has 4 full-attention KV heads, so TP=8) each KV head
  is replicated on ``size / kv`` ranks, as vLLM does. The q/k/v projection is split by output rows
  (column parallel), ``o_proj`` by input columns (row parallel), then one all-reduce.
- dense MLP: ``gate_up`` column parallel, ``down`` row parallel, one all-reduce.
- MoE: with ``expert_parallel`` rank ``r`` holds whole experts ``[r*E/size, (r+1)*E/size)``; every rank
  routes every token (the router is replicated and its inputs are identical), computes the pairs that
  chose its experts, and the one all-reduce of the layer output combines them. This is the all-gather
  form of dispatch: tokens are already on every rank between layers, so sending them anywhere
  (all-to-all) would only pay off with data-parallel attention, which we do not run. Without expert
  parallel each expert's own ``moe_intermediate_size`` is split like a dense MLP.
- vocabulary: the embedding and LM head hold rows ``[r*V', (r+1)*V')``, ``V' = ceil(V / size)`` (the
  last rank's tail padded): the embedding masks ids outside its rows and all-reduces, the LM head
  all-gathers its logits.

``SINGLE`` (one rank) makes every collective the identity, so a one-rank model runs exactly as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch

from worker.model.config import CheckpointError, ModelConfig


class Collectives(Protocol):
    """What a sharded layer asks of the rank group; every rank calls each one in the same order."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the ranks (in place or not); every rank gets it."""

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """The ranks' ``x`` concatenated along the last dim, in rank order; every rank gets it."""


@dataclass(frozen=True)
class TensorParallel:
    rank: int
    size: int
    expert_parallel: bool = False
    comm: Collectives | None = None  # None only for one rank

    def __post_init__(self):
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} is outside [0, {self.size})")
        if self.size > 1 and self.comm is None:
            raise ValueError("a tensor-parallel group of more than one rank needs its collectives")

    # -- collectives -------------------------------------------------------------------------------
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.comm is None else self.comm.all_reduce(x)

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.comm is None else self.comm.all_gather(x)

    # -- what this rank holds ------------------------------------------------------------------------
    def split(self, total: int) -> tuple[int, int]:
        """``[lo, hi)`` of an evenly divided dimension (callers checked divisibility)."""
        width = total // self.size
        return self.rank * width, (self.rank + 1) * width

    def kv_heads(self, num_kv_heads: int) -> tuple[int, int]:
        """``[lo, hi)`` of the KV heads this rank's query heads read."""
        if num_kv_heads >= self.size:
            return self.split(num_kv_heads)
        head = self.rank // (self.size // num_kv_heads)  # replicated on size / num_kv_heads ranks
        return head, head + 1

    def vocab_rows(self, vocab_size: int) -> tuple[int, int]:
        """``[lo, lo + ceil(V / size))``: may run past ``vocab_size`` on the last rank (padding)."""
        width = -(-vocab_size // self.size)
        return self.rank * width, (self.rank + 1) * width

    def experts(self, num_experts: int) -> tuple[int, int]:
        """``[lo, hi)`` of the experts held whole (expert parallel), else all of them."""
        return self.split(num_experts) if self.expert_parallel else (0, num_experts)

    def expert_width(self, moe_intermediate_size: int) -> tuple[int, int]:
        """``[lo, hi)`` of each held expert's intermediate dim (split only without expert parallel)."""
        return (0, moe_intermediate_size) if self.expert_parallel else self.split(moe_intermediate_size)


def local_kv_config(config: ModelConfig, size: int) -> ModelConfig:
    """``config`` with the KV head counts each of ``size`` ranks holds (the same on every rank)."""
    return dataclasses.replace(
        config,
        num_kv_heads_full=max(1, config.num_kv_heads_full // size),
        num_kv_heads_swa=max(1, config.num_kv_heads_swa // size),
    )


SINGLE = TensorParallel(0, 1)


def check_shardable(config: ModelConfig, size: int, expert_parallel: bool) -> None:
    """Raises ``CheckpointError`` naming every dimension ``size`` ranks cannot split."""
    if size < 1:
        raise CheckpointError(f"tensor_parallel_size must be at least 1, not {size}")
    problems = []

    def divides(what: str, value: int) -> None:
        if value % size:
            problems.append(f"{what} ({value}) is not divisible by tensor_parallel_size {size}")

    divides("num_attention_heads", config.num_attention_heads)
    kinds = {"full-attention": config.full_layers, "sliding-window": config.swa_layers}
    for kind, layers in kinds.items():
        if not layers:
            continue
        kv = config.num_kv_heads(layers[0])
        if kv % size and size % kv:
            problems.append(
                f"{kind} KV heads ({kv}) neither divide nor are divided by tensor_parallel_size {size}"
            )
    if "dense" in config.mlp_layer_types:
        divides("intermediate_size", config.intermediate_size)
    if "sparse" in config.mlp_layer_types:
        if expert_parallel:
            divides("n_routed_experts (expert parallel)", config.num_experts)
        else:
            divides(
                "moe_intermediate_size (experts split without expert parallel)", config.moe_intermediate_size
            )
    if problems:
        raise CheckpointError("cannot shard the model: " + "; ".join(problems))
