"""Between a batch's validated requests and the engine: what goes in, and what comes out.

In: the prompt as token ids, salted with the account id so that prefix-cache entries are never
shared between accounts, and the request's sampling settings. Chat requests were rendered with
the checkpoint's chat template and tokenized during validation, so the ids counted there are the
ids run here. Out: the three metered token classes and the OpenAI-shaped output line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hybatch.batch_input import BatchRequest
from hybatch.message_lines import message_line
from hybatch.models import BatchEndpoint, utc_now
from hybatch.result_lines import TokenUsage, success_line
from worker.responses_output import response_line

if TYPE_CHECKING:
    from worker.engine import RequestOutput, SamplingParams


def engine_prompt(request: BatchRequest, *, account_id: str) -> dict[str, Any]:
    generation = request.generation
    prompt = {"prompt_token_ids": list(generation.prompt_token_ids), "cache_salt": account_id}
    if generation.message_boundaries:  # chat: the engine keeps cache windows where messages end
        prompt["message_boundaries"] = list(generation.message_boundaries)
    return prompt


def sampling_params(request: BatchRequest) -> SamplingParams:
    """The engine's sampling settings for ``request``; raises ValueError for values it refuses."""
    from worker.engine import SamplingParams

    generation = request.generation
    return SamplingParams(
        temperature=generation.temperature,
        top_p=generation.top_p,
        max_tokens=generation.max_tokens,
        seed=generation.seed,
        stop=generation.stop,
        top_k=generation.top_k or 0,  # the sampler's 0 is "off"
    )


def token_usage(output: RequestOutput) -> TokenUsage:
    """Cache-hit input = prompt tokens served from the prefix cache; the rest were computed."""
    return TokenUsage(
        cache_hit_input_tokens=output.num_cached_tokens,
        cache_miss_input_tokens=len(output.prompt_token_ids) - output.num_cached_tokens,
        output_tokens=len(output.outputs[0].token_ids),
    )


def output_line(
    request: BatchRequest, output: RequestOutput, *, endpoint: BatchEndpoint, model: str, usage: TokenUsage
) -> dict[str, Any]:
    completion = output.outputs[0]
    finish_reason = completion.finish_reason or "length"  # set on every finished request
    if endpoint is BatchEndpoint.RESPONSES:
        return response_line(
            request.custom_id,
            request.generation,
            model=model,
            text=completion.text,
            finish_reason=finish_reason,
            usage=usage,
            finished_at=utc_now(),
        )
    if endpoint is BatchEndpoint.MESSAGES:
        return message_line(
            request.custom_id,
            model=model,
            text=completion.text,
            finish_reason=finish_reason,
            stop=completion.stop_reason,
            usage=usage,
        )
    return success_line(
        request.custom_id,
        endpoint=endpoint,
        model=model,
        text=completion.text,
        finish_reason=finish_reason,
        usage=usage,
        created_at=utc_now(),
    )
