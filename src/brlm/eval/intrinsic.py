"""Intrinsic evaluation on a fixed set of validation windows.

Loss is in nats per token; perplexity is exp(loss); accuracy is next-token argmax accuracy.
Bits per byte (as nanochat's loss_eval.py): sum the negative log-likelihood, in nats, of every
target token that stands for text, and divide by ln(2) times the UTF-8 bytes of those targets.
Special tokens (end-of-text) count zero bytes and are left out of that sum. Unlike perplexity,
bits per byte compares models with different tokenizers. Bits per character does the same with
Unicode characters (a byte-fallback piece counts 1 character when it holds a UTF-8 lead byte and
0 for a continuation byte, so a text's pieces add up to its character count).

The window set is fixed: `select_windows` spreads N windows evenly over the validation shard and
stores the indices under a key of (shard hash, block, stride, N), so every model scored on the
same data is scored on the same windows; the stored set's sha256 goes into eval.json. With
`doc_groups`, each target token is attributed to its document (documents end at the EOS id in
the shard, in val.jsonl order) and figures are also reported per document category.

    brlm eval intrinsic runs/demo
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.data.loader import Windows, fixed_indices
from brlm.io.files import atomic_path, read_json, write_json


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / (math.log(2) * n_bytes) if n_bytes else float("nan")


def indices_hash(indices: np.ndarray, extra: str = "") -> str:
    return hashlib.sha256(extra.encode() + np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def select_windows(n_windows: int, max_windows: int, shard_hash: str, block: int, stride: int, store: str | Path) -> tuple[np.ndarray, str]:
    """The fixed evaluation windows for this shard/block/stride/N, read from `store` when already
    chosen there, else chosen (evenly spread) and stored. Returns (indices, their sha256)."""
    key = hashlib.sha256(f"{shard_hash}:{block}:{stride}:{max_windows}".encode()).hexdigest()[:24]
    store = Path(store)
    npy, meta = store / f"windows_{key}.npy", store / f"windows_{key}.json"
    if npy.is_file() and meta.is_file():
        idx = np.load(npy)
        sha = indices_hash(idx, f"{shard_hash}:{block}:{stride}")
        if sha == read_json(meta).get("sha256"):
            return idx, sha
    idx = fixed_indices(n_windows, max_windows)
    sha = indices_hash(idx, f"{shard_hash}:{block}:{stride}")
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, idx)
    write_json(meta, {"shard_key": shard_hash, "block_size": block, "stride": stride, "max_windows": max_windows,
                      "n_windows": int(len(idx)), "sha256": sha})
    return idx, sha


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_chars(tok: Any) -> np.ndarray:
    """Unicode characters per id (0 for specials; byte pieces 1 for a UTF-8 lead byte, else 0)."""
    tb = tok.token_bytes()
    out = np.zeros(len(tb), dtype=np.int64)
    for i in range(len(tb)):
        if tb[i] == 0:
            continue
        piece = tok.piece(i)
        m = _BYTE_PIECE.match(piece)
        if m:
            out[i] = 0 if 0x80 <= int(m.group(1), 16) < 0xC0 else 1
        else:
            out[i] = len(piece.replace("\u2581", " "))
    return out


CATEGORY_FIELDS = ("category", "domain", "categoria", "dominio", "domínio")


def doc_groups(tokens: np.ndarray, eos_id: int, doc_categories: list[str]) -> tuple[np.ndarray, list[str]]:
    """Category id of every position of a shard (documents end at eos_id, in the given order)."""
    names = sorted(set(doc_categories))
    lookup = {n: i for i, n in enumerate(names)}
    cat_of_doc = np.array([lookup[c] for c in doc_categories] + [len(names)], dtype=np.int32)  # trailing text: 'other'
    ends = np.asarray(tokens) == eos_id
    doc = np.concatenate([[0], np.cumsum(ends)[:-1]])  # the EOS belongs to the document it ends
    doc = np.minimum(doc, len(doc_categories))
    groups = cat_of_doc[doc]
    if (groups == len(names)).any():
        names.append("(sem categoria)")
    return groups, names


def read_doc_categories(jsonl: str | Path, field: str = "auto") -> list[str] | None:
    """The category of each document of a split's JSONL, or None when the data has none."""
    path = Path(jsonl)
    if not field or not path.is_file():
        return None
    out, key = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if key is None:
                key = next((k for k in CATEGORY_FIELDS if k in row), None) if field == "auto" else field
                if key is None:
                    return None
            value = row.get(key)
            out.append("(sem categoria)" if value in (None, "") else str(value))
    return out if out and len(set(out)) >= 1 else None


