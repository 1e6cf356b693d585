"""Run folders and their record (`run.json`): what ran, from which code, on which machine, and
how it ended. A failed run says `status: failed` with the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brlm.io.files import read_json, write_json
from brlm.io.machine import environment, now


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

    def _reload(self) -> None:
        # Read-modify-write: a stage may hold its own RunRecord of the same run (e.g. training sets
        # the shards hash), so every change starts from what is on disk.
        if self.paths.record.is_file():
            self.data = read_json(self.paths.record)

    def update(self, **fields: Any) -> None:
        self._reload()
        self.data.update(fields)
        self.save()

    def set_hash(self, name: str, value: str) -> None:
        self._reload()
        self.data.setdefault("hashes", {})[name] = value
        self.save()

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self._reload()
        self.data.update(status=status, finished=now(), error=error)
        self.save()

    def save(self) -> None:
        write_json(self.paths.record, self.data)
