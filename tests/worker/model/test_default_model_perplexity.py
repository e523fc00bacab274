"""The shipped default model: our engine and transformers give the same held-out perplexity."""

import math

from worker.bench.perplexity import engine_mean_nll
from worker.bench.workloads import DEFAULT_CHECKPOINT


def test_engine_and_transformers_agree_on_heldout_perplexity():
    from worker.model.training.evaluate import heldout_token_chunks, transformers_perplexity

    chunks = heldout_token_chunks(DEFAULT_CHECKPOINT / "tokenizer.json", max_chunks=4)
    # Chunks of 512 tokens cut into 200-token prefill steps: the sliding window really moves.
    ours = engine_mean_nll(DEFAULT_CHECKPOINT, chunks, max_num_batched_tokens=200)
    ref = transformers_perplexity(DEFAULT_CHECKPOINT, chunks).mean_nll
    assert abs(ours - ref) / ref < 1e-5
    assert math.exp(ref) < 200  # a trained model, far below the vocabulary size


def test_default_model_writes_python_like_code():
    from worker.engine import LLM, SamplingParams

    llm = LLM(DEFAULT_CHECKPOINT, device="cpu", dtype="float32", kv_cache_gb=0.1)
    text = llm.generate("def fibonacci(n):", SamplingParams(temperature=0, max_tokens=64))[0].outputs[0].text
    python_words = ("return", "self", "if ", "def ", "None", "    ")
    assert sum(word in text for word in python_words) >= 3, text
