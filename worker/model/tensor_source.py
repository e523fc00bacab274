"""Name -> tensor over a checkpoint's safetensors: one ``model.safetensors`` or the shards an
``model.safetensors.index.json`` lists (each file opened once, on first use)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from worker.model.config import CheckpointError


class TensorSource:
    def __init__(self, checkpoint_dir: Path):
        index = checkpoint_dir / "model.safetensors.index.json"
        single = checkpoint_dir / "model.safetensors"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: checkpoint_dir / shard for name, shard in weight_map.items()}
        elif single.is_file():
            with safe_open(single, "pt") as f:
                self.files = {name: single for name in f.keys()}  # noqa: SIM118
        else:
            raise CheckpointError(
                f"{checkpoint_dir}: neither model.safetensors nor model.safetensors.index.json"
            )
        missing_shards = sorted({str(p.name) for p in self.files.values() if not p.is_file()})
        if missing_shards:
            raise CheckpointError(f"{checkpoint_dir}: missing shard files {missing_shards}")
        self._handles: dict[Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = safe_open(path, "pt")
        return self._handles[path].get_tensor(name)

    def names(self) -> set[str]:
        return set(self.files)