def _summary(nats: float, n_tokens: int, n_correct: int, nats_text: float | None, n_bytes: int | None, n_chars: int | None) -> dict[str, Any]:
    loss = nats / max(n_tokens, 1)
    out: dict[str, Any] = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": n_correct / max(n_tokens, 1),
        "tokens": int(n_tokens),
    }
    if n_bytes is not None:
        out["bytes"] = int(n_bytes)
        out["bits_per_byte"] = bits_per_byte(nats_text or 0.0, n_bytes)
    if n_chars is not None:
        out["chars"] = int(n_chars)
        out["bits_per_char"] = (nats_text or 0.0) / (math.log(2) * n_chars) if n_chars else float("nan")
    return out


@torch.no_grad()
def evaluate_windows(
    model: nn.Module,
    windows: Windows,
    indices: np.ndarray,
    token_bytes: np.ndarray | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    token_chars: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    group_names: list[str] | None = None,
) -> dict[str, Any]:
    """Figures over the windows `indices`; with `groups` (a group id per shard position, e.g. from
    doc_groups) also per group under "categories". Works for any model with `logits, _ = model(x)`."""
    was_training = model.training
    model.eval()
    tb = torch.as_tensor(token_bytes, dtype=torch.int64, device=device) if token_bytes is not None else None
    tc = torch.as_tensor(token_chars, dtype=torch.int64, device=device) if token_chars is not None else None
    G = len(group_names) if groups is not None and group_names else 0
    # per group: nats, tokens, correct, text nats, bytes, chars
    acc = torch.zeros(max(G, 1), 6, dtype=torch.float64)
    t0 = time.perf_counter()
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x, y = windows.batch(chunk, device)
        logits, _ = model(x)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none")  # (B*T,)
        correct = (logits.argmax(-1) == y).reshape(-1).double()
        yf = y.reshape(-1)
        b = tb[yf] if tb is not None else torch.zeros_like(yf)
        c = tc[yf] if tc is not None else torch.zeros_like(yf)
        text = (b > 0).double()
        cols = torch.stack([nll.double(), torch.ones_like(nll, dtype=torch.float64), correct, nll.double() * text,
                            b.double(), c.double()], dim=1).cpu()  # (B*T, 6)
        if G:
            T = y.size(1)
            pos = (np.asarray(chunk, dtype=np.int64)[:, None] * windows.stride + 1 + np.arange(T)[None, :]).reshape(-1)
            g = torch.from_numpy(np.asarray(groups[pos], dtype=np.int64))
            acc.index_add_(0, g, cols)
        else:
            acc[0] += cols.sum(0)
    seconds = time.perf_counter() - t0
    if was_training:
        model.train()
    total = acc.sum(0).tolist()

    def pack(v: list[float]) -> dict[str, Any]:
        return _summary(v[0], int(v[1]), int(v[2]), v[3] if tb is not None else None,
                        int(v[4]) if tb is not None else None, int(v[5]) if tc is not None else None)

    out = pack(total)
    out["windows"] = int(len(indices))
    out["seconds"] = seconds
    out["tokens_per_s"] = out["tokens"] / seconds if seconds > 0 else None
    if G:
        out["categories"] = {name: pack(acc[i].tolist()) for i, name in enumerate(group_names) if acc[i, 1] > 0}
    return out
