"""Benchmarks (``hybatch bench ...``). Each module runs with only torch, numpy, safetensors, tokenizers
(and transformers / triton for the peers), so it can be copied to a GPU machine and run as a script;
except ``e2e`` (with ``service``), which starts the whole service and needs its dependencies and the
``openai`` SDK."""
