"""Run folders, their record (`run.json`) and their lock.

run.json says what ran, from which code, on which machine (host, pid) and how it ended: a failed
run says `status: failed` with the error; a run whose process is gone while run.json still says
`running` reads as `interrupted` (`live_status`).

One writer at a time: `RunLock` holds `<run>/.lock` (pid, host, since, command) while a command
writes the folder; a second writer gets a one-line error naming the holder. A lock left by a
killed process on this host is stale and is taken over.

    with RunLock(paths, "brlm train"):
        ...
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brlm.errors import BrlmError
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
            "pid": os.getpid(),
            "host": socket.gethostname(),
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

    def resume(self, command: str) -> None:
        """A continued run: running again, under this process."""
        self._reload()
        self.data.update(status="running", error=None, finished=None, pid=os.getpid(), host=socket.gethostname(),
                         resumed=int(self.data.get("resumed") or 0) + 1, resume_command=command)
        self.save()

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self._reload()
        self.data.update(status=status, finished=now(), error=error)
        self.save()

    def save(self) -> None:
        write_json(self.paths.record, self.data)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def live_status(record: dict[str, Any]) -> str | None:
    """run.json's status, except that a `running` run whose process is gone (on this host) is
    `interrupted`: killed, or stopped by a signal before it could say so."""
    status = record.get("status")
    if status == "running" and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        if not pid_alive(record["pid"]):
            return "interrupted"
    return status


class RunLock:
    """`<run>/.lock` while one command writes a run folder; see the module docstring."""

    def __init__(self, paths: RunPaths, command: str):
        self.path = paths.root / ".lock"
        self.root = paths.root
        self.command = command
        self.held = False

    def _info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "since": now(), "command": self.command}

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise BrlmError(f"{self.root}: exists and is not a folder; pick another run folder") from None
        except OSError as e:
            raise BrlmError(f"{self.root}: cannot create the run folder ({e.strerror or e})") from None
        if not self.root.is_dir():
            raise BrlmError(f"{self.root}: exists and is not a folder; pick another run folder")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                pid, host = holder.get("pid"), holder.get("host")
                if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
                    # Stale: its process is gone. Take it over (remove, then race for O_EXCL again).
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    from brlm.io.logging import info

                    info(f"{self.root}: taking over a stale lock of pid {pid} ({holder.get('command', '?')}, since {holder.get('since', '?')})")
                    continue
                if pid == os.getpid() and host == socket.gethostname():
                    return  # this process already holds it (a verb inside `brlm run`)
                raise BrlmError(
                    f"{self.root}: in use by pid {pid} on {host} since {holder.get('since', '?')} "
                    f"({holder.get('command', '?')}); wait for it to finish or stop it"
                    + ("" if host == socket.gethostname() else f" (if it is gone, delete {self.path})")
                ) from None
            except OSError as e:
                what = "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else (e.strerror or str(e))
                raise BrlmError(f"{self.root}: cannot write in the run folder ({what}); pick a writable --run folder") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(self._info()) + "\n")
            self.held = True
            return
        raise BrlmError(f"{self.path}: could not take the lock (another process keeps taking it)")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                if self._holder().get("pid") == os.getpid():
                    self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
