"""The host-memory tier: flat KV payloads of evicted cache entries, under a byte budget, LRU."""

from __future__ import annotations

from collections import OrderedDict

import torch


class HostStore:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = max(0, int(budget_bytes))
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.num_bytes = 0

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: bytes, payload: torch.Tensor) -> list[tuple[bytes, torch.Tensor]]:
        """Stores ``payload``; returns the least-recently-used entries pushed out to make room
        (including ``payload`` itself when it cannot fit at all)."""
        size = payload.numel() * payload.element_size()
        if size > self.budget_bytes:
            return [(key, payload)]
        evicted = []
        while self.num_bytes + size > self.budget_bytes:
            old_key, old = self._entries.popitem(last=False)
            self.num_bytes -= old.numel() * old.element_size()
            evicted.append((old_key, old))
        self._entries[key] = payload
        self.num_bytes += size
        return evicted

    def take(self, key: bytes) -> torch.Tensor | None:
        payload = self._entries.pop(key, None)
        if payload is not None:
            self.num_bytes -= payload.numel() * payload.element_size()
        return payload

    def discard(self, key: bytes) -> None:
        self.take(key)

    def check_integrity(self) -> None:
        total = sum(p.numel() * p.element_size() for p in self._entries.values())
        if total != self.num_bytes or total > self.budget_bytes:
            raise AssertionError(
                f"host tier counts {self.num_bytes} bytes, holds {total}, budget {self.budget_bytes}"
            )
