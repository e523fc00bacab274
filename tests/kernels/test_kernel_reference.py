"""kernels.reference against a dense brute force built straight from the definition (pure PyTorch, fast)."""

import itertools

import pytest
import torch
from paged_case import PagedCase, SeqSpec, dense_attention, make_case

from kernels.reference import paged_attention_reference, write_kv_reference

# Ragged: a full prefill, an extend whose first query sits mid-block, a decode, a one-token context.
SPECS = [SeqSpec(21, 21), SeqSpec(45, 7), SeqSpec(10, 1), SeqSpec(1, 1)]


def _reference(case: PagedCase) -> torch.Tensor:
    return paged_attention_reference(*case.args(), **case.kwargs())


@pytest.mark.parametrize(
    ("group", "dims", "block_size", "window", "with_sinks"),
    [
        (group, dims, block_size, window, with_sinks)
        for (group, dims), block_size, window, with_sinks in itertools.product(
            [(1, (16, 16)), (2, (12, 8)), (4, (24, 20))], [4, 16], [0, 1, 7, 1000], [False, True]
        )
    ],
)
def test_reference_matches_dense_definition(group, dims, block_size, window, with_sinks):
    case = make_case(
        SPECS,
        num_q_heads=2 * group,
        num_kv_heads=2,
        head_dim_qk=dims[0],
        head_dim_v=dims[1],
        block_size=block_size,
        window=window,
        with_sinks=with_sinks,
        seed=window + group,
    )
    result = _reference(case)  # poisoned (NaN) blocks and slots outside the windows must not be read
    torch.testing.assert_close(result, dense_attention(case), atol=1e-5, rtol=1e-5)


def test_reference_writes_out_in_query_dtype():
    case = make_case(
        SPECS,
        num_q_heads=4,
        num_kv_heads=2,
        head_dim_qk=12,
        head_dim_v=8,
        block_size=4,
        window=7,
        with_sinks=True,
        dtype=torch.float16,
    )
    out = torch.empty(case.q.shape[0], 4, 8, dtype=torch.float16)
    assert _reference_with_out(case, out) is out
    torch.testing.assert_close(out.float(), dense_attention(case), atol=2e-3, rtol=2e-3)


def _reference_with_out(case: PagedCase, out: torch.Tensor) -> torch.Tensor:
    return paged_attention_reference(*case.args(), **case.kwargs(), out=out)


def test_reference_rejects_a_table_that_does_not_cover_the_window():
    case = make_case(
        [SeqSpec(30, 2)],
        num_q_heads=2,
        num_kv_heads=2,
        head_dim_qk=16,
        head_dim_v=16,
        block_size=4,
        window=0,
        with_sinks=False,
    )
    case.block_table_start[0] = 1  # claims logical block 0 was freed, but full attention needs it
    with pytest.raises(ValueError, match="does not cover"):
        _reference(case)


def test_write_kv_reference_places_tokens_and_skips_negative_slots():
    k_cache = torch.zeros(3, 4, 2, 5)
    v_cache = torch.zeros(3, 4, 2, 3)
    k, v = torch.randn(3, 2, 5), torch.randn(3, 2, 3)
    write_kv_reference(k, v, k_cache, v_cache, torch.tensor([9, -1, 2]))
    assert torch.equal(k_cache[2, 1], k[0]) and torch.equal(v_cache[0, 2], v[2])
    assert k_cache.count_nonzero() == 2 * 2 * 5  # the skipped token wrote nothing
