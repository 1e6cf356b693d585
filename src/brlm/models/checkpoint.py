"""Checkpoints as safetensors + JSON: `model_{step:06d}.safetensors`, `meta_{step:06d}.json` and,
for resuming, `train_{step:06d}.pt` (optimizer state and RNG tensors, loaded with
`torch.load(weights_only=True)`, so nothing arbitrary is unpickled).

Each file is written atomically (temporary name + rename) and the meta, written last, holds the
SHA-256 of the others: a checkpoint whose meta is missing, unreadable or does not match its files
(a truncated copy, a disk error, a kill in the middle of a write) is reported and skipped, and
`--resume` falls back to the previous good one. `latest.json` names the best (lowest validation
loss) and the last step; the best and the `keep` most recent checkpoints stay, older ones go.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model

from brlm.config import ModelConfig
from brlm.errors import BrlmError
from brlm.io.files import atomic_path, file_sha256, read_json, write_json
from brlm.io.logging import info
from brlm.models.registry import build_model

_STEP = re.compile(r"^meta_(\d+)\.json$")


def save_checkpoint(ckpt_dir: str | Path, step: int, model: nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write the weights (and, with train_state, the resume state), then the meta that vouches for them.

    train_state: {"tensors": {...} for torch.save (optimizer state, RNG tensors), "json": {...}}.
    """
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"model_{step:06d}.safetensors"
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))  # handles the tied embedding / lm_head weights
    files = {path.name: file_sha256(path)}
    extra: dict[str, Any] = {}
    if train_state is not None:
        tpath = ckpt_dir / f"train_{step:06d}.pt"
        with atomic_path(tpath) as tmp:
            torch.save(train_state["tensors"], tmp)
        files[tpath.name] = file_sha256(tpath)
        extra["train_state"] = train_state["json"]
    write_json(ckpt_dir / f"meta_{step:06d}.json", {"step": step, **meta, **extra, "files": files})
    return path


def checkpoint_steps(ckpt_dir: str | Path) -> list[int]:
    """Steps that have a meta file, newest first."""
    steps = [int(m.group(1)) for p in Path(ckpt_dir).glob("meta_*.json") if (m := _STEP.match(p.name))]
    return sorted(steps, reverse=True)


def _remove(ckpt_dir: Path, step: int) -> None:
    for name in (f"model_{step:06d}.safetensors", f"train_{step:06d}.pt", f"meta_{step:06d}.json"):
        (ckpt_dir / name).unlink(missing_ok=True)


def update_pointers(ckpt_dir: str | Path, keep: int = 1, **pointers: int) -> dict[str, int]:
    """Update latest.json ({'best': step, 'last': step}); keep the pointed steps and the `keep`
    most recent ones, delete the rest."""
    ckpt_dir = Path(ckpt_dir)
    p = ckpt_dir / "latest.json"
    try:
        current = read_pointers(ckpt_dir) if p.is_file() else {}
    except BrlmError:
        current = {}  # a damaged latest.json is rebuilt by the writer
    current.update(pointers)
    write_json(p, current)
    steps = sorted({int(f.stem.split("_")[1]) for f in ckpt_dir.glob("model_*.safetensors")}, reverse=True)
    last = current.get("last")
    recent = [s for s in steps if last is None or s <= last][:keep]
    wanted = set(current.values()) | set(recent)
    for step in steps:
        if step not in wanted:
            _remove(ckpt_dir, step)
    return current


def verify_checkpoint(ckpt_dir: str | Path, step: int) -> dict[str, Any]:
    """The meta of a checkpoint whose files are all present and match their hashes; else BrlmError."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / f"meta_{step:06d}.json"
    try:
        meta = read_json(meta_path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrlmError(f"{meta_path}: unreadable checkpoint meta ({e.__class__.__name__})") from None
    for name, sha in (meta.get("files") or {}).items():
        f = ckpt_dir / name
        if not f.is_file():
            raise BrlmError(f"{f}: missing")
        if file_sha256(f) != sha:
            raise BrlmError(f"{f}: corrupted or truncated (SHA-256 does not match {meta_path.name})")
    return meta


def latest_good_checkpoint(ckpt_dir: str | Path, resumable: bool = True, quiet: bool = False) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that verifies (with resume state if `resumable`); bad ones are reported."""
    for step in checkpoint_steps(ckpt_dir):
        try:
            meta = verify_checkpoint(ckpt_dir, step)
        except BrlmError as e:
            if not quiet:
                info(f"warning: skipping checkpoint at step {step}: {e}")
            continue
        if resumable and "train_state" not in meta:
            continue
        return step, meta
    return None


def load_train_tensors(ckpt_dir: str | Path, step: int) -> dict[str, Any]:
    path = Path(ckpt_dir) / f"train_{step:06d}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses anything but tensors and plain containers
        first = str(e).strip().splitlines()[0] if str(e).strip() else "refused"
        raise BrlmError(f"{path}: not a brlm training state; refused to unpickle it ({first[:120]})") from None
    except (RuntimeError, EOFError) as e:
        raise BrlmError(f"{path}: unreadable training state ({e.__class__.__name__})") from None


def read_pointers(ckpt_dir: str | Path) -> dict[str, int]:
    """latest.json ({'best': step, 'last': step}); a damaged one is a one-line error."""
    p = Path(ckpt_dir) / "latest.json"
    try:
        pointers = read_json(p)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BrlmError(f"{p}: damaged (not JSON); delete it and run `brlm train --resume` to rebuild it from the checkpoints") from None
    if not isinstance(pointers, dict) or not all(isinstance(v, int) for v in pointers.values()):
        raise BrlmError(f"{p}: expected {{\"best\": step, \"last\": step}}, got {str(pointers)[:80]}")
    return pointers


def load_weights(model: nn.Module, ckpt_dir: str | Path, step: int, device: str = "cpu") -> None:
    weights = Path(ckpt_dir) / f"model_{step:06d}.safetensors"
    try:
        load_model(model, str(weights), device=str(device))
    except Exception as e:  # safetensors raises several types for damaged files
        raise BrlmError(f"{weights}: cannot load weights ({e.__class__.__name__}: {e})") from None


def find_checkpoint(ckpt_dir: str | Path, which: str = "best") -> int:
    ckpt_dir = Path(ckpt_dir)
    p = ckpt_dir / "latest.json"
    if not p.is_file():
        raise BrlmError(f"{ckpt_dir}: no checkpoints (latest.json missing); run `brlm train` first")
    pointers = read_pointers(ckpt_dir)
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
    load_weights(model, ckpt_dir, step, device)
    return model.to(device).eval(), meta
