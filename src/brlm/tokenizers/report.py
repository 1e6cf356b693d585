"""Tokenizer quality on any text, for brlm's own tokenizers and foreign SentencePiece models.

Figures (all over the given texts):
* tokens_per_char, tokens_per_word (fertility; words = whitespace-separated strings);
* words_kept_whole: share of alphabetic word occurrences that " word" encodes as one piece;
* byte_fallback_ratio: share of tokens that are UTF-8 byte pieces;
* short_piece_ratio: share of tokens whose piece, as stored, is 1-2 characters, all letters (the
  seeds' definition: a word-start piece "▁a" is not all letters; their guardrail was 0.12);
* unk_rate: share of <unk> tokens;
* most_fragmented: frequent words split into the most pieces.

    brlm tokenizer report --run runs/meu                      # the run's validation split
    brlm tokenizer compare runs/meu ../shared/data/reference/tokenizers/v6_unigram_16k/spm.model --text val.jsonl
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brlm.errors import BrlmError

_ALPHA_WORD = re.compile(r"[^\W\d_]+")


def load_any(spec: str | Path) -> tuple[str, Any]:
    """(label, tokenizer) from a run folder, a tokenizer folder, or a SentencePiece .model file."""
    from brlm.tokenizers.base import load_tokenizer
    from brlm.tokenizers.spm import SentencePieceTokenizer

    p = Path(spec).expanduser()
    if p.is_file():
        label = p.parent.name if p.name == "spm.model" else p.stem
        return label, SentencePieceTokenizer(p)
    for folder in (p / "tokenizer", p):
        if (folder / "tokenizer.json").is_file():
            return (p.name if folder != p else p.name), load_tokenizer(folder)
        if (folder / "spm.model").is_file():
            return p.name, SentencePieceTokenizer(folder / "spm.model")
    raise BrlmError(f"{p}: no tokenizer here; expected a run folder, a tokenizer folder or a SentencePiece .model file")


def is_short_piece(piece: str, max_chars: int = 2) -> bool:
    """The seeds' short piece: 1..max_chars characters as stored, all letters ("▁a" is not)."""
    return 1 <= len(piece) <= max_chars and piece.isalpha()


def _piece_tables(tok: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    v = tok.vocab_size
    pieces = [tok.piece(i) for i in range(v)]
    is_byte = np.array([bool(tok.is_byte(i)) if hasattr(tok, "is_byte") else False for i in range(v)])
    is_short = np.array([is_short_piece(c) and not b for c, b in zip(pieces, is_byte)])
    is_unk = np.zeros(v, dtype=bool)
    unk = getattr(tok, "unk_id", 0)
    if unk is not None and 0 <= unk < v:
        is_unk[unk] = True
    return is_byte, is_short, is_unk, pieces


def tokenizer_stats(tok: Any, texts: Iterable[str], top: int = 15, frequent: int = 2000) -> dict[str, Any]:
    is_byte, is_short, is_unk, pieces = _piece_tables(tok)
    counts = np.zeros(tok.vocab_size, dtype=np.int64)
    n_chars = n_words = 0
    words: Counter = Counter()
    batch: list[str] = []

    def flush() -> None:
        enc = tok.encode_batch(batch) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in batch]
        for ids in enc:
            if ids:
                counts[:] += np.bincount(np.asarray(ids, dtype=np.int64), minlength=tok.vocab_size)
        batch.clear()

    for text in texts:
        n_chars += len(text)
        n_words += len(text.split())
        words.update(_ALPHA_WORD.findall(text))
        batch.append(text)
        if len(batch) >= 256:
            flush()
    if batch:
        flush()
    n_tok = int(counts.sum())
    if n_tok == 0 or n_words == 0:
        raise BrlmError("no text to measure the tokenizer on (empty input)")
    uniq = list(words)
    enc = tok.encode_batch([" " + w for w in uniq]) if hasattr(tok, "encode_batch") else [tok.encode(" " + w) for w in uniq]
    n_pieces = {w: len(ids) for w, ids in zip(uniq, enc)}
    total_words = sum(words.values())
    whole = sum(c for w, c in words.items() if n_pieces[w] == 1)
    common = [w for w, _ in words.most_common(frequent) if len(w) >= 4]
    worst = sorted(common, key=lambda w: (-n_pieces[w], -words[w]))[:top]
    seg = dict(zip(uniq, enc))
    return {
        "vocab_size": int(tok.vocab_size),
        "chars": n_chars,
        "words": n_words,
        "tokens": n_tok,
        "tokens_per_char": n_tok / n_chars,
        "tokens_per_word": n_tok / n_words,
        "words_kept_whole": whole / max(1, total_words),
        "byte_fallback_ratio": float(counts[is_byte].sum() / n_tok),
        "short_piece_ratio": float(counts[is_short].sum() / n_tok),
        "unk_rate": float(counts[is_unk].sum() / n_tok),
        "most_fragmented": [
            {"word": w, "count": words[w], "pieces": [pieces[i] for i in seg[w]]} for w in worst
        ],
    }


METRICS = ("tokens_per_char", "tokens_per_word", "words_kept_whole", "byte_fallback_ratio", "short_piece_ratio", "unk_rate")


def format_table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'':<20}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for key in ("vocab_size",) + METRICS:
        cells = []
        for n in names:
            v = results[n][key]
            cells.append(f"{v:>{width + 2}}" if isinstance(v, int) else f"{v:>{width + 2}.4f}")
        lines.append(f"{key:<20}" + "".join(cells))
    for n in names:
        frag = ", ".join(f"{d['word']}={'|'.join(d['pieces'])}" for d in results[n]["most_fragmented"][:8])
        lines.append(f"most fragmented ({n}): {frag}")
    return "\n".join(lines)
