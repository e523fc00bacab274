"""Copies of cached KV between device blocks and flat host payloads, layer by layer.

A payload is one flat 1-D tensor of the model dtype laid out as, for every full-attention layer in
order, K then V of one block (``[block_size, kv_heads, head_dim]`` each), then, when the entry has a
retained window of ``w`` blocks, for every sliding-window layer K then V of those ``w`` blocks.

Loads are queued per step and performed per layer: on CUDA each layer's copies run on a copy stream
and the layer's compute waits on that layer's event, so a full-attention layer's cached KV streams in
while the layers before it compute. On CPU the same code runs the copies synchronously, per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.model.config import ModelConfig


@dataclass(frozen=True)
class PendingLoad:
    payload: torch.Tensor  # flat host tensor
    full_block: int
    window: tuple[int, ...]  # device SWA blocks to fill (empty: the full part only)


class KVTransfer:
    def __init__(
        self,
        config: ModelConfig,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        overlap: bool = True,
    ):
        self.config = config
        self.kv_caches = kv_caches
        self.device = device
        self.overlap = overlap
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pending: list[PendingLoad] = []
        self._events: dict[int, torch.cuda.Event] = {}
        self._loaded_layers: set[int] = set()
        # Per layer: (elements of one block's K, of its V, elements of the payload before this layer,
        # counting sliding-window layers per window block). Computed once; loads read it per layer.
        self._layout: dict[int, tuple[int, int, int]] = {}
        offset = 0
        for i in (*config.full_layers, *config.swa_layers):
            k_numel, v_numel = kv_caches[i][0][0].numel(), kv_caches[i][1][0].numel()
            self._layout[i] = (k_numel, v_numel, offset)
            offset += k_numel + v_numel
        self._full_numel = sum(k + v for i, (k, v, _) in self._layout.items() if not config.is_sliding(i))
        self._window_block_numel = offset - self._full_numel

    # -- layout ------------------------------------------------------------------------------------
    def payload_numel(self, window_len: int) -> int:
        return self._full_numel + window_len * self._window_block_numel

    def payload_bytes(self, window_len: int) -> int:
        return self.payload_numel(window_len) * self.kv_caches[0][0].element_size()

    def _offsets(self, layer: int, window_len: int) -> tuple[int, int, int]:
        """(start of K, start of V, end of V) of ``layer``'s part of a payload."""
        k_numel, v_numel, before = self._layout[layer]
        if not self.config.is_sliding(layer):
            return before, before + k_numel, before + k_numel + v_numel
        # Sliding-window layers hold window_len blocks each: scale their part of the prefix.
        start = self._full_numel + (before - self._full_numel) * window_len
        return start, start + window_len * k_numel, start + window_len * (k_numel + v_numel)

    # -- device -> host ------------------------------------------------------------------------------
    def save(self, full_block: int, window: tuple[int, ...]) -> torch.Tensor:
        """Flat host copy of one cached block (and its window); synchronous."""
        parts = []
        for i in self.config.full_layers:
            k, v = self.kv_caches[i]
            parts += [k[full_block].flatten(), v[full_block].flatten()]
        if window:
            index = torch.tensor(window, device=self.device)
            for i in self.config.swa_layers:
                k, v = self.kv_caches[i]
                parts += [k[index].flatten(), v[index].flatten()]
        flat = torch.cat(parts)
        if self.device.type == "cuda":
            host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            host.copy_(flat)
            return host
        return flat.clone()

    # -- host -> device ------------------------------------------------------------------------------
    def schedule_load(self, load: PendingLoad) -> None:
        self._pending.append(load)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def begin_step(self) -> None:
        """Issues the step's loads: all at once when not overlapping, else per layer on the copy stream."""
        self._loaded_layers.clear()
        self._events.clear()
        if not self._pending:
            return
        if not self.overlap:
            for layer in range(self.config.num_layers):
                self._copy_layer(layer)
            self._pending.clear()
            return
        if self.copy_stream is not None:
            self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.copy_stream):
                for layer in range(self.config.num_layers):
                    self._copy_layer(layer)
                    event = torch.cuda.Event()
                    event.record(self.copy_stream)
                    self._events[layer] = event

    def before_layer(self, layer: int) -> None:
        """Called by the model before ``layer`` runs: its cached KV must be in place."""
        if not self._pending:
            return
        if layer in self._events:
            torch.cuda.current_stream(self.device).wait_event(self._events[layer])
        elif layer not in self._loaded_layers:
            self._copy_layer(layer)  # CPU: synchronous, but still one layer at a time
        self._loaded_layers.add(layer)
        if layer == self.config.num_layers - 1:
            self._pending.clear()

    def _copy_layer(self, layer: int) -> None:
        k_cache, v_cache = self.kv_caches[layer]
        sliding = self.config.is_sliding(layer)
        for load in self._pending:
            if sliding and not load.window:
                continue
            window_len = len(load.window) if load.window else 0
            k_lo, v_lo, v_hi = self._offsets(layer, window_len)
            if sliding:
                index = torch.tensor(load.window, device=self.device)
                shape_k = (len(load.window), *k_cache.shape[1:])
                shape_v = (len(load.window), *v_cache.shape[1:])
                k_cache.index_copy_(
                    0, index, load.payload[k_lo:v_lo].view(shape_k).to(self.device, non_blocking=True)
                )
                v_cache.index_copy_(
                    0, index, load.payload[v_lo:v_hi].view(shape_v).to(self.device, non_blocking=True)
                )
            else:
                k_cache[load.full_block].copy_(
                    load.payload[k_lo:v_lo].view(k_cache.shape[1:]), non_blocking=True
                )
                v_cache[load.full_block].copy_(
                    load.payload[v_lo:v_hi].view(v_cache.shape[1:]), non_blocking=True
                )
