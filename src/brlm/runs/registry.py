"""Run folders and their record (`run.json`): what ran, from which code, on which machine, and
how it ended. A failed run says `status: failed` with the error.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brlm.runs.artifacts import read_json, write_json


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def train_summary(self) -> Path:
        return self.root / "train.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def samples(self) -> Path:
        return self.root / "samples.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    """The commit of the brlm source tree in use (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import numpy
    import torch

    import brlm

    env = {
        "brlm": brlm.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    return env


class RunRecord:
    """Reads and updates run.json atomically."""

    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.data: dict[str, Any] = read_json(paths.record) if paths.record.is_file() else {}

    def start(self, preset: str, scale: str, command: str) -> None:
        self.data = {
            "name": self.paths.root.name,
            "preset": preset,
            "scale": scale,
            "command": command,
            "status": "running",
            "started": now(),
            "finished": None,
            "error": None,
            "environment": environment(),
            "hashes": {},
        }
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def set_hash(self, name: str, value: str) -> None:
        self.data.setdefault("hashes", {})[name] = value
        self.save()

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self.data.update(status=status, finished=now(), error=error)
        self.save()

    def save(self) -> None:
        write_json(self.paths.record, self.data)
