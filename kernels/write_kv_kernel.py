"""Triton kernel behind ``kernels.write_kv``: one program copies one token's K and V into its slot."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def write_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_kcb,
    stride_kcs,
    stride_kch,
    stride_vcb,
    stride_vcs,
    stride_vch,
    BLOCK_SIZE: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    HEAD_QK: tl.constexpr,
    HEAD_QK_PAD: tl.constexpr,
    HEAD_V: tl.constexpr,
    HEAD_V_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token)
    if slot < 0:
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    offs_h = tl.arange(0, HEADS_PAD)
    offs_qk = tl.arange(0, HEAD_QK_PAD)
    offs_v = tl.arange(0, HEAD_V_PAD)
    mask_k = (offs_h[:, None] < NUM_KV_HEADS) & (offs_qk[None, :] < HEAD_QK)
    mask_v = (offs_h[:, None] < NUM_KV_HEADS) & (offs_v[None, :] < HEAD_V)
    k = tl.load(k_ptr + token * stride_kt + offs_h[:, None] * stride_kh + offs_qk[None, :], mask=mask_k)
    v = tl.load(v_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_v[None, :], mask=mask_v)
    k_dst = k_cache_ptr + block * stride_kcb + offset * stride_kcs + offs_h[:, None] * stride_kch
    v_dst = v_cache_ptr + block * stride_vcb + offset * stride_vcs + offs_h[:, None] * stride_vch
    tl.store(k_dst + offs_qk[None, :], k.to(k_cache_ptr.dtype.element_ty), mask=mask_k)
    tl.store(v_dst + offs_v[None, :], v.to(v_cache_ptr.dtype.element_ty), mask=mask_v)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(f"write_kv: {problem}")


def launch_write_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    _check(
        k.dim() == 3 and v.dim() == 3 and v.shape[:2] == k.shape[:2],
        f"k/v must be [num_tokens, num_kv_heads, head_dim], got {tuple(k.shape)}, {tuple(v.shape)}",
    )
    num_tokens, num_kv_heads, head_dim_qk = k.shape
    head_dim_v = v.shape[2]
    _check(
        k_cache.dim() == 4 and tuple(k_cache.shape[2:]) == (num_kv_heads, head_dim_qk),
        f"k_cache {tuple(k_cache.shape)} does not hold k rows {tuple(k.shape[1:])}",
    )
    _check(
        v_cache.dim() == 4
        and tuple(v_cache.shape[2:]) == (num_kv_heads, head_dim_v)
        and v_cache.shape[:2] == k_cache.shape[:2],
        f"v_cache {tuple(v_cache.shape)} does not match k_cache {tuple(k_cache.shape)} and v rows",
    )
    _check(
        slot_mapping.dtype == torch.int64
        and tuple(slot_mapping.shape) == (num_tokens,)
        and slot_mapping.is_contiguous(),
        "slot_mapping must be contiguous int64 [num_tokens]",
    )
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        _check(t.stride(-1) == 1, f"{name} must have a contiguous last dim")
        _check(t.device == k.device, f"{name} is on {t.device}, k on {k.device}")
    _check(slot_mapping.device == k.device, f"slot_mapping is on {slot_mapping.device}, k on {k.device}")
    if num_tokens == 0:
        return
    write_kv_kernel[(num_tokens,)](
        k,
        v,
        k_cache,
        v_cache,
        slot_mapping,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        BLOCK_SIZE=k_cache.shape[1],
        NUM_KV_HEADS=num_kv_heads,
        HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        HEAD_QK=head_dim_qk,
        HEAD_QK_PAD=triton.next_power_of_2(head_dim_qk),
        HEAD_V=head_dim_v,
        HEAD_V_PAD=triton.next_power_of_2(head_dim_v),
    )
