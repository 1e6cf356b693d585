"""Read documents from the built-in demo corpus, JSONL / JSONL.gz files, CSV files, .txt files,
folders of these, or Hugging Face datasets (`hf:NAME`, streamed; needs `pip install 'brlm[hf]'`).

Bytes that are not valid UTF-8 are replaced (U+FFFD) and counted in `stats["utf8_errors"]`
rather than crashing a long read; every other problem is a DataError naming file and line.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from brlm.errors import DataError
from brlm.io.files import parse_json_object
from brlm.io.machine import cache_dir as machine_cache_dir

BUILTIN = {
    "builtin:demo": "demo_corpus.jsonl",
}


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_source(source: str) -> Path:
    if source.startswith("hf:"):
        raise DataError(f"data.source={source!r}: a Hugging Face dataset has no local path")
    if source.startswith("builtin:"):
        if source not in BUILTIN:
            raise DataError(f"data.source={source!r}: unknown built-in corpus; available: {', '.join(BUILTIN)}")
        return Path(str(resources.files("brlm") / "resources" / BUILTIN[source]))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found (data.source); expected a .jsonl, .jsonl.gz, .csv or .txt file, a folder or hf:NAME")
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


def _read_jsonl(path: Path, text_field: str, stats: Counter, id_field: str = "id") -> Iterator[Document]:
    f = _open_binary(path)
    lineno = 0
    try:
        with f:
            for lineno, raw in enumerate(f, 1):
                line = _decode(raw, stats).strip()
                if not line:
                    continue
                obj = parse_json_object(line, path, lineno)
                if text_field not in obj:
                    fields = ", ".join(list(obj)[:8]) or "(none)"
                    raise DataError(f"{path}:{lineno}: no field '{text_field}' (data.text_field); fields present: {fields}")
                text = obj[text_field]
                if text is None:
                    stats["empty_documents"] += 1
                    continue
                if not isinstance(text, str):
                    raise DataError(f"{path}:{lineno}: field '{text_field}' must be a string, got {type(text).__name__}")
                if not text.strip():
                    stats["empty_documents"] += 1
                    continue
                meta = {k: v for k, v in obj.items() if k not in (text_field, id_field) and isinstance(v, (str, int, float, bool))}
                yield Document(id=str(obj.get(id_field, f"{path.name}:{lineno}")), text=text, meta=meta)
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


def _read_csv(path: Path, text_field: str, stats: Counter, id_field: str = "id") -> Iterator[Document]:
    f = _open_binary(path)
    lineno = 0
    try:
        with f:
            # Decode line by line so a bad byte is replaced and counted like in JSONL files.
            lines = (_decode(raw, stats) for raw in f)
            reader = csv.DictReader(lines)
            if reader.fieldnames is None:
                return
            if text_field not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames[:8])
                raise DataError(f"{path}:1: no column '{text_field}' (data.text_field / --text-field); columns: {cols}")
            for lineno, row in enumerate(reader, 2):
                text = row.get(text_field)
                if not text or not text.strip():
                    stats["empty_documents"] += 1
                    continue
                meta = {k: v for k, v in row.items() if k not in (text_field, id_field) and k is not None and v}
                yield Document(id=str(row.get(id_field) or f"{path.name}:{lineno}"), text=text, meta=meta)
    except csv.Error as e:
        raise DataError(f"{path}:{lineno}: not valid CSV ({e})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip after row {lineno} ({e})") from None


def _hf_offline_error(name: str, e: BaseException) -> DataError:
    first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:160]
    return DataError(
        f"hf:{name}: cannot reach the Hugging Face hub ({first}); download the dataset elsewhere and pass the "
        f"local copy instead: --source path/to/file.jsonl (or a folder), or hf:/local/folder"
    )


def read_hf(name: str, text_field: str, stats: Counter, split: str = "train", config: str = "",
            cache_dir: str = "", id_field: str = "id") -> Iterator[Document]:
    """Stream a Hugging Face dataset (`hf:nlpufg/brwac`) or a local folder/file through `datasets`
    (`hf:/path/data.jsonl`), without downloading it whole."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"data.source=hf:{name} needs the datasets package: pip install 'brlm[hf]'") from None
    local = Path(name).expanduser()
    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if cache_dir:
        kwargs["cache_dir"] = str(Path(cache_dir).expanduser())
    try:
        if local.exists():
            files = _files_in(local) if local.is_dir() else [local]
            kinds = {_kind(p) for p in files}
            builder = {"jsonl": "json", "csv": "csv", "txt": "text"}.get(kinds.pop() if len(kinds) == 1 else "", None)
            if builder is None:
                raise DataError(f"hf:{name}: expected files of one kind (.jsonl, .csv or .txt)")
            ds = datasets.load_dataset(builder, data_files=[str(p) for p in files], **kwargs)
        else:
            ds = datasets.load_dataset(name, config or None, **kwargs)
        n = 0
        for n, row in enumerate(ds, 1):
            if text_field not in row:
                raise DataError(f"hf:{name}: row {n} has no field '{text_field}' (data.text_field); fields: {', '.join(list(row)[:8])}")
            text = row[text_field]
            if not isinstance(text, str) or not text.strip():
                stats["empty_documents"] += 1
                continue
            meta = {k: v for k, v in row.items() if k not in (text_field, id_field) and isinstance(v, (str, int, float, bool))}
            yield Document(id=str(row.get(id_field) or f"{name}:{n}"), text=text, meta=meta)
    except DataError:
        raise
    except (ConnectionError, TimeoutError, OSError) as e:
        raise _hf_offline_error(name, e) from None
    except Exception as e:  # datasets wraps hub failures in its own classes, which vary by version
        text = f"{e.__class__.__name__} {e}"
        if any(w in text for w in ("Connection", "offline", "Offline", "resolve", "HfHub", "404", "Repository")):
            raise _hf_offline_error(name, e) from None
        raise DataError(f"hf:{name}: cannot read the dataset ({e.__class__.__name__}: {str(e)[:200]})") from None


def _files_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _kind(p) is not None)
    if not files:
        raise DataError(f"{folder}: folder has no .txt, .csv, .jsonl or .jsonl.gz files (data.source)")
    return files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".txt", ".txt.gz")):
        return "txt"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    return None


def read_documents(
    source: str,
    text_field: str = "text",
    txt_mode: str = "blocks",
    stats: Counter | None = None,
    id_field: str = "id",
    hf_split: str = "train",
    hf_config: str = "",
    cache_dir: str = "",
) -> Iterator[Document]:
    """Yield the documents of `source` in file order. `stats` collects counts (utf8_errors …)."""
    stats = stats if stats is not None else Counter()
    if source.startswith("hf:"):
        yield from read_hf(source[3:], text_field, stats, hf_split, hf_config, cache_dir or str(machine_cache_dir() / "hf"), id_field)
        return
    path = resolve_source(source)
    files = _files_in(path) if path.is_dir() else [path]
    for p in files:
        kind = _kind(p)
        if kind == "jsonl":
            yield from _read_jsonl(p, text_field, stats, id_field)
        elif kind == "csv":
            yield from _read_csv(p, text_field, stats, id_field)
        elif kind == "txt":
            yield from _read_txt(p, txt_mode, stats)
        else:
            raise DataError(f"{p}: unsupported file type; expected .jsonl, .jsonl.gz, .csv or .txt (data.source)")
