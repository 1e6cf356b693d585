"""Atomic file writes, content hashes and stage manifests.

Stages talk through files. Every file is written to a temporary name in the same folder and
renamed into place, so a crash never leaves a half-written file that looks whole. A stage
writes `manifest.json` last; its `key` hashes the stage's config and inputs, and a stage whose
key did not change is not redone.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from brlm.errors import DataError


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file 0600; a file written in place would get 0666 minus the umask, so do that.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stage_key(**parts: Any) -> str:
    """Hash of everything a stage's output depends on (config dicts, input hashes, versions)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    p = Path(folder) / "manifest.json"
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except (OSError, json.JSONDecodeError):
        return None


def is_fresh(folder: str | Path, key: str) -> bool:
    """True when the stage in `folder` finished with this key and its files are all there."""
    m = read_manifest(folder)
    if not m or m.get("key") != key:
        return False
    return all((Path(folder) / name).is_file() for name in m.get("files", []))


def write_manifest(folder: str | Path, stage: str, key: str, files: list[str], **info: Any) -> dict[str, Any]:
    m = {"stage": stage, "key": key, "files": files, **info}
    write_json(Path(folder) / "manifest.json", m)
    return m


def parse_json_object(line: str, path: str | Path, lineno: int) -> dict[str, Any]:
    """One JSONL line as a dict; anything else is a DataError naming file:line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object per line") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a UTF-8 JSONL file (gzip-compressed when
    its name ends in .gz); errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        f = opener(path, "rt", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, parse_json_object(line, path, lineno)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 (byte {e.start} of a line)") from None
        except (OSError, EOFError, zlib.error) as e:  # a damaged .gz
            raise DataError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed onto it on success and removed on failure, so a
    failure leaves neither a half-written folder nor a damaged earlier one at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        # mkdtemp / mkstemp create owner-only entries; a folder like this is meant to be shared, so
        # the usual umask applies.
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            f.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
