"""Tokenized data as flat binary shards: one uint16 (vocab <= 65,536) or uint32 array per split,
each document followed by the end-of-text id, plus a JSON header. Read back memory-mapped, so
memory stays O(window) however large the corpus is.

    runs/<name>/shards/{train.bin, train.json, val.bin, val.json, manifest.json}
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brlm.errors import DataError
from brlm.runs.artifacts import (
    atomic_path,
    is_fresh,
    read_json,
    read_manifest,
    stage_key,
    write_json,
    write_manifest,
)
from brlm.runs.logging import progress

STAGE_VERSION = 1


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_shard(texts: Iterable[str], tokenizer: Any, path: str | Path, desc: str = "tokenizing", batch_docs: int = 256) -> dict[str, Any]:
    """Tokenize `texts` into `path` (+ header `path.json`); returns the header."""
    path = Path(path)
    dtype = dtype_for(tokenizer.vocab_size)
    eos = tokenizer.eos_id
    n_tokens = n_docs = n_bytes = 0
    it = iter(texts)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        bar = progress(iter(lambda: list(itertools.islice(it, batch_docs)), []), desc=desc, unit=f"x{batch_docs}doc")
        for batch in bar:
            encode = getattr(tokenizer, "encode_batch", None)
            encoded = encode(batch) if encode else [tokenizer.encode(t) for t in batch]
            for text, ids in zip(batch, encoded):
                arr = np.asarray(ids + [eos], dtype=dtype)
                f.write(arr.tobytes())
                n_tokens += arr.size
                n_docs += 1
                n_bytes += len(text.encode("utf-8"))
    header = {"dtype": dtype.name, "n_tokens": n_tokens, "n_docs": n_docs, "n_bytes": n_bytes, "eos_id": eos}
    write_json(path.with_suffix(".json"), header)
    return header


def open_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard written by write_shard (no copy, no full read)."""
    path = Path(path)
    header_path = path.with_suffix(".json")
    if not path.is_file() or not header_path.is_file():
        raise DataError(f"{path}: shard or its header {header_path.name} is missing; run `brlm train` (it builds shards)")
    header = read_json(header_path)
    dtype = np.dtype(header["dtype"])
    expected = header["n_tokens"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise DataError(f"{path}: size {path.stat().st_size} bytes, header says {expected}; the shard is truncated or corrupt")
    if header["n_tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(header["n_tokens"],))


def build_shards(
    split_texts: dict[str, Iterable[str]], tokenizer: Any, out_dir: str | Path, data_key: str, tokenizer_sha: str, force: bool = False
) -> dict[str, Any]:
    """Tokenize every split into `out_dir` (skipped when data and tokenizer did not change)."""
    out_dir = Path(out_dir)
    key = stage_key(stage="shards", version=STAGE_VERSION, data=data_key, tokenizer=tokenizer_sha)
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}
    headers = {}
    for split, texts in split_texts.items():
        headers[split] = write_shard(texts, tokenizer, out_dir / f"{split}.bin", desc=f"shards: {split}")
    files = [f"{s}.{ext}" for s in split_texts for ext in ("bin", "json")]
    return write_manifest(out_dir, stage="shards", key=key, files=files, tokenizer_sha256=tokenizer_sha, splits=headers)
