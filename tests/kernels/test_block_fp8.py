"""The block-FP8 linear kernel vs its reference (interpreter), and the reference vs a per-block loop.

What the interpreter checks: indexing, masks at every tile edge, the scale lookup through ``scale_row``
(fused parts that are not block-aligned), bias, fp32 and fp16 activations with real float8_e4m3fn
weights. What it cannot check: bf16 activations (its bf16 ``tl.dot`` is wrong), the GPU tile shapes
(it runs 16x16x16 tiles), tensor-core rounding and speed; ``python -m worker.bench.gpu_check`` covers
bf16 and fp8 on a GPU.
"""

import pytest
import torch

from kernels import block_fp8_linear
from kernels.block_fp8_reference import block_fp8_linear_reference, dequantize_block_fp8

E4M3_MAX = 448.0


def random_fp8(out_features, in_features, generator):
    return (
        (torch.randn(out_features, in_features, generator=generator) * 40)
        .clamp(-E4M3_MAX, E4M3_MAX)
        .to(torch.float8_e4m3fn)
    )


def fused_scale_rows(part_rows, block_n):
    """scale_row for parts stacked along the output dim, each part blocked on its own."""
    rows, first = [], 0
    for n in part_rows:
        rows += [first + r // block_n for r in range(n)]
        first += -(-n // block_n)
    return torch.tensor(rows, dtype=torch.int32), first


def case(num_tokens, part_rows, in_features, block_n, block_k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    out_features = sum(part_rows)
    weight = random_fp8(out_features, in_features, g)
    scale_row, num_scale_rows = fused_scale_rows(part_rows, block_n)
    scale_inv = torch.rand(num_scale_rows, -(-in_features // block_k), generator=g) * 0.02 + 0.001
    x = torch.randn(num_tokens, in_features, generator=g).to(dtype)
    return x, weight, scale_inv, scale_row


def test_dequantize_is_the_per_block_definition():
    """Hand loop: element (n, k) takes the scale of block (scale_row[n], k // block_k)."""
    g = torch.Generator().manual_seed(1)
    weight = random_fp8(5, 7, g)
    scale_inv = torch.tensor([[2.0, 0.5, 0.25], [3.0, 1.0, 8.0]])
    scale_row = torch.tensor([0, 0, 1, 1, 1], dtype=torch.int32)
    got = dequantize_block_fp8(weight, scale_inv, scale_row, block_k=3, dtype=torch.float32)
    for n in range(5):
        for k in range(7):
            assert got[n, k] == float(weight[n, k].float()) * float(scale_inv[scale_row[n], k // 3])


def test_dequantize_takes_stacked_experts():
    g = torch.Generator().manual_seed(2)
    weight = torch.stack([random_fp8(4, 6, g), random_fp8(4, 6, g)])
    scale_inv = torch.tensor([[[1.0, 2.0]], [[4.0, 8.0]]])  # [2 experts, 1 scale row, 2 k-blocks]
    scale_row = torch.zeros(4, dtype=torch.int32)
    got = dequantize_block_fp8(weight, scale_inv, scale_row, block_k=3, dtype=torch.float32)
    assert torch.equal(got[1, :, 3:], weight[1, :, 3:].float() * 8.0)
    assert torch.equal(got[0, :, :3], weight[0, :, :3].float())


SHAPES = [
    # num_tokens, part rows (fused along the output dim), in_features, block_n, block_k
    (1, (16,), 16, 16, 16),
    (5, (40,), 48, 16, 16),  # tails in every dim
    (17, (12, 20, 9), 70, 16, 32),  # fused parts not aligned to the block height; 3 k-blocks
    (33, (130,), 160, 128, 128),  # the real block size: 2 scale rows, 2 k-blocks (the second partial)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, [s[0], sum(s[1]), s[2], s[4]])))
def test_kernel_matches_reference(shape, dtype):
    num_tokens, part_rows, in_features, block_n, block_k = shape
    x, weight, scale_inv, scale_row = case(num_tokens, part_rows, in_features, block_n, block_k, dtype)
    got = block_fp8_linear(x, weight, scale_inv, scale_row, block_k=block_k)
    want = block_fp8_linear_reference(x.float(), weight, scale_inv, scale_row, block_k=block_k)
    assert got.dtype == dtype and got.shape == want.shape
    # fp32: same products, another summation order. fp16: the kernel multiplies fp16 x by the exact
    # fp8 values with fp32 accumulation; only the output's rounding to fp16 differs.
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    error = (got.float() - want).abs().max() / want.abs().max()
    assert error <= tolerance


def test_bias_is_added_per_output():
    x, weight, scale_inv, scale_row = case(3, (20,), 32, 16, 16, torch.float32)
    bias = torch.linspace(-1, 1, 20)
    got = block_fp8_linear(x, weight, scale_inv, scale_row, block_k=16, bias=bias)
    want = block_fp8_linear_reference(x, weight, scale_inv, scale_row, block_k=16, bias=bias)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_wrong_scale_row_is_visible():
    """The comparison is sharp: the kernel with every row on scale row 0 differs from the reference."""
    x, weight, scale_inv, scale_row = case(4, (12, 20), 32, 16, 16, torch.float32)
    wrong = torch.zeros_like(scale_row)
    got = block_fp8_linear(x, weight, scale_inv, wrong, block_k=16)
    want = block_fp8_linear_reference(x, weight, scale_inv, scale_row, block_k=16)
    assert (got - want).abs().max() / want.abs().max() > 1e-2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight": torch.zeros(8, 16)}, "weight dtype torch.float32"),
        ({"scale_inv": torch.ones(1, 2)}, r"scale_inv must be float32 \[num_scale_rows, 1\]"),
        ({"scale_row": torch.zeros(8, dtype=torch.int64)}, "scale_row must be int32"),
        ({"x": torch.zeros(2, 15)}, "does not take x"),
        ({"block_k": 24}, "block_k 24 must be a multiple of 16"),
    ],
)
def test_launcher_names_the_bad_input(change, message):
    args = {
        "x": torch.zeros(2, 16),
        "weight": torch.zeros(8, 16).to(torch.float8_e4m3fn),
        "scale_inv": torch.ones(1, 1),
        "scale_row": torch.zeros(8, dtype=torch.int32),
        "block_k": 16,
    } | change
    with pytest.raises(ValueError, match=message):
        block_fp8_linear(
            args["x"], args["weight"], args["scale_inv"], args["scale_row"], block_k=args["block_k"]
        )


def test_gpu_check_script_runs_end_to_end_in_the_interpreter():
    from kernels import block_fp8_bench

    assert block_fp8_bench.main(["--dry-run"]) == 0
