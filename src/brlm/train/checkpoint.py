"""Checkpoints as safetensors + JSON: `model_{step:06d}.safetensors` and `meta_{step:06d}.json`.

Nothing is unpickled: weights load through safetensors and metadata is JSON. `latest.json`
names the best (lowest validation loss) and the last step; other checkpoints are pruned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors.torch import load_model, save_model

from brlm.config import ModelConfig
from brlm.errors import BrlmError
from brlm.models.registry import build_model
from brlm.runs.artifacts import atomic_path, read_json, write_json


def save_checkpoint(ckpt_dir: str | Path, step: int, model: nn.Module, meta: dict[str, Any]) -> Path:
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"model_{step:06d}.safetensors"
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))  # handles the tied embedding / lm_head weights
    write_json(ckpt_dir / f"meta_{step:06d}.json", {"step": step, **meta})
    return path


def update_pointers(ckpt_dir: str | Path, **pointers: int) -> dict[str, int]:
    """Update latest.json ({'best': step, 'last': step}) and drop checkpoints nothing points to."""
    ckpt_dir = Path(ckpt_dir)
    p = ckpt_dir / "latest.json"
    current = read_json(p) if p.is_file() else {}
    current.update(pointers)
    write_json(p, current)
    keep = set(current.values())
    for f in ckpt_dir.glob("model_*.safetensors"):
        step = int(f.stem.split("_")[1])
        if step not in keep:
            f.unlink(missing_ok=True)
            (ckpt_dir / f"meta_{step:06d}.json").unlink(missing_ok=True)
    return current


def find_checkpoint(ckpt_dir: str | Path, which: str = "best") -> int:
    ckpt_dir = Path(ckpt_dir)
    p = ckpt_dir / "latest.json"
    if not p.is_file():
        raise BrlmError(f"{ckpt_dir}: no checkpoints (latest.json missing); run `brlm train` first")
    pointers = read_json(p)
    if which.isdigit():
        return int(which)
    if which not in pointers:
        raise BrlmError(f"--checkpoint {which!r}: expected 'best', 'last' or a step number; have {pointers}")
    return int(pointers[which])


def load_checkpoint(ckpt_dir: str | Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its meta and load its weights. Returns (model in eval mode, meta)."""
    ckpt_dir = Path(ckpt_dir)
    step = find_checkpoint(ckpt_dir, which)
    meta_path = ckpt_dir / f"meta_{step:06d}.json"
    weights = ckpt_dir / f"model_{step:06d}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise BrlmError(f"{ckpt_dir}: checkpoint for step {step} is missing ({weights.name} / {meta_path.name})")
    meta = read_json(meta_path)
    model = build_model(ModelConfig(**meta["model"]), meta["vocab_size"])
    try:
        load_model(model, str(weights), device=str(device))
    except Exception as e:  # safetensors raises several types for damaged files
        raise BrlmError(f"{weights}: cannot load weights ({e.__class__.__name__}: {e})") from None
    return model.to(device).eval(), meta
