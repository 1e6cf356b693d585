"""Read documents from the built-in demo corpus, JSONL / JSONL.gz files, .txt files or folders.

Bytes that are not valid UTF-8 are replaced (U+FFFD) and counted in `stats["utf8_errors"]`
rather than crashing a long read; every other problem is a DataError naming file and line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from brlm.errors import DataError

BUILTIN = {
    "builtin:demo": "demo_corpus.jsonl",
}


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_source(source: str) -> Path:
    if source.startswith("builtin:"):
        if source not in BUILTIN:
            raise DataError(f"data.source={source!r}: unknown built-in corpus; available: {', '.join(BUILTIN)}")
        return Path(str(resources.files("brlm") / "resources" / BUILTIN[source]))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found (data.source); expected a .jsonl, .jsonl.gz or .txt file or a folder")
    return path


def _decode(raw: bytes, stats: Counter) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["utf8_errors"] += 1
        return raw.decode("utf-8", errors="replace")


def _open_binary(path: Path) -> BinaryIO:
    try:
        return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None


def _read_jsonl(path: Path, text_field: str, stats: Counter) -> Iterator[Document]:
    f = _open_binary(path)
    lineno = 0
    try:
        with f:
            for lineno, raw in enumerate(f, 1):
                line = _decode(raw, stats).strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                if text_field not in obj:
                    fields = ", ".join(list(obj)[:8]) or "(none)"
                    raise DataError(f"{path}:{lineno}: no field '{text_field}' (data.text_field); fields present: {fields}")
                text = obj[text_field]
                if text is None:
                    stats["empty_documents"] += 1
                    continue
                if not isinstance(text, str):
                    raise DataError(f"{path}:{lineno}: field '{text_field}' must be a string, got {type(text).__name__}")
                meta = {k: v for k, v in obj.items() if k not in (text_field, "id") and isinstance(v, (str, int, float, bool))}
                yield Document(id=str(obj.get("id", f"{path.name}:{lineno}")), text=text, meta=meta)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip after line {lineno} ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: read error after line {lineno} ({e})") from None


def _read_txt(path: Path, mode: str, stats: Counter) -> Iterator[Document]:
    f = _open_binary(path)
    with f:
        text = _decode(f.read(), stats)
    if mode == "lines":
        parts = [line for line in text.splitlines() if line.strip()]
    else:
        parts, block = [], []
        for line in text.splitlines():
            if line.strip():
                block.append(line)
            elif block:
                parts.append("\n".join(block))
                block = []
        if block:
            parts.append("\n".join(block))
    for i, part in enumerate(parts, 1):
        yield Document(id=f"{path.name}:{i}", text=part)


def _files_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _kind(p) is not None)
    if not files:
        raise DataError(f"{folder}: folder has no .txt, .jsonl or .jsonl.gz files (data.source)")
    return files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".txt", ".txt.gz")):
        return "txt"
    return None


def read_documents(
    source: str,
    text_field: str = "text",
    txt_mode: str = "blocks",
    stats: Counter | None = None,
) -> Iterator[Document]:
    """Yield the documents of `source` in file order. `stats` collects counts (utf8_errors …)."""
    stats = stats if stats is not None else Counter()
    path = resolve_source(source)
    files = _files_in(path) if path.is_dir() else [path]
    for p in files:
        kind = _kind(p)
        if kind == "jsonl":
            yield from _read_jsonl(p, text_field, stats)
        elif kind == "txt":
            yield from _read_txt(p, txt_mode, stats)
        else:
            raise DataError(f"{p}: unsupported file type; expected .jsonl, .jsonl.gz or .txt (data.source)")
