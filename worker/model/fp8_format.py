"""The FP8 checkpoint format we serve: e4m3 weights with 128x128 block scales (DeepSeek / MiMo-V2).

``config.json`` says ``"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
"activation_scheme": "dynamic", "weight_block_size": [128, 128]}``; each quantized ``X.weight`` is
``float8_e4m3fn`` ``[out, in]`` beside ``X.weight_scale_inv``, float32 ``[ceil(out/128), ceil(in/128)]``,
and the real weight is ``weight[n, k] * weight_scale_inv[n // 128, k // 128]``. Tensors without a
scale (norms, embeddings, lm_head, the router gate) are stored in the checkpoint's dtype.

``activation_scheme: "dynamic"`` means no activation scales are stored (they would be computed per
call); we run weight-only (the FP8 weight is widened in the matmul), so there is nothing to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.block_fp8_reference import dequantize_block_fp8

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_SUFFIX = "_scale_inv"  # X.weight -> X.weight_scale_inv
SUPPORTED_BLOCK_SIZES = ((128, 128),)


class QuantizationConfigError(ValueError):
    """A ``quantization_config`` naming something we cannot serve."""


@dataclass(frozen=True)
class BlockFP8Format:
    """How a checkpoint's quantized weights are blocked: ``block_out`` rows x ``block_in`` columns."""

    block_out: int
    block_in: int
    modules_to_not_convert: tuple[str, ...] = ()

    def to_config(self) -> dict:
        """The ``quantization_config`` entry of ``config.json`` for this format."""
        entry = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": [self.block_out, self.block_in],
        }
        if self.modules_to_not_convert:
            entry["modules_to_not_convert"] = list(self.modules_to_not_convert)
        return entry

    def leaves_unconverted(self, module_name: str) -> bool:
        """``modules_to_not_convert`` as transformers reads it: an entry names a module by substring."""
        return any(entry in module_name for entry in self.modules_to_not_convert)

    def scale_shape(self, out_features: int, in_features: int) -> tuple[int, int]:
        return (-(-out_features // self.block_out), -(-in_features // self.block_in))


def parse_quantization_config(raw: dict | None) -> BlockFP8Format | None:
    """None for an unquantized checkpoint; the format, or a clear refusal naming what is unsupported."""
    if raw is None:
        return None
    method = raw.get("quant_method")
    if method != "fp8":
        raise QuantizationConfigError(
            f"quantization_config quant_method {method!r} is not supported (hybatch serves 'fp8')"
        )
    fmt = raw.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise QuantizationConfigError(
            f"quantization_config fmt {fmt!r} is not supported (hybatch serves 'e4m3')"
        )
    scheme = raw.get("activation_scheme", "dynamic")
    if scheme != "dynamic":
        raise QuantizationConfigError(
            f"quantization_config activation_scheme {scheme!r} is not supported (hybatch serves 'dynamic')"
        )
    block = tuple(raw.get("weight_block_size") or ())
    if block not in SUPPORTED_BLOCK_SIZES:
        raise QuantizationConfigError(
            f"quantization_config weight_block_size {list(block)} is not supported "
            f"(hybatch serves {[list(b) for b in SUPPORTED_BLOCK_SIZES]}; per-tensor FP8 is not supported)"
        )
    skip = raw.get("modules_to_not_convert") or raw.get("ignored_layers") or ()
    return BlockFP8Format(block_out=block[0], block_in=block[1], modules_to_not_convert=tuple(skip))


def block_scale_rows(out_features: int, block_out: int) -> torch.Tensor:
    """int32 [out_features]: the scale row of each output row of one checkpoint tensor."""
    return torch.arange(out_features, dtype=torch.int32) // block_out


def quantize_weight(weight: torch.Tensor, fmt: BlockFP8Format) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] -> (float8_e4m3fn [out, in], float32 scale_inv [ceil(out/bo), ceil(in/bi)]).

    Each block's largest magnitude maps to 448, the largest e4m3 value; an all-zero block gets scale 1.
    """
    out_features, in_features = weight.shape
    rows, cols = fmt.scale_shape(out_features, in_features)
    padded = torch.zeros(rows * fmt.block_out, cols * fmt.block_in, dtype=torch.float32)
    padded[:out_features, :in_features] = weight.float()
    blocks = padded.view(rows, fmt.block_out, cols, fmt.block_in)
    amax = blocks.abs().amax(dim=(1, 3))  # [rows, cols]
    scale_inv = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    scaled = blocks / scale_inv[:, None, :, None]
    quantized = scaled.clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE).view(padded.shape)
    return quantized[:out_features, :in_features].contiguous(), scale_inv.contiguous()


def dequantize_weight(
    weight: torch.Tensor, scale_inv: torch.Tensor, fmt: BlockFP8Format, dtype: torch.dtype
) -> torch.Tensor:
    """The real weight of one checkpoint tensor: ``weight * scale_inv`` per block, in ``dtype``."""
    expected = fmt.scale_shape(*weight.shape)
    if tuple(scale_inv.shape) != expected:
        raise QuantizationConfigError(
            f"weight_scale_inv has shape {tuple(scale_inv.shape)}, expected {expected} for weight "
            f"{tuple(weight.shape)} in {fmt.block_out}x{fmt.block_in} blocks"
        )
    scale_row = block_scale_rows(weight.shape[0], fmt.block_out)
    return dequantize_block_fp8(weight, scale_inv.float(), scale_row, block_k=fmt.block_in, dtype=dtype)


@dataclass(frozen=True)
class FP8Modules:
    """Which of the model's linears are held in FP8, by our module names (``layers.3.attn.qkv``).

    The loader decides from the checkpoint: a linear is FP8 when every tensor fused into it has a
    ``weight_scale_inv`` and none is named in ``modules_to_not_convert``.
    """

    fmt: BlockFP8Format
    names: frozenset[str]

    def formats_under(self, module: str) -> dict[str, BlockFP8Format]:
        """The FP8 linears directly under ``module`` (``layers.3.attn`` -> ``{"qkv": fmt, ...}``)."""
        return {name.rpartition(".")[2]: self.fmt for name in self.names if name.rpartition(".")[0] == module}
