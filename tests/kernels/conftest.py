"""Kernel tests run the Triton kernels in the interpreter on CPU (fp32/fp16; bf16 dots are wrong there).

``TRITON_INTERPRET`` must be set before the kernel modules are imported (Triton picks the interpreter
when a kernel is defined). Conftest modules load at collection time, before this folder's tests run,
and the ``kernels`` package imports its Triton modules only at the first kernel call.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402  (after the environment is set)
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: a thread pool only adds contention on the shared 2-core machines (100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
