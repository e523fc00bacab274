"""The hybrid-attention inference engine (vLLM-shaped API).

``LLM`` is imported on first use: the engine's modules and ``worker.kv_cache`` import each other's
building blocks, and an eager import here would make importing ``worker.kv_cache`` first circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.engine.outputs import CompletionOutput, RequestError, RequestOutput
from worker.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from worker.engine.llm import LLM

__all__ = ["LLM", "CompletionOutput", "RequestError", "RequestOutput", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "LLM":
        from worker.engine.llm import LLM

        return LLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
