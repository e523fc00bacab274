"""Bytes of KV per block, the window arithmetic, and the memory budgets every policy of
``hybatch bench cache-trace`` is given.

The model is MiMo-V2.5-Pro's shape (70 layers: 10 full + 60 sliding-window, window 128; 8 KV heads
on full layers, 16 on SWA layers, q/k head dim 192, v 128, bf16), so one token costs

    full layers  10 x  8 heads x (192 + 128) x 2 B =  51,200 B
    SWA layers   60 x 16 heads x (192 + 128) x 2 B = 614,400 B
    every layer                                     665,600 B

A resumed computation at block boundary ``p`` (in blocks) reads the ``W - 1`` keys before it
(``sliding_window`` counts the query itself), i.e. SWA blocks ``[window_start(p), p)``.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9

# MiMo-V2.5-Pro's attention shape in config.json terms (the MLP fields do not change KV bytes).
PRO_CONFIG = {
    "model_type": "mimo_v2_flash",
    "num_hidden_layers": 70,
    "layer_types": ["full_attention" if i % 7 == 0 else "sliding_attention" for i in range(70)],
    "mlp_layer_types": ["dense"] * 70,
    "num_key_value_heads": 8,
    "head_dim": 192,
    "v_head_dim": 128,
    "sliding_window": 128,
    "vocab_size": 152576,
    "max_position_embeddings": 131072,
}


@dataclass(frozen=True)
class KVBytes:
    block_size: int  # tokens per block, the same for every policy
    window: int  # sliding window, counting the query itself
    full_block_bytes: int  # one block across every full-attention layer, K and V
    swa_block_bytes: int  # one block across every sliding-window layer, K and V

    @property
    def every_layer_block_bytes(self) -> int:
        return self.full_block_bytes + self.swa_block_bytes

    def window_start(self, num_blocks: int) -> int:
        """First SWA block a computation resuming after ``num_blocks`` full blocks reads."""
        return max(0, num_blocks * self.block_size - self.window + 1) // self.block_size

    @property
    def window_blocks(self) -> int:
        """SWA blocks one resume point needs once it is past the first window."""
        return -(-(self.window - 1) // self.block_size)


def pro_kv_bytes(block_size: int) -> KVBytes:
    """The MiMo-V2.5-Pro shape's bytes per block, as the engine's own layout computes them."""
    import torch

    from worker.engine.kv_layout import block_bytes
    from worker.model.config import ModelConfig

    config = ModelConfig.from_dict(PRO_CONFIG)
    return KVBytes(
        block_size,
        config.sliding_window,
        block_bytes(config, block_size, torch.bfloat16, sliding=False),
        block_bytes(config, block_size, torch.bfloat16, sliding=True),
    )


@dataclass(frozen=True)
class Budget:
    """Device KV memory: this cache's full pool and SWA pool; every peer gets their sum.
    ``split_by_engine``: the two came from a total the way the engine splits it (``plan_layout``)."""

    full_bytes: int
    swa_bytes: int
    split_by_engine: bool = False

    @property
    def total_bytes(self) -> int:
        return self.full_bytes + self.swa_bytes

    @property
    def label(self) -> str:
        split = f"{self.full_bytes / GB:.3g}+{self.swa_bytes / GB:.3g}"
        return f"{self.total_bytes / GB:.3g} GB ({split})" if self.split_by_engine else f"{split} GB"

    @classmethod
    def parse(cls, text: str, chunk_tokens: int, block_size: int) -> Budget:
        """``TOTAL`` in GB (10^9 bytes), split between the pools as the worker's engine splits it,
        or ``FULL+SWA`` to choose the split, e.g. ``20`` or ``4+2``."""
        full, sep, swa = text.partition("+")
        try:
            if not sep:
                return cls.engine_split(int(float(full) * GB), chunk_tokens, block_size)
            budget = cls(int(float(full) * GB), int(float(swa) * GB))
        except ValueError as exc:
            raise ValueError(f"budget {text!r}: expected TOTAL_GB or FULL_GB+SWA_GB, e.g. 20 or 4+2 ({exc})") from exc
        if budget.full_bytes <= 0 or budget.swa_bytes <= 0:
            raise ValueError(f"budget {text!r}: both pools need a positive size")
        return budget

    @classmethod
    def engine_split(cls, total_bytes: int, chunk_tokens: int, block_size: int) -> Budget:
        """``total_bytes`` split as the worker's engine splits ``HYBATCH_KV_CACHE_GB`` on this shape
        (its default SWA share, ``max_num_seqs`` running sequences, ``chunk_tokens`` per step)."""
        import torch

        from worker.engine.kv_layout import plan_layout
        from worker.engine_pool import MAX_NUM_SEQS
        from worker.model.config import ModelConfig

        layout = plan_layout(
            ModelConfig.from_dict(PRO_CONFIG),
            torch.bfloat16,
            block_size=block_size,
            kv_cache_bytes=total_bytes,
            max_num_seqs=MAX_NUM_SEQS,
            max_num_batched_tokens=chunk_tokens,
        )
        swa_bytes = layout.num_swa_blocks * layout.swa_block_bytes
        return cls(total_bytes - swa_bytes, swa_bytes, split_by_engine=True)


class BudgetTooSmall(RuntimeError):
    """One request does not fit the policy's memory even with its cache emptied."""


@dataclass(frozen=True)
class Holding:
    """What a cache keeps when nothing runs: tokens with full-layer KV, and the bytes it holds."""

    cached_tokens: int
    cached_bytes: int

    def multiplier(self, kv: KVBytes) -> float:
        """Cached tokens per byte relative to caching every layer of every token (1.0)."""
        if not self.cached_bytes:
            return 0.0
        every_layer = self.cached_tokens * kv.every_layer_block_bytes / kv.block_size
        return every_layer / self.cached_bytes
