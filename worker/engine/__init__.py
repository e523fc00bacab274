"""The hybrid-attention inference engine (vLLM-shaped API)."""

from worker.engine.llm import LLM
from worker.engine.outputs import CompletionOutput, EngineFailure, RequestError, RequestOutput
from worker.engine.sampling_params import SamplingParams

__all__ = ["LLM", "CompletionOutput", "EngineFailure", "RequestError", "RequestOutput", "SamplingParams"]
