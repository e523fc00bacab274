r"""``hybatch bench engine``: this engine vs transformers ``generate()`` on the same checkpoint and prompts.

transformers runs as a user would: left-padded batches of ``--hf-batch-size`` prompts with an attention
mask, greedy, exactly ``--new-tokens`` new tokens (eos ignored on both sides). Prints both throughputs
and their ratio, and how many continuations agree token for token.

    python -m worker.bench.engine                       # default model, CPU
    python -m worker.bench.engine --config bench-1.35b --device cuda --num-prompts 32 --min-len 1024 \
        --max-len 1024 --new-tokens 128
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from worker.bench.workloads import (
    BENCH_1_35B,
    DEFAULT_CHECKPOINT,
    build_random_checkpoint,
    random_prompts,
    special_token_ids,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_hybatch(
    checkpoint: Path,
    prompts,
    new_tokens: int,
    device: str,
    dtype: str,
    kv_cache_gb: float,
    max_num_batched_tokens: int | None,
):
    from worker.engine import LLM, SamplingParams

    llm = LLM(
        checkpoint,
        device=device,
        dtype=dtype,
        kv_cache_gb=kv_cache_gb,
        max_num_seqs=len(prompts),
        max_num_batched_tokens=max_num_batched_tokens,
    )
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    llm.generate(
        [{"prompt_token_ids": prompts[0][:8]}], SamplingParams(temperature=0, max_tokens=2)
    )  # warm up
    _sync(llm.device)
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    _sync(llm.device)
    return time.perf_counter() - start, [o.outputs[0].token_ids for o in outs], llm.stats()


def run_transformers(checkpoint: Path, prompts, new_tokens: int, device: str, dtype: str, batch_size: int):
    from transformers import MiMoV2FlashForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = MiMoV2FlashForCausalLM.from_pretrained(checkpoint, dtype=torch_dtype).to(device).eval()
    pad = 0
    outputs = []

    def batch_generate(batch):
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return out[:, width:].tolist()

    batch_generate([prompts[0][:8]])  # warm up
    _sync(torch.device(device))
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        outputs += batch_generate(prompts[i : i + batch_size])
    _sync(torch.device(device))
    return time.perf_counter() - start, outputs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="hybatch bench engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="checkpoint directory (default: the shipped model)",
    )
    parser.add_argument(
        "--config", choices=["bench-1.35b"], help="random weights of a named shape instead of --model"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both peers")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--num-prompts", type=int, default=64, help="prompts in the workload")
    parser.add_argument("--min-len", type=int, default=32, help="shortest prompt, tokens")
    parser.add_argument("--max-len", type=int, default=512, help="longest prompt, tokens")
    parser.add_argument(
        "--new-tokens", type=int, default=64, help="tokens generated per prompt (eos ignored)"
    )
    parser.add_argument(
        "--hf-batch-size", type=int, default=16, help="prompts per transformers generate() call"
    )
    parser.add_argument("--kv-cache-gb", type=float, default=2.0, help="this engine's KV cache, GB")
    parser.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="this engine's token budget per step (default: its own)",
    )
    parser.add_argument("--skip-transformers", action="store_true", help="time this engine only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both peers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    checkpoint = build_random_checkpoint(BENCH_1_35B, dtype) if args.config else args.model
    from worker.model.config import ModelConfig

    vocab = ModelConfig.from_dir(checkpoint).vocab_size
    prompts = random_prompts(
        args.num_prompts, args.min_len, args.max_len, vocab, avoid=special_token_ids(checkpoint)
    )
    num_prompt_tokens = sum(map(len, prompts))
    num_out = args.num_prompts * args.new_tokens
    print(
        f"workload: {args.num_prompts} prompts, {num_prompt_tokens} prompt tokens "
        f"({args.min_len}-{args.max_len}), {args.new_tokens} new tokens each; device {args.device}, {dtype}"
    )
    if args.device.startswith("cuda"):
        print(f"card: {torch.cuda.get_device_name()}")
    ours_s, ours_tokens, stats = run_hybatch(
        checkpoint,
        prompts,
        args.new_tokens,
        args.device,
        dtype,
        args.kv_cache_gb,
        args.max_num_batched_tokens,
    )
    result = {"hybatch_s": ours_s, "hybatch_out_tok_s": num_out / ours_s, "steps": stats.num_steps}
    print(
        f"hybatch      : {ours_s:8.2f} s  {num_out / ours_s:9.1f} output tok/s  "
        f"{(num_out + num_prompt_tokens) / ours_s:9.1f} total tok/s  ({stats.num_steps} steps)"
    )
    if not args.skip_transformers:
        hf_s, hf_tokens = run_transformers(
            checkpoint, prompts, args.new_tokens, args.device, dtype, args.hf_batch_size
        )
        agree = sum(a == b for a, b in zip(ours_tokens, hf_tokens, strict=True))
        result |= {
            "transformers_s": hf_s,
            "transformers_out_tok_s": num_out / hf_s,
            "speedup": hf_s / ours_s,
            "identical_continuations": agree,
        }
        print(
            f"transformers : {hf_s:8.2f} s  {num_out / hf_s:9.1f} output tok/s  "
            f"{(num_out + num_prompt_tokens) / hf_s:9.1f} total tok/s  (batches of {args.hf_batch_size})"
        )
        print(f"speedup      : {hf_s / ours_s:.2f}x   identical greedy continuations: {agree}/{len(prompts)}")
    return result


if __name__ == "__main__":
    main()
