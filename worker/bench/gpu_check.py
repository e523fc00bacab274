"""One script for a GPU session: bf16 correctness first, then every timing, in one run.

    python -m worker.bench.gpu_check            # on an H100/H200 with torch, triton, transformers

Steps (each prints its own table; a failing correctness check stops the timings that depend on it):
1. kernels: ``kernels.bench`` (bf16 vs the reference, then SWA prefill vs FlexAttention, full prefill
   vs SDPA, decode vs copy bandwidth), and ``kernels.block_fp8_bench`` (the block-FP8 linear in bf16 and
   fp16 with real e4m3 weights vs the fp32 reference, then vs bf16 ``F.linear`` at MiMo-V2-Flash shapes).
2. engine correctness on the GPU: a small random MiMo checkpoint in bf16, our engine on the Triton
   kernels vs transformers on the same weights: greedy continuations mostly identical (bf16 rounding
   may flip a late near-tie); then the same checkpoint quantized to block FP8 (``hybatch quantize``),
   our engine on it (FP8 weights on the GPU, the FP8 kernel) vs transformers on its dequantized weights.
3. ``hybatch bench engine --config bench-1.35b`` (32 prompts x 1024 + 128 new, and 1 prompt).
4. ``hybatch bench cache`` on the default model on the GPU (tier hit times).
Only torch, triton, numpy, safetensors, tokenizers and transformers are needed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch


def engine_correctness_bf16() -> bool:
    """Our engine vs transformers in bf16, then on the FP8 copy vs transformers on its dequantized weights."""
    from worker.model.quantize import dequantize_checkpoint, quantize_checkpoint

    bf16 = _random_bf16_checkpoint()
    bf16_ok = engine_matches_transformers(bf16, bf16, "bf16")
    fp8, dequantized = bf16.with_name("fp8"), bf16.with_name("fp8-dequantized")
    quantize_checkpoint(bf16, fp8)
    dequantize_checkpoint(fp8, dequantized, dtype=torch.bfloat16)
    fp8_ok = engine_matches_transformers(fp8, dequantized, "fp8 (block 128x128)")
    return bf16_ok and fp8_ok


def _random_bf16_checkpoint() -> Path:
    from transformers import MiMoV2FlashConfig, MiMoV2FlashForCausalLM

    torch.manual_seed(0)
    config = MiMoV2FlashConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=48,
        v_head_dim=32,
        sliding_window=32,
        moe_intermediate_size=128,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        layer_types=["full_attention"] + ["sliding_attention"] * 3,
        mlp_layer_types=["dense"] + ["sparse"] * 3,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    path = Path(tempfile.mkdtemp()) / "bf16"
    MiMoV2FlashForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


def engine_matches_transformers(ours_path: Path, ref_path: Path, label: str) -> bool:
    from transformers import MiMoV2FlashForCausalLM

    from worker.engine import LLM, SamplingParams

    ref = MiMoV2FlashForCausalLM.from_pretrained(ref_path, dtype=torch.bfloat16).cuda().eval()
    llm = LLM(ours_path, device="cuda", dtype="bfloat16", kv_cache_gb=1.0)
    prompts = [[int(t) for t in torch.randint(0, 1000, (n,))] for n in (5, 77, 130, 300)]
    outs = llm.generate(
        [{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=32)
    )
    agree = 0
    with torch.no_grad():
        for p, out in zip(prompts, outs, strict=True):
            want = ref.generate(
                torch.tensor([p], device="cuda"), max_new_tokens=32, min_new_tokens=32, do_sample=False
            )[0, len(p) :].tolist()
            got = out.outputs[0].token_ids
            prefix = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), len(want))
            agree += prefix == len(want)
            print(f"   prompt {len(p):4d} tokens: first {prefix}/32 greedy tokens identical")
    print(f"engine {label} on {torch.cuda.get_device_name()}: {agree}/{len(prompts)} continuations identical")
    return agree >= len(prompts) - 1


def main(argv: list[str] | None = None) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    start = time.time()
    from kernels import bench as kernels_bench
    from kernels import block_fp8_bench

    print("== 1. kernels", flush=True)
    kernels_ok = kernels_bench.main([]) == 0
    print(f"== 1b. block-FP8 linear [{time.time() - start:.0f} s]", flush=True)
    kernels_ok = block_fp8_bench.main([]) == 0 and kernels_ok
    print(f"== 2. engine correctness (bf16, then FP8) [{time.time() - start:.0f} s]", flush=True)
    engine_ok = engine_correctness_bf16()
    if not (kernels_ok and engine_ok):
        print("correctness failed: skipping the engine timings")
        return 1
    from worker.bench import cache as bench_cache
    from worker.bench import engine as bench_engine

    print(f"== 3. engine vs transformers, bench-1.35b [{time.time() - start:.0f} s]", flush=True)
    bench_engine.main(
        [
            "--config",
            "bench-1.35b",
            "--device",
            "cuda",
            "--num-prompts",
            "32",
            "--min-len",
            "1024",
            "--max-len",
            "1024",
            "--new-tokens",
            "128",
            "--hf-batch-size",
            "32",
            "--kv-cache-gb",
            "20",
        ]
    )
    bench_engine.main(
        [
            "--config",
            "bench-1.35b",
            "--device",
            "cuda",
            "--num-prompts",
            "1",
            "--min-len",
            "1024",
            "--max-len",
            "1024",
            "--new-tokens",
            "128",
            "--kv-cache-gb",
            "20",
        ]
    )
    print(f"== 4. prefix cache tiers on the GPU [{time.time() - start:.0f} s]", flush=True)
    bench_cache.main(
        ["--device", "cuda", "--kv-cache-gb", "4", "--capacity-lens", "2048", "--num-requests", "200"]
    )
    print(f"== done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
