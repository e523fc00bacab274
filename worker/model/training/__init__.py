"""Reproducible training of the shipped default model (`worker/model/checkpoints/hybatch-tiny`).

Development tooling, not part of the serving path: it needs `transformers` (a dev dependency).
`python -m worker.model.training.train` rebuilds the checkpoint; `evaluate` holds the held-out
perplexity that engine tests compare against. See docs/default-model.md.
"""
