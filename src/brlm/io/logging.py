"""Metric logging and console progress.

Every stage writes figures through one small protocol (`log`, `log_dict`, `log_config`,
`close`, as torchtune's loggers); reports are rendered later from those files alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class MetricLogger(Protocol):
    def log(self, name: str, value: float, step: int) -> None: ...
    def log_dict(self, payload: dict[str, Any], step: int) -> None: ...
    def log_config(self, config: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JSONLLogger:
    """Appends one JSON object per call to `metrics.jsonl`, flushed at once (crash-safe lines)."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", encoding="utf-8")

    def log(self, name: str, value: float, step: int) -> None:
        self.log_dict({name: value}, step)

    def log_dict(self, payload: dict[str, Any], step: int) -> None:
        self._f.write(json.dumps({"step": step, **payload}, default=float) + "\n")
        self._f.flush()

    def log_config(self, config: dict[str, Any]) -> None:
        self._f.write(json.dumps({"config": config}) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class NullLogger:
    """The logger of ranks > 0: only rank 0 writes."""

    def log(self, name: str, value: float, step: int) -> None: ...
    def log_dict(self, payload: dict[str, Any], step: int) -> None: ...
    def log_config(self, config: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill or a full disk: the rows before it still count
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterator[T]:
    """A progress bar with rate and ETA on stderr (tqdm), refreshed at most once a second."""
    return iter(tqdm(items, desc=desc, unit=unit, total=total, mininterval=1.0, file=sys.stderr, dynamic_ncols=True))


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
