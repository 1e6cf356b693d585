"""The data stage: source -> clean -> exact dedup -> train/val split, written as JSONL.

    brlm data prepare --preset demo --name meu-run
    -> runs/meu-run/data/{train.jsonl, val.jsonl, manifest.json}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from brlm.config import DataConfig
from brlm.data.clean import clean_text
from brlm.data.sources import read_documents, resolve_source
from brlm.data.splits import split_of
from brlm.errors import DataError
from brlm.runs.artifacts import atomic_path, file_sha256, is_fresh, read_manifest, stage_key, write_manifest
from brlm.runs.logging import progress

STAGE_VERSION = 1


def source_hash(source: str) -> str:
    path = resolve_source(source)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\x00{file_sha256(p)}\n".encode())
    return h.hexdigest()


def prepare_data(cfg: DataConfig, out_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Write train.jsonl / val.jsonl / manifest.json into `out_dir` (skipped when up to date)."""
    out_dir = Path(out_dir)
    key = stage_key(stage="data", version=STAGE_VERSION, config=dataclasses.asdict(cfg), source=source_hash(cfg.source))
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}

    stats: Counter = Counter()
    seen: set[str] = set()
    counts = {"train": Counter(), "val": Counter()}
    with atomic_path(out_dir / "train.jsonl") as tmp_train, atomic_path(out_dir / "val.jsonl") as tmp_val:
        with open(tmp_train, "w", encoding="utf-8") as ftrain, open(tmp_val, "w", encoding="utf-8") as fval:
            out = {"train": ftrain, "val": fval}
            docs = read_documents(cfg.source, cfg.text_field, cfg.txt_mode, stats)
            for doc in progress(docs, desc="data: cleaning", unit="doc"):
                if cfg.max_docs and stats["docs_in"] >= cfg.max_docs:
                    break
                stats["docs_in"] += 1
                stats["chars_in"] += len(doc.text)
                text = clean_text(doc.text, nfkc=cfg.nfkc)
                if len(text) < cfg.min_doc_chars:
                    stats["dropped_short"] += 1
                    continue
                digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
                if cfg.dedup and digest in seen:
                    stats["dropped_duplicate"] += 1
                    continue
                seen.add(digest)
                split = split_of(text, cfg.val_fraction, cfg.split_salt)
                counts[split]["docs"] += 1
                counts[split]["chars"] += len(text)
                counts[split]["bytes"] += len(text.encode("utf-8"))
                out[split].write(json.dumps({"id": doc.id, "text": text, **doc.meta}, ensure_ascii=False) + "\n")

        kept = counts["train"]["docs"] + counts["val"]["docs"]
        if kept == 0:
            raise DataError(
                f"{cfg.source}: empty corpus after cleaning: 0 of {stats['docs_in']} documents kept "
                f"(data.min_doc_chars={cfg.min_doc_chars}, {stats['dropped_short']} too short)"
            )
        for split in ("train", "val"):
            if counts[split]["docs"] == 0:
                raise DataError(
                    f"{cfg.source}: the {split} split is empty ({kept} documents kept, data.val_fraction="
                    f"{cfg.val_fraction}); add documents or change data.val_fraction"
                )

    return write_manifest(
        out_dir,
        stage="data",
        key=key,
        files=["train.jsonl", "val.jsonl"],
        source=cfg.source,
        counts={
            "docs_in": stats["docs_in"],
            "chars_in": stats["chars_in"],
            "utf8_errors": stats["utf8_errors"],
            "empty_documents": stats["empty_documents"],
            "dropped_short": stats["dropped_short"],
            "dropped_duplicate": stats["dropped_duplicate"],
            "train": dict(counts["train"]),
            "val": dict(counts["val"]),
        },
        hashes={name: file_sha256(out_dir / name) for name in ("train.jsonl", "val.jsonl")},
    )


def iter_split_texts(data_dir: str | Path, split: str):
    """Yield the cleaned texts of one split written by prepare_data."""
    path = Path(data_dir) / f"{split}.jsonl"
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]
