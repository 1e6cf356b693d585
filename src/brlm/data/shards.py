"""Tokenized data as flat binary shards: one uint16 (vocab <= 65,536) or uint32 array per split,
each document followed by the end-of-text id, a JSON header and a document index (`.idx.npy`:
the start offset of every document, uint64). Read back memory-mapped, so memory stays O(window)
however large the corpus is. With `workers > 1` documents are tokenized in worker processes
(batches in order, so the shard is byte-identical to a single-process one).

    runs/<name>/shards/{train.bin, train.json, train.idx.npy, val.*, [test.*], manifest.json}
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brlm.errors import DataError
from brlm.io.files import (
    atomic_path,
    is_fresh,
    read_json,
    read_manifest,
    stage_key,
    write_json,
    write_manifest,
)
from brlm.io.logging import progress

STAGE_VERSION = 2


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


_WORKER_TOK: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOK
    _WORKER_TOK = tokenizer
    if hasattr(tokenizer, "num_threads"):
        tokenizer.num_threads = 1  # the processes are the parallelism; more threads would oversubscribe the cores


def _encode_batch(tokenizer: Any, batch: list[str], dtype: np.dtype) -> tuple[bytes, list[int], int]:
    """One batch -> (token bytes with an eos after each document, document lengths, UTF-8 bytes)."""
    encode = getattr(tokenizer, "encode_batch", None)
    encoded = encode(batch) if encode else [tokenizer.encode(t) for t in batch]
    eos = tokenizer.eos_id
    parts = []
    for ids in encoded:
        parts += [np.asarray(ids, dtype=dtype), np.asarray([eos], dtype=dtype)]
    arr = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return arr.tobytes(), [len(ids) + 1 for ids in encoded], sum(len(t.encode("utf-8")) for t in batch)


def _encode_in_worker(args: tuple[list[str], str]) -> tuple[bytes, list[int], int]:
    batch, dtype = args
    return _encode_batch(_WORKER_TOK, batch, np.dtype(dtype))


def resolve_workers(workers: int) -> int:
    return max(1, os.cpu_count() or 1) if workers == 0 else workers


def write_shard(texts: Iterable[str], tokenizer: Any, path: str | Path, desc: str = "tokenizing", batch_docs: int = 256,
                workers: int = 1) -> dict[str, Any]:
    """Tokenize `texts` into `path` (+ header `path.json`, document index `.idx.npy`); returns the header."""
    path = Path(path)
    dtype = dtype_for(tokenizer.vocab_size)
    eos = tokenizer.eos_id
    n_tokens = n_docs = n_bytes = 0
    starts: list[int] = []
    it = iter(texts)
    batches = iter(lambda: list(itertools.islice(it, batch_docs)), [])
    workers = resolve_workers(workers)
    pool = None
    if workers > 1:
        # fork: workers inherit the loaded tokenizer; order kept by imap so output is deterministic.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,))
        results = pool.imap(_encode_in_worker, ((b, dtype.name) for b in batches), chunksize=1)
    else:
        results = (_encode_batch(tokenizer, b, dtype) for b in batches)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            for raw, lengths, nb in progress(results, desc=desc, unit=f"x{batch_docs}doc"):
                f.write(raw)
                for n in lengths:
                    starts.append(n_tokens)
                    n_tokens += n
                n_docs += len(lengths)
                n_bytes += nb
    finally:
        if pool is not None:
            pool.terminate()
    with atomic_path(path.with_suffix(".idx.npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(starts, dtype=np.uint64))
    header = {"dtype": dtype.name, "n_tokens": n_tokens, "n_docs": n_docs, "n_bytes": n_bytes, "eos_id": eos, "index": path.stem + ".idx.npy"}
    write_json(path.with_suffix(".json"), header)
    return header


def open_index(path: str | Path) -> np.ndarray:
    """Start offset of every document of a shard (memory-mapped)."""
    p = Path(path).with_suffix(".idx.npy")
    if not p.is_file():
        raise DataError(f"{p}: document index missing; rebuild the shards (`brlm train` or --force)")
    return np.load(p, mmap_mode="r")


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
    split_texts: dict[str, Iterable[str]], tokenizer: Any, out_dir: str | Path, data_key: str, tokenizer_sha: str, force: bool = False,
    workers: int = 1, alignment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize every split into `out_dir` (skipped when data and tokenizer did not change)."""
    out_dir = Path(out_dir)
    key = stage_key(stage="shards", version=STAGE_VERSION, data=data_key, tokenizer=tokenizer_sha, alignment=alignment)
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}
    headers = {}
    for split, texts in split_texts.items():
        headers[split] = write_shard(texts, tokenizer, out_dir / f"{split}.bin", desc=f"shards: {split}", workers=workers)
    files = [f"{s}.{ext}" for s in split_texts for ext in ("bin", "json", "idx.npy")]
    extra = {"alignment": alignment} if alignment is not None else {}
    return write_manifest(out_dir, stage="shards", key=key, files=files, tokenizer_sha256=tokenizer_sha, splits=headers, **extra)
