"""One tensor-parallel group's collectives: NCCL (CUDA) or gloo (CPU) for the model, gloo for control.

The groups are built straight on a ``TCPStore`` (no ``init_process_group``), so a process may hold
several engines, and tests may start and stop groups at will. Rank 0 is the engine's own process;
``ranks.py`` starts the others. Control traffic (each step's plan, KV moved between cache tiers)
always goes over gloo on CPU tensors: it is small next to the activations, and it keeps NCCL's
stream ordering out of the scheduler's path.

Any collective that fails (a peer's connection closed: the rank died) or times out raises
``EngineFailure``; the group is unusable after that.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

from worker.engine.outputs import EngineFailure

ROOT = 0


class RankGroup:
    def __init__(
        self,
        store: dist.Store,
        rank: int,
        size: int,
        device: torch.device,
        timeout: timedelta,
        explain: Callable[[], str | None] | None = None,
    ):
        """``explain`` (rank 0) says which rank has died, for the message of a failed collective."""
        self.rank, self.size, self.device = rank, size, device
        self.explain = explain
        self.control = dist.ProcessGroupGloo(dist.PrefixStore("control", store), rank, size, timeout)
        if device.type == "cuda":
            self.compute = dist.ProcessGroupNCCL(dist.PrefixStore("compute", store), rank, size)
        else:
            self.compute = dist.ProcessGroupGloo(dist.PrefixStore("compute", store), rank, size, timeout)
        self.broken: str | None = None  # what failed, once something has

    # -- Collectives (what the model's layers call) ---------------------------------------------------
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        self._wait(self.compute.allreduce([x]), "all-reduce")
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)]
        self._wait(self.compute.allgather([parts], [x]), "all-gather")
        return torch.cat(parts, dim=-1)

    # -- control ---------------------------------------------------------------------------------
    def broadcast_object(self, obj=None):
        """Rank 0's ``obj`` on every rank (pickled; ``obj`` is ignored elsewhere)."""
        size = torch.zeros(1, dtype=torch.int64)
        payload = None
        if self.rank == ROOT:
            payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
            size[0] = payload.numel()
        self._wait(self.control.broadcast(size, ROOT), "broadcast")
        if self.rank != ROOT:
            payload = torch.empty(int(size[0]), dtype=torch.uint8)
        self._wait(self.control.broadcast(payload, ROOT), "broadcast")
        return obj if self.rank == ROOT else pickle.loads(payload.numpy().tobytes())

    def send(self, tensor: torch.Tensor, to_rank: int) -> None:
        self._wait(self.control.send([tensor.contiguous().cpu()], to_rank, 0), f"send to rank {to_rank}")

    def recv(self, like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``like``'s shape and dtype from rank 0 (CPU)."""
        out = torch.empty_like(like, device="cpu")
        self._wait(self.control.recv([out], ROOT, 0), "receive from rank 0")
        return out

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor] | None:
        """Every rank's equally shaped CPU ``tensor``, in rank order, on rank 0 (None elsewhere)."""
        options = dist.GatherOptions()
        options.rootRank = ROOT
        tensor = tensor.contiguous().cpu()
        parts = [[torch.empty_like(tensor) for _ in range(self.size)]] if self.rank == ROOT else []
        self._wait(self.control.gather(parts, [tensor], options), "gather")
        return parts[0] if self.rank == ROOT else None

    def _wait(self, work, what: str) -> None:
        if self.broken is not None:
            raise EngineFailure(f"tensor-parallel group is broken ({self.broken})")
        try:
            work.wait()
        except RuntimeError as error:
            cause = self.explain() if self.explain is not None else None
            if cause is None:
                cause = str(error).splitlines()[0][:300]
            self.broken = f"{what} on rank {self.rank} failed: {cause}"
            raise EngineFailure(f"tensor-parallel {self.broken}") from error
