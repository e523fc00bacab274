"""Triton paged attention (interpreter, CPU) against kernels.reference, and the reference's own anchor.

Every case uses poisoned caches (NaN in freed blocks, out-of-window slots and block tails): a kernel
that reads KV outside the windows, or lets padded rows leak, produces NaN and fails.
"""

import pytest
import torch
from paged_case import PagedCase, SeqSpec, dense_attention, make_case

from kernels import paged_attention
from kernels.attention_launch import HeadDimSplit, launch_paged_attention
from kernels.reference import paged_attention_reference

TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3}
# A full prefill, an extend whose first query sits mid-block (position 38), a decode.
RAGGED = [SeqSpec(21, 21), SeqSpec(45, 7), SeqSpec(10, 1)]
DECODE = [SeqSpec(70, 1), SeqSpec(33, 1), SeqSpec(5, 1)]


def _case(
    specs,
    *,
    group=2,
    dims=(16, 16),
    block_size=4,
    window=0,
    sinks=False,
    dtype=torch.float32,
    num_kv_heads=2,
    seed=0,
) -> PagedCase:
    return make_case(
        specs,
        num_q_heads=group * num_kv_heads,
        num_kv_heads=num_kv_heads,
        head_dim_qk=dims[0],
        head_dim_v=dims[1],
        block_size=block_size,
        window=window,
        with_sinks=sinks,
        dtype=dtype,
        seed=seed,
    )


def _assert_matches_reference(case: PagedCase, result: torch.Tensor) -> None:
    assert result.dtype == case.q.dtype
    assert torch.isfinite(result).all()
    expected = paged_attention_reference(*case.args(), **case.kwargs())
    tolerance = TOLERANCE[case.q.dtype]
    torch.testing.assert_close(result.float(), expected.float(), atol=tolerance, rtol=tolerance)


PREFILL_CASES = {
    "mha-full-bs4": dict(group=1, dims=(16, 16), block_size=4, window=0),
    "gqa2-odd-dims-window7-sinks": dict(group=2, dims=(12, 8), block_size=4, window=7, sinks=True),
    "gqa4-window1-bs16": dict(group=4, dims=(24, 20), block_size=16, window=1),
    "gqa4-window-longer-than-context-sinks": dict(
        group=4, dims=(24, 20), block_size=4, window=1000, sinks=True
    ),
    "gqa3-padded-group-window7": dict(group=3, dims=(16, 16), block_size=16, window=7, sinks=True),
    "qk-dim-split-40-into-32+16": dict(group=2, dims=(40, 24), block_size=16, window=0, sinks=True),
    "fp16-gqa2-window7-sinks": dict(
        group=2, dims=(12, 8), block_size=4, window=7, sinks=True, dtype=torch.float16
    ),
    "fp16-gqa4-full": dict(group=4, dims=(24, 20), block_size=16, window=0, dtype=torch.float16),
}


@pytest.mark.parametrize("params", PREFILL_CASES.values(), ids=PREFILL_CASES.keys())
def test_prefill_and_extend_match_reference(params):
    case = _case(RAGGED, **params)
    _assert_matches_reference(case, paged_attention(*case.args(), **case.kwargs()))


SWEEP = [  # every GQA ratio x every window; head dims, block sizes and sinks rotate through their values
    dict(
        group=group,
        window=window,
        dims=[(16, 16), (12, 8), (24, 20)][i % 3],
        block_size=[4, 16][i % 2],
        sinks=i % 2 == 0,
    )
    for i, (group, window) in enumerate((g, w) for g in (1, 2, 4) for w in (0, 1, 7, 1000))
]


@pytest.mark.parametrize(
    "params", SWEEP, ids=lambda p: "gqa{group}-w{window}-d{dims}-bs{block_size}-s{sinks}".format(**p)
)
def test_sweep_gqa_windows_dims_block_sizes(params):
    case = _case(RAGGED, seed=params["window"], **params)
    _assert_matches_reference(case, paged_attention(*case.args(), **case.kwargs()))


@pytest.mark.parametrize(
    ("num_splits", "window", "sinks", "dtype"),
    [
        (1, 0, True, torch.float32),
        (3, 0, False, torch.float32),
        (5, 0, True, torch.float32),
        (2, 7, True, torch.float32),
        (4, 0, True, torch.float16),
    ],
)
def test_decode_split_kv_matches_reference(num_splits, window, sinks, dtype):
    # 5 splits of a 5-token context leave some splits empty: the merge must weigh them 0.
    case = _case(DECODE, group=4, dims=(24, 20), block_size=16, window=window, sinks=sinks, dtype=dtype)
    result, _ = launch_paged_attention(*case.args(), **case.kwargs(), num_splits=num_splits)
    _assert_matches_reference(case, result)


def test_split_kv_over_a_prefill_chunk_matches_reference():
    case = _case([SeqSpec(40, 6)], group=2, dims=(12, 8), block_size=4, window=0, sinks=True)
    result, _ = launch_paged_attention(*case.args(), **case.kwargs(), num_splits=3)
    _assert_matches_reference(case, result)


def test_writes_into_strided_out_and_reads_strided_q():
    case = _case(RAGGED, group=2, dims=(12, 8), window=7, sinks=True)
    num_tokens, num_q_heads, _ = case.q.shape
    qkv = torch.randn(num_tokens, num_q_heads + 4, 12)  # q as a view of a fused projection output
    qkv[:, :num_q_heads] = case.q
    case.q = qkv[:, :num_q_heads]
    buffer = torch.full((num_tokens, num_q_heads, 16), float("nan"))
    out = buffer[:, :, :8]
    assert paged_attention(*case.args(), **case.kwargs(), out=out) is out
    _assert_matches_reference(case, out)
    assert buffer[:, :, 8:].isnan().all()  # nothing written past head_dim_v


def test_reference_anchor_for_the_kernel_cases():
    # The kernel is compared with the reference; the reference itself with the dense definition.
    case = _case(RAGGED, group=3, dims=(12, 8), window=7, sinks=True)
    torch.testing.assert_close(
        paged_attention_reference(*case.args(), **case.kwargs()), dense_attention(case), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    ("head_dim", "main", "tail"),
    [(12, 16, 0), (24, 32, 0), (40, 32, 16), (128, 128, 0), (192, 128, 64), (320, 256, 64), (200, 256, 0)],
)
def test_head_dim_split_pads_little(head_dim, main, tail):
    assert HeadDimSplit.of(head_dim) == HeadDimSplit(main, tail)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c, "q", c.q.half()), "dtype"),
        (lambda c: setattr(c, "seq_lens", c.seq_lens.long()), "int32"),
        (lambda c: setattr(c, "q", c.q[:, :3]), "multiple"),
        (lambda c: setattr(c, "sinks", torch.zeros(3)), "sinks"),
        (
            lambda c: setattr(c, "k_cache", c.k_cache.transpose(2, 3).contiguous().transpose(2, 3)),
            "contiguous",
        ),
        (lambda c: setattr(c, "window", -1), "window"),
    ],
)
def test_launcher_rejects_bad_inputs(change, message):
    case = _case([SeqSpec(5, 2)], group=2, sinks=True)
    change(case)
    with pytest.raises(ValueError, match=message):
        paged_attention(*case.args(), **case.kwargs())
