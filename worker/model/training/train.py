"""Train the default model from scratch on the Python standard library, on CPU, and write the checkpoint.

    nice -n 10 python -m worker.model.training.train --out worker/model/checkpoints/hybatch-tiny

Steps: split the stdlib sources (corpus.py), train the tokenizer on the train split (tokenizer.py),
train `MiMoV2FlashForCausalLM` in fp32 with AdamW, warmup + cosine (schedule.py) and router-bias load
balancing (balancing.py), save in bf16 (checkpoint.py), then evaluate held-out perplexity with
transformers (evaluate.py) and write `training_summary.json` next to the weights.
"""

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tokenizers
import torch
import transformers
from transformers import MiMoV2FlashForCausalLM

from worker.model.training import evaluate
from worker.model.training.balancing import ExpertLoadBalancer
from worker.model.training.checkpoint import save_bf16_checkpoint
from worker.model.training.corpus import read_stdlib_sources, split_corpus
from worker.model.training.data import document_stream, sample_windows
from worker.model.training.model_config import default_model_config
from worker.model.training.schedule import learning_rate, training_progress
from worker.model.training.tokenizer import ENDOFTEXT, IM_END, PAD, save_tokenizer, train_bpe_tokenizer


@dataclass(frozen=True)
class TrainArgs:
    """Command-line settings; `max_minutes=0` means no wall-clock budget (step-reproducible run)."""

    out: Path
    max_minutes: float
    max_steps: int
    batch_size: int
    seq_len: int
    peak_lr: float
    warmup_steps: int
    weight_decay: float
    bias_update_rate: float
    seed: int
    num_threads: int
    log_every_steps: int
    eval_max_chunks: int | None


@dataclass(frozen=True)
class TrainResult:
    """What the loop did: steps taken, wall time, recent mean loss, and what ended the schedule."""

    num_steps: int
    train_seconds: float
    final_train_loss: float
    stopped_by: str  # "steps" or "time"
    worst_expert_load_ratio: float


def parse_args() -> TrainArgs:
    """Parse the command line into `TrainArgs`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument(
        "--max-minutes", type=float, default=30.0, help="training wall-clock budget; 0 = none"
    )
    parser.add_argument("--max-steps", type=int, default=100_000)
    # Batch 8 on one thread: on the shared 2-core machine this beat batch 16 on two threads (more
    # optimizer steps per minute; two threads stall each other when the other core is busy).
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--peak-lr", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument(
        "--bias-update-rate",
        type=float,
        default=1e-2,
        help="router bias step per optimizer step (DeepSeek-V3 uses 1e-3 over far longer runs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--log-every-steps", type=int, default=10)
    parser.add_argument("--eval-max-chunks", type=int, default=None, help="score only the first N chunks")
    ns = parser.parse_args()
    return TrainArgs(**{field: getattr(ns, field) for field in TrainArgs.__dataclass_fields__})


def build_optimizer(model: torch.nn.Module, peak_lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights and attention sinks are not decayed)."""
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    not_decayed = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.95), eps=1e-8)


def train_loop(model: MiMoV2FlashForCausalLM, stream: torch.Tensor, args: TrainArgs) -> TrainResult:
    """Train `model` in place on windows of `stream` until the step or time budget is used up."""
    optimizer = build_optimizer(model, args.peak_lr, args.weight_decay)
    balancer = ExpertLoadBalancer(model, args.bias_update_rate)
    generator = torch.Generator().manual_seed(args.seed)
    budget_s = args.max_minutes * 60.0 if args.max_minutes > 0 else None
    recent_losses: list[float] = []
    worst_load_ratio = 1.0
    step = 0
    start = time.monotonic()
    model.train()
    while (progress := training_progress(step, args.max_steps, time.monotonic() - start, budget_s)) < 1.0:
        lr = learning_rate(step, progress, args.peak_lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        input_ids = sample_windows(stream, args.batch_size, args.seq_len, generator)  # [batch, seq_len]
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        worst_load_ratio = balancer.update()
        step += 1
        recent_losses = (recent_losses + [loss.item()])[-args.log_every_steps :]
        if step % args.log_every_steps == 0 or step == 1:
            elapsed_s = time.monotonic() - start
            print(
                f"step {step} loss {sum(recent_losses) / len(recent_losses):.4f} lr {lr:.2e} "
                f"expert_load_max/mean {worst_load_ratio:.2f} elapsed {elapsed_s:.0f}s "
                f"({elapsed_s / step:.2f} s/step)",
                flush=True,
            )
    train_seconds = time.monotonic() - start
    return TrainResult(
        num_steps=step,
        train_seconds=round(train_seconds, 1),
        final_train_loss=round(sum(recent_losses) / len(recent_losses), 4),
        stopped_by="steps" if step >= args.max_steps else "time",
        worst_expert_load_ratio=round(worst_load_ratio, 3),
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)

    split = split_corpus(read_stdlib_sources())
    print(f"corpus: {len(split.train)} train files, {len(split.heldout)} held-out files", flush=True)
    tokenizer = train_bpe_tokenizer(s.text for s in split.train)
    save_tokenizer(tokenizer, args.out)
    eot_id, im_end_id, pad_id = (tokenizer.token_to_id(t) for t in (ENDOFTEXT, IM_END, PAD))
    stream = document_stream(tokenizer, [s.text for s in split.train], eot_id)
    print(f"tokenizer: {tokenizer.get_vocab_size()} tokens; train stream {stream.numel()} tokens", flush=True)

    config = default_model_config(tokenizer.get_vocab_size(), eot_id, eot_id, pad_id)
    model = MiMoV2FlashForCausalLM(config)
    num_parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {num_parameters} parameters", flush=True)

    result = train_loop(model, stream, args)
    weights_path = save_bf16_checkpoint(model, args.out, eos_token_ids=[eot_id, im_end_id])

    chunks = evaluate.heldout_token_chunks(args.out / "tokenizer.json", max_chunks=args.eval_max_chunks)
    heldout = evaluate.transformers_perplexity(args.out, chunks)
    sample = evaluate.greedy_sample(args.out)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "num_parameters": num_parameters,
        "train_stream_tokens": stream.numel(),
        "train_tokens_seen": result.num_steps * args.batch_size * args.seq_len,
        "result": asdict(result),
        "weights_bytes": weights_path.stat().st_size,
        "heldout": {"num_chunks": len(chunks), "chunk_tokens": evaluate.EVAL_CHUNK_TOKENS, **asdict(heldout)},
        "sample": sample,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
