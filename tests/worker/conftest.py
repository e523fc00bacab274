import os
import sys
from pathlib import Path

# The Triton backend runs in the interpreter on CPU; set before any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

# Tiny models: a second thread only adds synchronisation, and on a busy 2-core machine it can make
# every op wait for a descheduled thread (measured 10x slower). One thread for the in-process tests.
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import build_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """Builds (once per session and shape) a tiny random checkpoint with transformers."""
    built: dict[tuple, Path] = {}

    def make(**kwargs) -> Path:
        key = tuple(sorted((k, str(v)) for k, v in kwargs.items()))
        if key not in built:
            built[key] = build_checkpoint(tmp_path_factory.mktemp("ckpt"), **kwargs)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_factory):
    return checkpoint_factory()
