"""Triton kernels for hybrid (full + sliding-window) attention models and their FP8 linears.

Public: ``paged_attention`` and ``write_kv`` (``kernels.reference`` holds their plain PyTorch
definitions), and ``block_fp8_linear`` (``kernels.block_fp8_reference``). Importing this package
does not import Triton (the launchers do, at the first call), so CPU-only installs can import it;
``kernels.bench`` is the GPU benchmark and is never imported here.
"""

from kernels.block_fp8 import block_fp8_linear
from kernels.paged_attention import paged_attention
from kernels.write_kv import write_kv

__all__ = ["block_fp8_linear", "paged_attention", "write_kv"]
