"""Triton attention kernels for hybrid (full + sliding-window) attention models.

Public: ``paged_attention`` and ``write_kv``; ``kernels.reference`` holds their plain PyTorch
definitions. Importing this package does not import Triton (the launchers do, at the first call), so
CPU-only installs can import it; ``kernels.bench`` is the GPU benchmark and is never imported here.
"""

from kernels.paged_attention import paged_attention
from kernels.write_kv import write_kv

__all__ = ["paged_attention", "write_kv"]
