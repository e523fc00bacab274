"""``Linear``: one (possibly fused, possibly per-expert) projection, in the model dtype or block FP8.

Several checkpoint tensors may be fused along the output dim (q, k, v; gate, up): ``part_rows`` gives
their heights, in order. Held in FP8, the weight stays ``float8_e4m3fn`` on the device and each part
keeps its own scale blocks (rows ``[first_scale_row(i), +ceil(rows_i / block_out))`` of ``scale_inv``);
``scale_row`` maps every output row to its scale row, so a part need not be block-aligned.

Splitting for tensor parallel stays a slicing job: a column split takes each part's rows with their
``scale_row`` entries (and the scale rows they name); a row split takes input columns, and with it
the scale columns ``[k0 // block_in, k1 // block_in)``, whole when each rank's width is a multiple of
``block_in`` (128; every MiMo-V2 width is).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import block_fp8_linear
from kernels.block_fp8_reference import block_fp8_linear_reference
from worker.model.fp8_format import FP8_DTYPE, BlockFP8Format, dequantize_weight


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


class Linear(nn.Module):
    """``y = x @ W.T (+ b)``; ``num_experts`` stacks one weight per expert (``forward(x, expert=e)``)."""

    def __init__(
        self,
        part_rows: tuple[int, ...],
        in_features: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
        fp8: BlockFP8Format | None = None,
        num_experts: int | None = None,
        bias: bool = False,
        row_offsets: tuple[int, ...] | None = None,
    ):
        """``row_offsets``: where each part's rows start in the checkpoint tensor they come from (a
        tensor-parallel rank holds rows ``[offset, offset + rows)`` of each part); zeros when whole."""
        super().__init__()
        self.part_rows, self.in_features, self.fp8 = tuple(part_rows), in_features, fp8
        self.row_offsets = tuple(row_offsets) if row_offsets is not None else (0,) * len(self.part_rows)
        out_features = sum(self.part_rows)
        lead = () if num_experts is None else (num_experts,)
        self.weight = _frozen(
            torch.empty(*lead, out_features, in_features, dtype=FP8_DTYPE if fp8 else dtype, device=device)
        )
        self.bias = _frozen(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        if fp8 is None:
            self.scale_inv = None
            return
        bo = fp8.block_out
        # part i holds checkpoint rows [off, off + rows): the scale rows [off // bo, ceil((off + rows) / bo))
        scale_rows = [
            -(-(off + rows) // bo) - off // bo
            for off, rows in zip(self.row_offsets, self.part_rows, strict=True)
        ]
        num_k_blocks = fp8.scale_shape(1, in_features)[1]
        self.scale_inv = _frozen(
            torch.ones(*lead, sum(scale_rows), num_k_blocks, dtype=torch.float32, device=device)
        )
        # part i's row r -> scale row (first scale row of part i) + (off + r) // bo - off // bo
        firsts = [sum(scale_rows[:i]) for i in range(len(scale_rows))]
        scale_row = torch.cat(
            [
                first + (off + torch.arange(rows)) // bo - off // bo
                for first, off, rows in zip(firsts, self.row_offsets, self.part_rows, strict=True)
            ]
        )
        self.register_buffer("scale_row", scale_row.to(device=device, dtype=torch.int32), persistent=False)
        self._first_scale_row = tuple(firsts)

    @property
    def out_features(self) -> int:
        return sum(self.part_rows)

    @property
    def is_stacked(self) -> bool:
        """One weight per expert: ``weight`` is [num_experts, out_features, in_features]."""
        return self.weight.dim() == 3

    def part_range(self, part: int) -> tuple[int, int]:
        """Output rows [lo, hi) of part ``part``."""
        lo = sum(self.part_rows[:part])
        return lo, lo + self.part_rows[part]

    def load_part(
        self,
        part: int,
        weight: torch.Tensor,
        scale_inv: torch.Tensor | None,
        *,
        fmt: BlockFP8Format | None,
        expert: int | None = None,
    ) -> None:
        """Copies one checkpoint tensor (and its block scales, if stored in FP8) into part ``part``.

        A FP8 tensor loaded into a linear held in the model dtype is dequantized here, one tensor at a
        time (a fused group whose parts are not all FP8 is held in the model dtype).
        """
        lo, hi = self.part_range(part)
        target = self.weight if expert is None else self.weight[expert]
        if self.fp8 is None:
            if scale_inv is not None:
                weight = dequantize_weight(weight, scale_inv, fmt, target.dtype)
            target[lo:hi].copy_(weight.to(device=target.device, dtype=target.dtype))
            return
        first = self._first_scale_row[part]
        scales = self.scale_inv if expert is None else self.scale_inv[expert]
        target[lo:hi].copy_(weight.to(device=target.device))
        scales[first : first + scale_inv.shape[0]].copy_(
            scale_inv.to(device=scales.device, dtype=torch.float32)
        )

    def forward(self, x: torch.Tensor, expert: int | None = None) -> torch.Tensor:
        # x: [num_tokens, in_features] -> [num_tokens, out_features]
        weight = self.weight if expert is None else self.weight[expert]
        if self.fp8 is None:
            return F.linear(x, weight, self.bias)
        scale_inv = self.scale_inv if expert is None else self.scale_inv[expert]
        # CUDA: the Triton kernel widens FP8 tiles in registers. Elsewhere: the reference, which
        # dequantizes this one weight for the call (a layer's worth of memory, freed right after).
        matmul = block_fp8_linear if x.is_cuda else block_fp8_linear_reference
        return matmul(x, weight, scale_inv, self.scale_row, block_k=self.fp8.block_in, bias=self.bias)
