"""Sliding windows cost O(window): the kernel skips out-of-window KV tiles instead of masking them.

The kernel's COUNT_TILES flag makes every program write how many key tiles it visited.
"""

import math

import pytest
import torch
from paged_case import SeqSpec, make_case

from kernels.attention_launch import launch_paged_attention, pick_tile_config
from kernels.reference import paged_attention_reference

WINDOW = 8
GROUP = 2


def _max_tiles_visited(seq_len: int, q_len: int, window: int) -> int:
    case = make_case(
        [SeqSpec(seq_len, q_len)],
        num_q_heads=2 * GROUP,
        num_kv_heads=2,
        head_dim_qk=12,
        head_dim_v=8,
        block_size=4,
        window=window,
        with_sinks=True,
    )
    out, counts = launch_paged_attention(*case.args(), **case.kwargs(), tile_counts=True)
    expected = paged_attention_reference(*case.args(), **case.kwargs())
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)  # freed blocks are NaN-poisoned
    return int(counts.max())


@pytest.mark.parametrize("q_len", [1, 8], ids=["decode", "extend"])
def test_window_tiles_do_not_grow_with_context(q_len):
    config = pick_tile_config(is_decode=q_len == 1, group_pad=GROUP, head_dims=0)
    tokens_per_tile = config.block_m // GROUP
    # A query tile spans at most WINDOW + tokens_per_tile - 1 keys, which straddle one more tile boundary.
    bound = math.ceil((WINDOW + tokens_per_tile - 1) / config.block_n) + 1
    # Context ends mid-block and mid-tile, so the window straddles a tile boundary.
    short, long = _max_tiles_visited(69, q_len, WINDOW), _max_tiles_visited(517, q_len, WINDOW)
    assert short == long == bound


def test_full_attention_tiles_do_grow_with_context():
    # The counter itself works: without a window the last query tile visits the whole context.
    short, long = _max_tiles_visited(64, 8, 0), _max_tiles_visited(256, 8, 0)
    assert long > 3 * short
