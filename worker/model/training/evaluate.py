"""Held-out evaluation of a checkpoint with Hugging Face transformers, the reference implementation.

`heldout_token_chunks` fixes the exact token ids, so another implementation (our engine) can score the
same chunks and compare its perplexity with `transformers_perplexity`. Run as a script to print both
for a checkpoint: `python -m worker.model.training.evaluate worker/model/checkpoints/hybatch-tiny`.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import MiMoV2FlashForCausalLM

from worker.model.training.corpus import read_stdlib_sources, split_corpus
from worker.model.training.data import document_stream
from worker.model.training.tokenizer import ENDOFTEXT

EVAL_CHUNK_TOKENS = 512  # 4x the sliding window, so SWA layers really drop old keys
SAMPLE_PROMPT = "def fibonacci(n):"


@dataclass(frozen=True)
class Perplexity:
    """Mean next-token loss over `num_predicted_tokens` targets (nats), and its exponential."""

    mean_nll: float
    perplexity: float
    num_predicted_tokens: int


def heldout_token_chunks(
    tokenizer_path: Path, chunk_tokens: int = EVAL_CHUNK_TOKENS, max_chunks: int | None = None
) -> list[list[int]]:
    """Return the held-out stream cut into non-overlapping `chunk_tokens`-long chunks of token ids.

    The stream is the held-out stdlib files in sorted path order, each prefixed with `<|endoftext|>`
    (see `data.document_stream`); the partial last chunk is dropped, and only the first `max_chunks`
    chunks are kept when it is given.
    """
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    heldout = split_corpus(read_stdlib_sources()).heldout
    stream = document_stream(tokenizer, [s.text for s in heldout], tokenizer.token_to_id(ENDOFTEXT))
    num_chunks = stream.numel() // chunk_tokens
    if max_chunks is not None:
        num_chunks = min(num_chunks, max_chunks)
    return stream[: num_chunks * chunk_tokens].view(num_chunks, chunk_tokens).tolist()


def load_reference_model(checkpoint_dir: Path) -> MiMoV2FlashForCausalLM:
    """Load `checkpoint_dir` with transformers in float32 (weights upcast from their stored dtype), eval mode."""
    model = MiMoV2FlashForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32)
    return model.eval()


@torch.no_grad()
def transformers_perplexity(checkpoint_dir: Path, chunks: list[list[int]], batch_size: int = 8) -> Perplexity:
    """Score every chunk independently (fresh context, no cache) and pool the loss over all targets.

    Each chunk of n tokens contributes n - 1 targets: token t+1 predicted from tokens [0, t].
    """
    model = load_reference_model(checkpoint_dir)
    total_nll = 0.0
    num_targets = 0
    for start in range(0, len(chunks), batch_size):
        input_ids = torch.tensor(chunks[start : start + batch_size], dtype=torch.int64)  # [batch, chunk]
        logits = model(input_ids=input_ids).logits.float()  # [batch, chunk, vocab]
        targets = input_ids[:, 1:]
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        total_nll -= log_probs.gather(-1, targets[..., None]).sum().item()
        num_targets += targets.numel()
    mean_nll = total_nll / num_targets
    return Perplexity(mean_nll=mean_nll, perplexity=math.exp(mean_nll), num_predicted_tokens=num_targets)


@torch.no_grad()
def greedy_sample(checkpoint_dir: Path, prompt: str = SAMPLE_PROMPT, max_new_tokens: int = 64) -> str:
    """Greedy-decode up to `max_new_tokens` after `prompt` (no bos) with transformers; return prompt + completion.

    Decoding stops early at an eos id of the checkpoint's `generation_config.json`.
    """
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    model = load_reference_model(checkpoint_dir)
    input_ids = torch.tensor([tokenizer.encode(prompt).ids], dtype=torch.int64)
    output_ids = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
    )
    return tokenizer.decode(output_ids[0].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--chunk-tokens", type=int, default=EVAL_CHUNK_TOKENS)
    parser.add_argument("--max-chunks", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    chunks = heldout_token_chunks(args.checkpoint_dir / "tokenizer.json", args.chunk_tokens, args.max_chunks)
    result = transformers_perplexity(args.checkpoint_dir, chunks)
    print(f"held-out: {len(chunks)} chunks x {args.chunk_tokens} tokens, {result}")
    print(greedy_sample(args.checkpoint_dir))


if __name__ == "__main__":
    main()
