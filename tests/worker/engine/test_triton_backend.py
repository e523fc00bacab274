"""The engine on the Triton kernels (interpreter on CPU) agrees with the PyTorch backend and transformers."""

import pytest
import torch
from checkpoints import load_reference

from worker.engine import LLM, SamplingParams


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the interpreter runs tiny tiles; a thread pool only adds contention
    yield
    torch.set_num_threads(previous)


def test_triton_backend_greedy_matches_torch_backend_and_transformers(checkpoint_factory):
    path = checkpoint_factory(sliding_window=6, num_layers=3)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [2, 7], [1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4]]
    params = SamplingParams(temperature=0, max_tokens=8)
    outs = {}
    for backend in ("torch", "triton"):
        llm = LLM(
            path,
            device="cpu",
            dtype="float32",
            block_size=4,
            kv_cache_gb=0.01,
            max_num_batched_tokens=5,
            attention_backend=backend,
        )
        outs[backend] = [
            o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params)
        ]
    ref = load_reference(path)
    with torch.no_grad():
        expected = [
            ref.generate(torch.tensor([p]), max_new_tokens=8, min_new_tokens=8, do_sample=False)[
                0, len(p) :
            ].tolist()
            for p in prompts
        ]
    assert outs["torch"] == expected
    assert outs["triton"] == expected
