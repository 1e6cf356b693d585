"""The data stage: source -> clean (per-rule counts) -> exact / near dedup -> exclude list ->
train/val/test split by content hash, written as JSONL with a manifest.

    brlm data prepare --source noticias.jsonl.gz --clean natural --run runs/meu
    -> runs/meu/data/{train.jsonl, val.jsonl[, test.jsonl], manifest.json}

The manifest records every cleaning rule with its document/character counts in and out, the
cleaning config (text and hash; the tokenizer checks it), dedup counts and the split sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from brlm.config import CleanConfig, DataConfig
from brlm.data.clean import Cleaner, NearDedup, cleaning_hash, cleaning_spec, dedup_key
from brlm.data.sources import read_documents, resolve_source
from brlm.data.splits import split_of
from brlm.errors import DataError
from brlm.io.files import atomic_path, file_sha256, is_fresh, read_manifest, stage_key, write_manifest
from brlm.io.logging import progress

STAGE_VERSION = 2


def source_hash(source: str) -> str:
    if source.startswith("hf:"):
        local = Path(source[3:]).expanduser()
        # A hub dataset is named, not hashed (streaming never holds all of it).
        return source_hash(str(local)) if local.exists() else hashlib.sha256(source.encode()).hexdigest()
    path = resolve_source(source)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\x00{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _exclude_files(cfg: DataConfig) -> list[str]:
    return [x.strip() for x in cfg.exclude.split(",") if x.strip()]


def _excluded_keys(cfg: DataConfig, clean: CleanConfig) -> set[str]:
    """Dedup keys of every document in the exclude files, raw and cleaned the same way as the
    corpus, so a document is caught whether the exclude file holds it before or after cleaning."""
    keys: set[str] = set()
    cleaner = Cleaner(dataclasses.replace(cfg, min_doc_chars=1), clean)
    for path in _exclude_files(cfg):
        for doc in read_documents(path, cfg.text_field, cfg.txt_mode, Counter(), cfg.id_field):
            keys.add(dedup_key(doc.text))
            cleaned = cleaner(doc.text)
            if cleaned:
                keys.add(dedup_key(cleaned))
    return keys


def prepare_data(cfg: DataConfig, out_dir: str | Path, force: bool = False, clean: CleanConfig | None = None) -> dict[str, Any]:
    """Write train/val[/test].jsonl and manifest.json into `out_dir` (skipped when up to date)."""
    clean = clean or CleanConfig()
    out_dir = Path(out_dir)
    spec = cleaning_spec(cfg, clean)
    excl = {p: source_hash(p) for p in _exclude_files(cfg)}
    key = stage_key(stage="data", version=STAGE_VERSION, config=dataclasses.asdict(cfg), clean=dataclasses.asdict(clean),
                    source=source_hash(cfg.source), exclude=excl)
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}

    splits = ["train", "val"] + (["test"] if cfg.test_fraction > 0 else [])
    stats: Counter = Counter()
    seen: set[str] = set()
    excluded = _excluded_keys(cfg, clean)
    near = NearDedup(clean.near_dedup_threshold, clean.near_dedup_num_perm) if clean.near_dedup else None
    cleaner = Cleaner(cfg, clean)
    counts = {s: Counter() for s in splits}
    tmps = {}
    with contextlib.ExitStack() as stack:
        for s in splits:
            tmps[s] = stack.enter_context(atomic_path(out_dir / f"{s}.jsonl"))
        out = {s: stack.enter_context(open(tmps[s], "w", encoding="utf-8")) for s in splits}
        docs = read_documents(cfg.source, cfg.text_field, cfg.txt_mode, stats, cfg.id_field, cfg.hf_split, cfg.hf_config, cfg.cache_dir)
        for doc in progress(docs, desc="data: cleaning", unit="doc"):
            if cfg.max_docs and stats["docs_in"] >= cfg.max_docs:
                break
            stats["docs_in"] += 1
            stats["chars_in"] += len(doc.text)
            text = cleaner(doc.text)
            if text is None:
                stats["dropped_short"] += 1
                continue
            digest = dedup_key(text)
            if excluded and (digest in excluded or dedup_key(doc.text) in excluded):
                stats["dropped_excluded"] += 1
                continue
            if cfg.dedup and digest in seen:
                stats["dropped_duplicate"] += 1
                continue
            seen.add(digest)
            if near is not None and near.seen(text):
                stats["dropped_near_duplicate"] += 1
                continue
            split = split_of(text, cfg.val_fraction, cfg.split_salt, cfg.test_fraction)
            counts[split]["docs"] += 1
            counts[split]["chars"] += len(text)
            counts[split]["bytes"] += len(text.encode("utf-8"))
            out[split].write(json.dumps({"id": doc.id, "text": text, **doc.meta}, ensure_ascii=False) + "\n")
        for f in out.values():
            f.close()

        kept = sum(counts[s]["docs"] for s in splits)
        if kept == 0:
            raise DataError(
                f"{cfg.source}: empty corpus after cleaning: 0 of {stats['docs_in']} documents kept "
                f"(data.min_doc_chars={cfg.min_doc_chars}, {stats['dropped_short']} too short or emptied by a rule)"
            )
        for s in splits:
            if counts[s]["docs"] == 0:
                frac = {"train": "data.val_fraction/data.test_fraction", "val": "data.val_fraction", "test": "data.test_fraction"}[s]
                raise DataError(
                    f"{cfg.source}: the {s} split is empty ({kept} documents kept, {frac}="
                    f"{cfg.val_fraction if s != 'test' else cfg.test_fraction}); add documents or change {frac}"
                )

    files = [f"{s}.jsonl" for s in splits]
    if cfg.test_fraction == 0 and (out_dir / "test.jsonl").exists():
        (out_dir / "test.jsonl").unlink()  # a stale test split from an earlier config must not look current
    return write_manifest(
        out_dir,
        stage="data",
        key=key,
        files=files,
        source=cfg.source,
        cleaning={"hash": cleaning_hash(spec), "config": spec},
        rules=cleaner.report(),
        exclude=excl,
        counts={
            "docs_in": stats["docs_in"],
            "chars_in": stats["chars_in"],
            "utf8_errors": stats["utf8_errors"],
            "empty_documents": stats["empty_documents"],
            "dropped_short": stats["dropped_short"],
            "dropped_duplicate": stats["dropped_duplicate"],
            "dropped_near_duplicate": stats["dropped_near_duplicate"],
            "dropped_excluded": stats["dropped_excluded"],
            **{s: dict(counts[s]) for s in splits},
        },
        hashes={name: file_sha256(out_dir / name) for name in files},
    )


def iter_split_texts(data_dir: str | Path, split: str):
    """Yield the cleaned texts of one split written by prepare_data."""
    path = Path(data_dir) / f"{split}.jsonl"
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]
