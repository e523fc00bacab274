"""The Triton write_kv kernel (interpreter, CPU) against kernels.reference.write_kv_reference."""

import pytest
import torch
from paged_case import SeqSpec, dense_attention, make_case

from kernels import paged_attention, write_kv
from kernels.reference import write_kv_reference


@pytest.mark.parametrize(
    ("dtype", "cache_dtype"), [(torch.float32, torch.float32), (torch.float32, torch.float16)]
)
def test_write_kv_matches_reference(dtype, cache_dtype):
    num_blocks, block_size, num_kv_heads, dim_qk, dim_v = 4, 4, 3, 12, 20
    generator = torch.Generator().manual_seed(0)
    k = torch.randn(6, num_kv_heads + 1, dim_qk, generator=generator, dtype=dtype)[
        :, :num_kv_heads
    ]  # strided
    v = torch.randn(6, num_kv_heads, dim_v, generator=generator, dtype=dtype)
    slots = torch.tensor([5, 0, 15, -1, 6, 9], dtype=torch.int64)  # -1: a padding token, skipped
    caches = [
        torch.full((num_blocks, block_size, num_kv_heads, d), 7.0, dtype=cache_dtype) for d in (dim_qk, dim_v)
    ]
    expected = [c.clone() for c in caches]
    write_kv(k, v, *caches, slots)
    write_kv_reference(k, v, *expected, slots)
    assert torch.equal(caches[0], expected[0]) and torch.equal(caches[1], expected[1])


def test_write_kv_rejects_int32_slots():
    k, v = torch.zeros(2, 1, 4), torch.zeros(2, 1, 4)
    with pytest.raises(ValueError, match="int64"):
        write_kv(k, v, torch.zeros(1, 4, 1, 4), torch.zeros(1, 4, 1, 4), torch.zeros(2, dtype=torch.int32))


def test_write_kv_then_attend_matches_the_dense_definition():
    # The engine's order: write the step's new K/V into their slots, then attend.
    case = make_case(
        [SeqSpec(21, 21), SeqSpec(45, 7)], num_q_heads=4, num_kv_heads=2, head_dim_qk=12, head_dim_v=8,
        block_size=4, window=7, with_sinks=True,
    )  # fmt: skip
    slots, new_k, new_v = [], [], []
    for seq, (seq_len, table_start) in enumerate(
        zip(case.seq_lens.tolist(), case.block_table_start.tolist(), strict=True)
    ):
        q_len = int(case.query_start_loc[seq + 1] - case.query_start_loc[seq])
        for pos in range(seq_len - q_len, seq_len):
            block = int(case.block_table[seq, pos // 4 - table_start])
            slots.append(block * 4 + pos % 4)
            new_k.append(case.dense_k[seq][pos])
            new_v.append(case.dense_v[seq][pos])
    slot_mapping = torch.tensor(slots, dtype=torch.int64)
    case.k_cache.view(-1, 2, 12)[slot_mapping] = float("nan")  # the new tokens are not cached yet
    case.v_cache.view(-1, 2, 8)[slot_mapping] = float("nan")
    write_kv(torch.stack(new_k), torch.stack(new_v), case.k_cache, case.v_cache, slot_mapping)
    result = paged_attention(*case.args(), **case.kwargs())
    torch.testing.assert_close(result, dense_attention(case), atol=1e-4, rtol=1e-4)
