"""Learning-rate schedule: linear warmup over steps, then cosine decay over training progress."""

import math

MIN_LR_RATIO = 0.1


def training_progress(step: int, max_steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """Fraction of the training budget used: the larger of steps done / `max_steps` and time / `budget_s`.

    Training stops at 1.0. With `budget_s=None` only steps count, and the run is reproducible step for step.
    """
    step_fraction = step / max_steps
    if budget_s is None:
        return step_fraction
    return max(step_fraction, elapsed_s / budget_s)


def learning_rate(step: int, progress: float, peak_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) at training `progress` in [0, 1]."""
    warmup = min(1.0, (step + 1) / warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak_lr * warmup * (MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * cosine)
