"""Held-out perplexity of a checkpoint computed by our engine and by transformers on the same tokens.

    python -m worker.bench.perplexity                       # the default model, every held-out chunk
    python -m worker.bench.perplexity --max-chunks 20

The chunks are ``worker.model.training.evaluate.heldout_token_chunks`` (non-overlapping 512-token
pieces of the Python files held out from training); each chunk is scored from a fresh context, token
t+1 predicted from tokens [0, t]. Our engine scores them through its normal path (chunked prefill over
paged KV, sliding-window blocks freed as it goes) with ``prompt_logprobs=True``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from worker.bench.workloads import DEFAULT_CHECKPOINT


def engine_mean_nll(checkpoint: Path, chunks: list[list[int]], max_num_batched_tokens: int = 512) -> float:
    from worker.engine import LLM, SamplingParams

    llm = LLM(
        checkpoint,
        device="cpu",
        dtype="float32",
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=8,
        kv_cache_gb=0.5,
    )
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=True, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": c} for c in chunks], params)
    logprobs = [lp for out in outs for lp in out.prompt_logprobs]
    return -sum(logprobs) / len(logprobs)


def main(argv: list[str] | None = None) -> dict:
    from worker.model.training.evaluate import heldout_token_chunks, transformers_perplexity

    parser = argparse.ArgumentParser(
        prog="python -m worker.bench.perplexity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--max-chunks", type=int, default=None)
    args = parser.parse_args(argv)
    chunks = heldout_token_chunks(args.model / "tokenizer.json", max_chunks=args.max_chunks)
    ours = engine_mean_nll(args.model, chunks)
    ref = transformers_perplexity(args.model, chunks).mean_nll
    print(
        f"{len(chunks)} held-out chunks of {len(chunks[0])} tokens ({len(chunks) * (len(chunks[0]) - 1)} targets)"
    )
    print(f"hybatch engine : mean NLL {ours:.6f}  perplexity {math.exp(ours):.4f}")
    print(f"transformers   : mean NLL {ref:.6f}  perplexity {math.exp(ref):.4f}")
    print(f"relative difference of the mean NLL: {abs(ours - ref) / ref:.2e}")
    return {"engine_nll": ours, "transformers_nll": ref}


if __name__ == "__main__":
    main()
