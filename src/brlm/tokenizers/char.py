"""Character-level tokenizer (the seeds' v1-v3): one id per character seen at least
`tokenizer.min_frequency` times in the train split; rarer and unseen characters become <unk>.

Ids: the four specials at tokenizer.unk_id/bos_id/eos_id/pad_id (pad optional), then the
user-defined symbols (matched whole, before single characters), then characters by falling
frequency (ties in code-point order, so the same text always gives the same vocabulary).

    brlm tokenizer train --run runs/meu --set tokenizer.kind=char --set tokenizer.min_frequency=5
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brlm.config import TokenizerConfig
from brlm.errors import BrlmError, ConfigError
from brlm.io.files import (
    file_sha256,
    is_fresh,
    read_json,
    read_manifest,
    stage_key,
    write_json,
    write_manifest,
)

STAGE_VERSION = 1
_SPECIALS = (("unk_id", "<unk>"), ("bos_id", "<s>"), ("eos_id", "</s>"), ("pad_id", "<pad>"))


class CharTokenizer:
    def __init__(self, vocab_file: str | Path):
        self.vocab_file = Path(vocab_file)
        if not self.vocab_file.is_file():
            raise BrlmError(f"{self.vocab_file}: char vocabulary not found")
        meta = read_json(self.vocab_file)
        self.pieces: list[str] = meta["pieces"]
        self.unk_id, self.bos_id, self.eos_id = meta["unk_id"], meta["bos_id"], meta["eos_id"]
        self.pad_id = meta.get("pad_id", -1)
        self.special = set(meta["special_ids"])
        self.symbols: list[str] = meta.get("symbols", [])
        self.vocab_size = len(self.pieces)
        self._index = {p: i for i, p in enumerate(self.pieces) if i not in self.special}
        self._sym = re.compile("|".join(re.escape(s) for s in sorted(self.symbols, key=len, reverse=True))) if self.symbols else None

    def __getstate__(self) -> dict[str, Any]:
        return {"vocab_file": str(self.vocab_file)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["vocab_file"])

    def encode(self, text: str) -> list[int]:
        get, unk = self._index.get, self.unk_id
        if self._sym is None:
            return [get(ch, unk) for ch in text]
        out: list[int] = []
        pos = 0
        for m in self._sym.finditer(text):
            out += [get(ch, unk) for ch in text[pos : m.start()]]
            out.append(self._index[m.group(0)])
            pos = m.end()
        return out + [get(ch, unk) for ch in text[pos:]]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join("\ufffd" if int(i) == self.unk_id else ("" if int(i) in self.special else self.pieces[int(i)]) for i in ids)

    def piece(self, token_id: int) -> str:
        return self.pieces[int(token_id)]

    def is_byte(self, token_id: int) -> bool:
        return False

    def token_bytes(self) -> np.ndarray:
        return np.array([0 if i in self.special else len(p.encode("utf-8")) for i, p in enumerate(self.pieces)], dtype=np.int64)


def train_char(texts: Iterable[str], cfg: TokenizerConfig, out_dir: str | Path, data_key: str, force: bool = False,
               cleaning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Count characters of `texts`; keep those with count >= min_frequency, at most vocab_size ids."""
    out_dir = Path(out_dir)
    key = stage_key(stage="tokenizer", version=STAGE_VERSION, config=dataclasses.asdict(cfg), data=data_key)
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}
    from brlm.tokenizers.spm import user_symbols

    symbols = user_symbols(cfg)
    sym = re.compile("|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True))) if symbols else None
    counts: Counter = Counter()
    n_docs = 0
    for text in texts:
        n_docs += 1
        counts.update(sym.sub("", text) if sym else text)
    if n_docs == 0:
        raise BrlmError(f"{out_dir}: no text to train the tokenizer on (empty training split)")
    specials = {name: getattr(cfg, name) for name, _ in _SPECIALS if getattr(cfg, name) >= 0}
    n_fixed = 1 + max(specials.values())
    pieces: list[str] = [""] * n_fixed
    for name, tok in _SPECIALS:
        if name in specials:
            pieces[specials[name]] = tok
    for i in range(n_fixed):
        pieces[i] = pieces[i] or f"<reserved{i}>"
    pieces += symbols
    kept = sorted((c for c, n in counts.items() if n >= cfg.min_frequency), key=lambda c: (-counts[c], c))
    room = cfg.vocab_size - len(pieces)
    if room < 1:
        raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size}: too small for {len(pieces)} special pieces and symbols")
    dropped = kept[room:]
    pieces += kept[:room]
    write_json(
        out_dir / "vocab.json",
        {
            "pieces": pieces, "special_ids": list(range(n_fixed)), "symbols": symbols,
            "unk_id": cfg.unk_id, "bos_id": cfg.bos_id, "eos_id": cfg.eos_id, "pad_id": cfg.pad_id,
        },
    )
    rare = sum(n for c, n in counts.items() if n < cfg.min_frequency) + sum(counts[c] for c in dropped)
    sha = file_sha256(out_dir / "vocab.json")
    write_json(
        out_dir / "tokenizer.json",
        {
            "kind": "char", "model_file": "vocab.json", "sha256": sha, "vocab_size": len(pieces),
            "bos_id": cfg.bos_id, "eos_id": cfg.eos_id, "config": dataclasses.asdict(cfg), "trained_on": data_key,
            "training_docs": n_docs, "chars_seen": len(counts), "chars_as_unk": int(rare), "cleaning": cleaning,
        },
    )
    return write_manifest(out_dir, stage="tokenizer", key=key, files=["vocab.json", "tokenizer.json"], sha256=sha, vocab_size=len(pieces))
