"""Compile the kernels for sm_90 (H100/H200) without a GPU: the interpreter does not check what the
compiler rejects (dot shapes, loop-carried types) nor register spills. Run as a script, with
TRITON_INTERPRET unset; prints one line per kernel and exits 0 (all compiled, no spills), 1 (a failure)
or 3 (this Triton cannot compile ahead of time here).
"""

import os
import subprocess
import sys
import tempfile

import triton

from kernels.attention_kernel import merge_splits_kernel, paged_attention_kernel
from kernels.block_fp8_kernel import block_fp8_linear_kernel
from kernels.block_fp8_launch import pick_tiles
from kernels.write_kv_kernel import write_kv_kernel

MIMO_DIMS = dict(HEAD_QK=192, HEAD_QK_MAIN=128, HEAD_QK_TAIL=64, HEAD_V=128, HEAD_V_PAD=128)
CASES = [  # kernel, pointer dtypes, constexprs, num_warps, num_stages: the default GPU configs
    (paged_attention_kernel, dict(q_ptr="bf16", k_cache_ptr="bf16", v_cache_ptr="bf16", out_ptr="bf16"),
     dict(GROUP=8, GROUP_PAD=8, BLOCK_M=128, BLOCK_N=64, BLOCK_SIZE=16, WINDOW=128, HAS_SINKS=True,
          NUM_SPLITS=1, COUNT_TILES=False, DOT_PRECISION="tf32", **MIMO_DIMS), 8, 3),
    (paged_attention_kernel, dict(q_ptr="bf16", k_cache_ptr="bf16", v_cache_ptr="bf16", out_ptr="bf16"),
     dict(GROUP=8, GROUP_PAD=8, BLOCK_M=16, BLOCK_N=64, BLOCK_SIZE=16, WINDOW=0, HAS_SINKS=False,
          NUM_SPLITS=4, COUNT_TILES=False, DOT_PRECISION="tf32", **MIMO_DIMS), 4, 3),
    (merge_splits_kernel, dict(out_ptr="bf16"),
     dict(HAS_SINKS=True, HEAD_V=128, HEAD_V_PAD=128, NUM_SPLITS=4, NUM_SPLITS_PAD=4), 4, 1),
    (write_kv_kernel, dict(k_ptr="bf16", v_ptr="bf16", k_cache_ptr="bf16", v_cache_ptr="bf16", slot_mapping_ptr="i64"),
     dict(BLOCK_SIZE=16, NUM_KV_HEADS=8, HEADS_PAD=8, HEAD_QK=192, HEAD_QK_PAD=256, HEAD_V=128, HEAD_V_PAD=128), 4, 1),
] + [  # the block-FP8 linear at each tile config block_fp8_launch picks (decode, small, prefill)
    (block_fp8_linear_kernel,
     dict(x_ptr=dtype, w_ptr="fp8e4nv", scale_ptr="fp32", scale_row_ptr="i32", bias_ptr=dtype, out_ptr=dtype),
     dict(QUANT_BLOCK_K=128, HAS_BIAS=has_bias, DOT_PRECISION=None,
          BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k),
     t.num_warps, t.num_stages)
    for dtype, has_bias in (("bf16", False), ("fp16", True))
    for t in (pick_tiles(num_tokens, 128) for num_tokens in (1, 64, 4096))
]  # fmt: skip
INT_POINTERS = {
    "block_table_ptr",
    "block_table_start_ptr",
    "query_start_loc_ptr",
    "seq_lens_ptr",
    "tile_counts_ptr",
}


def _source(kernel, pointer_dtypes: dict, constexprs: dict):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointer_dtypes.get(name, "i32" if name in INT_POINTERS else "fp32")
        else:
            signature[name] = "fp32" if name == "qk_scale_log2" else "i32"
    # What a real launch specialises: 16-byte aligned pointers and strides divisible by 16.
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(kernel.arg_names)
        if name not in constexprs and (name.endswith("_ptr") or name.startswith("stride"))
    }
    constants = {(kernel.arg_names.index(k),): v for k, v in constexprs.items()}
    return ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs), GPUTarget(
        "cuda", 90, 32
    )


def _resource_usage(cubin: bytes) -> str:
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        result = subprocess.run(
            [cuobjdump, "--dump-resource-usage", file.name], capture_output=True, text=True
        )
    return " ".join(line.strip() for line in result.stdout.splitlines() if "REG:" in line)


def main() -> int:
    failed = False
    for kernel, pointer_dtypes, constexprs, num_warps, num_stages in CASES:
        try:
            source, target = _source(kernel, pointer_dtypes, constexprs)
        except (ImportError, TypeError, AttributeError) as error:
            print(f"cannot compile ahead of time with triton {triton.__version__}: {error}")
            return 3
        compiled = triton.compile(
            source, target=target, options={"num_warps": num_warps, "num_stages": num_stages}
        )
        usage = _resource_usage(compiled.asm["cubin"])
        spills = "STACK:0 " not in usage + " "
        failed |= spills
        print(f"{kernel.__name__}: {usage}{'  <- register spills' if spills else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
