"""What a MiMo-V2 model needs in GPU memory: weights (FP8 / bf16), KV bytes per token, prefix-cache
capacity in tokens, and how many GPUs of a kind one replica needs. Source of ``docs/hardware.md``:

    python -m worker.model.sizing tests/worker/model/fixtures/published/*/config.json

Assumptions (stated in the table's notes): weights as this engine holds them (projections FP8 +
fp32 block scales, or bf16; embeddings, lm_head, norms in bf16; router and sinks fp32; MTP layers not
loaded), KV in bf16, a replica's GPUs split weights and KV evenly (tensor + expert parallel, #14
items 2-4), a KV head is replicated on ranks beyond the head count, 90% of each GPU's memory usable
and 4 GiB of it kept for activations and workspace.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from worker.model.config import ModelConfig
from worker.model.hub_layout import checkpoint_layout

GIB = 2**30
KV_BYTES = 2  # bf16
FP32_ON_DEVICE = ("mlp.gate.weight", "e_score_correction_bias", "attention_sink_bias")
MEMORY_UTILIZATION = 0.90
RESERVE_BYTES_PER_GPU = 4 * GIB
BLOCK_SIZE = 16
WINDOWS_PER_PREFIX, PREFIX_TOKENS = 1, 8192  # one retained SWA window per 8K-token prefix


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int  # as torch.cuda reports it


GPUS = (Gpu("H100 80 GB", int(79.6 * GIB)), Gpu("H200 141 GB", int(139.8 * GIB)))


def weight_bytes(config: ModelConfig, *, fp8: bool) -> int:
    """Bytes of the weights on the device (MTP layers excluded: the loader skips them)."""
    total = 0
    for name, spec in checkpoint_layout(config).items():
        if name.startswith("model.mtp."):
            continue
        numel = math.prod(spec.shape)
        if spec.is_projection and fp8:
            rows, cols = spec.shape
            total += numel + 4 * (-(-rows // 128)) * (-(-cols // 128))
        else:
            total += numel * (4 if name.endswith(FP32_ON_DEVICE) else 2)
    return total


def kv_bytes_per_token(config: ModelConfig, *, sliding: bool, num_gpus: int = 1) -> int:
    """K + V bytes one token takes in all layers of one kind, summed over a replica of ``num_gpus``."""
    layers = config.swa_layers if sliding else config.full_layers
    heads = config.num_kv_heads_swa if sliding else config.num_kv_heads_full
    replicas = max(1, num_gpus // heads)  # ranks beyond the head count hold copies of a head
    return len(layers) * heads * replicas * (config.head_dim + config.v_head_dim) * KV_BYTES


def retained_window_tokens(config: ModelConfig) -> int:
    """SWA tokens one retained window keeps: the W - 1 keys before a resume point, in whole blocks."""
    return -(-(config.sliding_window - 1) // BLOCK_SIZE) * BLOCK_SIZE


@dataclass(frozen=True)
class Fit:
    num_gpus: int
    kv_budget_bytes: int
    cached_tokens: int  # full KV for every token + WINDOWS_PER_PREFIX windows per PREFIX_TOKENS
    cached_tokens_every_layer: int  # caching the SWA layers' KV for every token too


def fit(config: ModelConfig, gpu: Gpu, num_gpus: int, *, fp8: bool) -> Fit | None:
    """The prefix-cache budget left on ``num_gpus`` GPUs after the weights; None if they do not fit."""
    usable = num_gpus * (int(gpu.memory_bytes * MEMORY_UTILIZATION) - RESERVE_BYTES_PER_GPU)
    budget = usable - weight_bytes(config, fp8=fp8)
    if budget <= 0:
        return None
    full = kv_bytes_per_token(config, sliding=False, num_gpus=num_gpus)
    swa = kv_bytes_per_token(config, sliding=True, num_gpus=num_gpus)
    swa_share = swa * WINDOWS_PER_PREFIX * retained_window_tokens(config) / PREFIX_TOKENS
    return Fit(num_gpus, budget, int(budget / (full + swa_share)), budget // (full + swa))


def smallest_fit(config: ModelConfig, gpu: Gpu, *, fp8: bool, most: int = 64) -> Fit | None:
    """The fewest GPUs (a power of two, as tensor parallel wants) that hold the weights."""
    n = 1
    while n <= most:
        result = fit(config, gpu, n, fp8=fp8)
        if result is not None:
            return result
        n *= 2
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def _tokens(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def table(configs: dict[str, ModelConfig]) -> str:
    lines = [
        "| model | params (no MTP) | weights FP8 | weights bf16 | KV B/token, full layers | KV B/token, SWA layers |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        params = sum(
            math.prod(s.shape) for n, s in checkpoint_layout(c).items() if not n.startswith("model.mtp.")
        )
        full, swa = kv_bytes_per_token(c, sliding=False), kv_bytes_per_token(c, sliding=True)
        lines.append(
            f"| {name} | {params / 1e9:,.1f}B | {_gb(weight_bytes(c, fp8=True))} | "
            f"{_gb(weight_bytes(c, fp8=False))} | {full:,} ({len(c.full_layers)} layers) | "
            f"{swa:,} ({len(c.swa_layers)} layers) |"
        )
    lines += [
        "",
        "| model | GPU | weights | GPUs (fewest) | prefix-cache budget | tokens cached (ours) | "
        "tokens cached (every layer) | on 8 GPUs: budget / tokens (ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        for gpu in GPUS:
            for fp8 in (True, False):
                smallest, node = smallest_fit(c, gpu, fp8=fp8), fit(c, gpu, 8, fp8=fp8)
                row = f"| {name} | {gpu.name} | {'FP8' if fp8 else 'bf16'} | "
                if smallest is None:
                    lines.append(row + "more than 64 | | | | |")
                    continue
                on_node = (
                    f"{_gb(node.kv_budget_bytes)} / {_tokens(node.cached_tokens)}" if node else "does not fit"
                )
                lines.append(
                    row + f"{smallest.num_gpus} | {_gb(smallest.kv_budget_bytes)} | "
                    f"{_tokens(smallest.cached_tokens)} | {_tokens(smallest.cached_tokens_every_layer)} | "
                    f"{on_node} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hardware table for MiMo-V2 configs (markdown).")
    parser.add_argument(
        "configs", nargs="+", type=Path, help="config.json files (the parent dir names the model)"
    )
    args = parser.parse_args(argv)
    configs = {p.parent.name: ModelConfig.from_dict(json.loads(p.read_text())) for p in args.configs}
    print(table(configs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
