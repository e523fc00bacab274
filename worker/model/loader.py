"""Load a Hugging Face MiMo-V2 checkpoint directory into ``MiMoV2Model``.

Accepts ``model.safetensors`` or shards listed in ``model.safetensors.index.json``; experts may be stored
per expert (``mlp.experts.{e}.gate_proj.weight``, the hub layout) or stacked (``mlp.experts.gate_up_proj``).
FP8 checkpoints (``fp8_format``): a linear whose tensors all carry ``weight_scale_inv`` is held in FP8
on the device, tensor by tensor as read (the model is never whole in a wider dtype); everything else
in the model dtype. MTP weights (``model.mtp.*``, the multi-token-prediction layers) are skipped
unread, as transformers skips them: speculative decoding does not use them yet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from worker.model.config import CheckpointError, ModelConfig
from worker.model.fp8_format import FP8_DTYPE, SCALE_SUFFIX, BlockFP8Format, FP8Modules
from worker.model.linear import Linear
from worker.model.mimo import MiMoV2Model
from worker.model.shard_cuts import Cut, cut_tensor, fp8_column_cut_aligned, linear_cuts
from worker.model.tensor_parallel import SINGLE, TensorParallel, check_shardable
from worker.model.tensor_source import TensorSource

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise CheckpointError(f"dtype {name} is not supported (use float32, bfloat16 or float16)")
    if name not in DTYPES:
        raise CheckpointError(
            f"unknown dtype {name!r} (use one of: float32, bfloat16, float16; an FP8 checkpoint says so in "
            "config.json and runs in one of these)"
        )
    return DTYPES[name]


MTP_PREFIX = "model.mtp."


def _assign(target: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise CheckpointError(
            f"tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)} from config.json"
        )
    if tensor.dtype == FP8_DTYPE:
        raise CheckpointError(f"tensor {name} is float8 but this module is not quantized in hybatch")
    if not (tensor.dtype.is_floating_point):
        raise CheckpointError(
            f"tensor {name} has dtype {tensor.dtype}; only floating-point weights are supported"
        )
    target.copy_(tensor.to(device=target.device, dtype=target.dtype))


class _Reader:
    def __init__(self, source: TensorSource):
        self.source = source
        self.used: set[str] = set()

    def take(self, name: str) -> torch.Tensor:
        if name not in self.source:
            raise CheckpointError(f"checkpoint is missing tensor {name}")
        self.used.add(name)
        return self.source.get(name)

    def skip(self, name: str) -> None:
        """Marks ``name`` as read on purpose without reading it (another rank's expert)."""
        if name not in self.source:
            raise CheckpointError(f"checkpoint is missing tensor {name}")
        self.used.add(name)

    def take_first(self, *names: str) -> torch.Tensor:
        for name in names:
            if name in self.source:
                return self.take(name)
        raise CheckpointError(f"checkpoint is missing tensor {names[0]}")


def linear_sources(config: ModelConfig, layer_idx: int, source) -> dict[str, list[tuple[str, ...]]]:
    """Our linears of layer ``layer_idx`` -> per expert (one entry if not MoE) the checkpoint modules
    fused into it, in part order: ``attn.qkv`` <- (q_proj, k_proj, v_proj) and so on.

    Stacked experts (``mlp.experts.gate_up_proj``) are one tensor, not listed here (never FP8).
    """
    a, m = f"model.layers.{layer_idx}.self_attn.", f"model.layers.{layer_idx}.mlp."
    sources = {"attn.qkv": [(a + "q_proj", a + "k_proj", a + "v_proj")], "attn.o_proj": [(a + "o_proj",)]}
    if config.mlp_layer_types[layer_idx] == "dense":
        sources["mlp.gate_up"] = [(m + "gate_proj", m + "up_proj")]
        sources["mlp.down"] = [(m + "down_proj",)]
    elif m + "experts.gate_up_proj" not in source:
        experts = [f"{m}experts.{e}." for e in range(config.num_experts)]
        sources["mlp.gate_up"] = [(x + "gate_proj", x + "up_proj") for x in experts]
        sources["mlp.down"] = [(x + "down_proj",) for x in experts]
    return sources


def plan_fp8(config: ModelConfig, source, tp: TensorParallel = SINGLE) -> FP8Modules | None:
    """The linears held in FP8: every tensor fused into them has a scale, none is left unconverted,
    and this rank's columns of it start on a scale block (``shard_cuts``)."""
    fmt = config.quantization
    if fmt is None:
        stray = sorted(n for n in source.names() if n.endswith(SCALE_SUFFIX) and not n.startswith(MTP_PREFIX))
        if stray:
            raise CheckpointError(
                f"tensor {stray[0]} is a block scale but config.json has no quantization_config"
            )
        return None
    names = set()
    for i in range(config.num_layers):
        for name, per_expert in linear_sources(config, i, source).items():
            modules = [module for parts in per_expert for module in parts]
            scaled = all(
                f"{x}.weight{SCALE_SUFFIX}" in source and not fmt.leaves_unconverted(x) for x in modules
            )
            if scaled and fp8_column_cut_aligned(linear_cuts(config, tp, i, name), fmt):
                names.add(f"layers.{i}.{name}")
    return FP8Modules(fmt, frozenset(names))


def load_model(
    checkpoint_dir: str | Path, dtype: torch.dtype, device: torch.device, tp: TensorParallel = SINGLE
) -> MiMoV2Model:
    """Builds the model for ``config.json`` and fills it from the checkpoint's safetensors; with
    ``tp`` of several ranks, only this rank's part (``tensor_parallel.py``)."""
    checkpoint_dir = Path(checkpoint_dir)
    config = ModelConfig.from_dir(checkpoint_dir)
    check_shardable(config, tp.size, tp.expert_parallel)
    source = TensorSource(checkpoint_dir)
    model = MiMoV2Model(config, dtype, device, plan_fp8(config, source, tp), tp)
    reader = _Reader(source)
    with torch.no_grad():
        _assign_vocab(
            model, model.embed, reader.take("model.embed_tokens.weight"), "model.embed_tokens.weight"
        )
        _assign(model.norm.weight, reader.take("model.norm.weight"), "model.norm.weight")
        if not config.tie_word_embeddings:
            _assign_vocab(model, model.lm_head, reader.take("lm_head.weight"), "lm_head.weight")
        for i, layer in enumerate(model.layers):
            _load_layer(reader, i, layer, config, tp)
    names = reader.source.names()
    mtp = sorted(n for n in names if n.startswith(MTP_PREFIX))
    if mtp:
        log.info(
            "skipping %d MTP tensors in %s (speculative decoding does not use them yet)",
            len(mtp),
            checkpoint_dir,
        )
    ignored = sorted(n for n in names - reader.used if not n.startswith(MTP_PREFIX))
    if ignored and not (config.tie_word_embeddings and ignored == ["lm_head.weight"]):
        log.warning(
            "ignoring %d unexpected tensors in %s, e.g. %s", len(ignored), checkpoint_dir, ignored[:3]
        )
    return model.eval()


def _assign_vocab(model: MiMoV2Model, target: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    """This rank's vocabulary rows of the embedding or LM head; rows past the vocabulary stay zero."""
    rows = max(0, min(target.shape[0], tensor.shape[0] - model.vocab_lo))
    if model.tp.size == 1 or tensor.shape[0] != model.config.vocab_size:
        _assign(target, tensor, name)  # one rank, or a shape error to report in full
        return
    target.zero_()
    _assign(target[:rows], tensor[model.vocab_lo : model.vocab_lo + rows], name)


def _load_part(
    reader: _Reader,
    linear: Linear,
    part: int,
    module: str,
    fmt: BlockFP8Format | None,
    expert=None,
    cut: Cut | None = None,
) -> None:
    weight = reader.take(module + ".weight")
    lo, hi = linear.part_range(part)
    expected = (hi - lo, linear.in_features)
    if cut is not None:  # the whole checkpoint tensor; this rank keeps the cut
        expected = (cut.total, expected[1]) if cut.dim == 0 else (expected[0], cut.total)
    if tuple(weight.shape) != expected:
        raise CheckpointError(
            f"tensor {module}.weight has shape {tuple(weight.shape)}, expected {expected} from config.json"
        )
    scale_name = f"{module}.weight{SCALE_SUFFIX}"
    scale_inv = reader.take(scale_name) if scale_name in reader.source else None
    if scale_inv is None:
        if weight.dtype == FP8_DTYPE:
            raise CheckpointError(f"tensor {module}.weight is float8 without {scale_name}")
        if not weight.dtype.is_floating_point:
            raise CheckpointError(
                f"tensor {module}.weight has dtype {weight.dtype}; only floating-point weights"
            )
    else:
        if weight.dtype != FP8_DTYPE:
            raise CheckpointError(
                f"tensor {module}.weight has a block scale but dtype {weight.dtype}, not float8_e4m3fn"
            )
        if tuple(scale_inv.shape) != fmt.scale_shape(*expected):
            raise CheckpointError(
                f"tensor {scale_name} has shape {tuple(scale_inv.shape)}, expected "
                f"{fmt.scale_shape(*expected)} for {fmt.block_out}x{fmt.block_in} blocks"
            )
    weight, scale_inv = cut_tensor(
        weight, scale_inv, cut, fmt=fmt, keep_fp8=linear.fp8 is not None, name=f"{module}.weight"
    )
    linear.load_part(part, weight, scale_inv, fmt=fmt, expert=expert)


def _load_linears(reader: _Reader, layer_idx: int, layer, config: ModelConfig, tp: TensorParallel) -> None:
    linears = {
        "attn.qkv": layer.attn.qkv,
        "attn.o_proj": layer.attn.o_proj,
        "mlp.gate_up": layer.mlp.gate_up,
        "mlp.down": layer.mlp.down,
    }
    first, end = tp.experts(config.num_experts)
    for name, per_expert in linear_sources(config, layer_idx, reader.source).items():
        linear = linears[name]
        cuts = linear_cuts(config, tp, layer_idx, name)
        for expert, modules in enumerate(per_expert):
            held = not linear.is_stacked or first <= expert < end
            for part, module in enumerate(modules):
                if not held:  # another rank's expert (expert parallel)
                    reader.skip(module + ".weight")
                    if f"{module}.weight{SCALE_SUFFIX}" in reader.source:
                        reader.skip(f"{module}.weight{SCALE_SUFFIX}")
                    continue
                at = expert - first if linear.is_stacked else None
                _load_part(reader, linear, part, module, config.quantization, at, cuts[part])


def _load_layer(reader: _Reader, layer_idx: int, layer, config: ModelConfig, tp: TensorParallel) -> None:
    prefix = f"model.layers.{layer_idx}."
    for norm, name in (
        (layer.input_norm, "input_layernorm"),
        (layer.post_attn_norm, "post_attention_layernorm"),
    ):
        _assign(norm.weight, reader.take(f"{prefix}{name}.weight"), f"{prefix}{name}.weight")
    attn, a = layer.attn, prefix + "self_attn."
    _load_linears(reader, layer_idx, layer, config, tp)
    if attn.qkv.bias is not None:
        cuts = linear_cuts(config, tp, layer_idx, "attn.qkv")
        for part, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            lo, hi = attn.qkv.part_range(part)
            bias = reader.take(f"{a}{proj}.bias")
            if cuts[part] is not None and bias.shape[0] == cuts[part].total:
                bias = bias[cuts[part].lo : cuts[part].hi]
            _assign(attn.qkv.bias[lo:hi], bias, f"{a}{proj}.bias")
    if attn.sinks is not None:
        sinks = reader.take_first(a + "attention_sink_bias", a + "sinks")
        if tp.size > 1 and sinks.shape[0] == config.num_attention_heads:
            q_lo, q_hi = tp.split(config.num_attention_heads)  # the sinks of this rank's heads
            sinks = sinks[q_lo:q_hi]
        _assign(attn.sinks, sinks, a + "attention_sink_bias")
    mlp, m = layer.mlp, prefix + "mlp."
    if hasattr(mlp, "router"):
        _assign(mlp.router, reader.take(m + "gate.weight"), m + "gate.weight")
        _assign(
            mlp.correction_bias,
            reader.take(m + "gate.e_score_correction_bias"),
            m + "gate.e_score_correction_bias",
        )
        if m + "experts.gate_up_proj" in reader.source:
            # stacked experts: one tensor per projection, in the model dtype
            gate_up, down = reader.take(m + "experts.gate_up_proj"), reader.take(m + "experts.down_proj")
            if tp.size > 1 and gate_up.dim() == 3 and gate_up.shape[0] == config.num_experts:
                gate_up, down = _stacked_cut(gate_up, down, config, tp)
            _assign(mlp.gate_up.weight, gate_up, m + "experts.gate_up_proj")
            _assign(mlp.down.weight, down, m + "experts.down_proj")


def _stacked_cut(gate_up: torch.Tensor, down: torch.Tensor, config: ModelConfig, tp: TensorParallel):
    """This rank's experts of stacked ``[E, 2*inter, hidden]`` / ``[E, hidden, inter]`` tensors and,
    without expert parallel, its columns of every expert's intermediate dim (of gate and up each)."""
    first, end = tp.experts(config.num_experts)
    gate_up, down = gate_up[first:end], down[first:end]
    lo, hi = tp.expert_width(config.moe_intermediate_size)
    inter = config.moe_intermediate_size
    if gate_up.shape[1] != 2 * inter or (lo, hi) == (0, inter):
        return gate_up, down
    return torch.cat((gate_up[:, lo:hi], gate_up[:, inter + lo : inter + hi]), dim=1), down[:, :, lo:hi]
