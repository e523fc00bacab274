"""Bad requests get a clear error naming them; the other requests of the call are unaffected."""

import pytest

from worker.engine import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm(checkpoint_factory):
    return LLM(
        checkpoint_factory(max_position_embeddings=64),
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
    )


GOOD = {"prompt_token_ids": [3, 4, 5, 6]}


@pytest.mark.parametrize(
    "prompt,params,message",
    [
        ({"prompt_token_ids": []}, {"temperature": 0, "max_tokens": 4}, "prompt is empty"),
        ({"prompt_token_ids": [1, 2, 97]}, {"temperature": 0, "max_tokens": 4}, "outside the vocabulary"),
        ({"prompt_token_ids": [1, -2]}, {"temperature": 0, "max_tokens": 4}, "outside the vocabulary"),
        (
            {"prompt_token_ids": [1] * 60},
            {"temperature": 0, "max_tokens": 10},
            "beyond the context length 64",
        ),
        (GOOD, {"temperature": 0, "max_tokens": 0}, "max_tokens must be a positive integer"),
        (GOOD, {"temperature": -1, "max_tokens": 4}, "temperature must be >= 0"),
        (GOOD, {"top_p": 1.5, "max_tokens": 4}, "top_p must be in (0, 1]"),
        (GOOD, {"top_k": -3, "max_tokens": 4}, "top_k must be an integer >= 0"),
        (GOOD, {"max_tokens": 4, "frequency_penalty": 1}, "unexpected keyword"),
        ("some text", {"max_tokens": 4}, "no tokenizer.json"),
    ],
)
def test_bad_request_is_reported_and_others_run(llm, prompt, params, message):
    good_params = {"temperature": 0, "max_tokens": 5}
    alone = llm.generate([GOOD], SamplingParams(**good_params))[0].outputs[0].token_ids
    outs = llm.generate(
        [GOOD, prompt, GOOD], [good_params, params, good_params], request_ids=["a", "bad", "c"]
    )
    assert outs[1].request_id == "bad" and outs[1].outputs == []
    assert "bad" in outs[1].error and message in outs[1].error
    for out in (outs[0], outs[2]):
        assert out.error is None and out.outputs[0].token_ids == alone
    llm.engine.check_integrity()


def test_sampling_params_reject_bad_values_at_construction():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-0.5)
