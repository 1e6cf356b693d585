"""Guardrails on generated samples: the seeds' "metrics do not guarantee readability" checks.

* byte-fallback ratio: share of generated tokens that are byte pieces (`<0xC3>`): text the
  vocabulary could not spell (threshold 0.03 in the seeds);
* short-piece ratio: share of generated pieces that are alphabetic and at most 2 characters long
  as stored (`ç`, `de` count; `▁a` and punctuation do not — the seeds' definition, shared with
  `brlm tokenizer report`): subword fragmentation (threshold 0.12);
* repetition: distinct-1/2/3 over words (unique n-grams / n-grams) and the longest word n-gram
  that occurs twice;
* non-word rate: share of generated words (lower-cased letter runs) never seen in the training
  corpus, a cheap proxy for invented words.

    brlm eval guardrails runs/demo --set guardrails.num_seeds=5
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from brlm.tokenizers.report import is_short_piece

_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*", re.UNICODE)  # letter runs, with hyphen/apostrophe joins
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_byte_piece(tok: Any, token_id: int) -> bool:
    fn = getattr(tok, "is_byte", None)
    return bool(fn(token_id)) if fn is not None else bool(_BYTE_PIECE.match(tok.piece(token_id)))


def piece_stats(tok: Any, ids: list[int], short_chars: int = 2) -> dict[str, Any]:
    """Byte-fallback and short-piece counts of generated ids (special tokens are left out)."""
    special = {getattr(tok, "bos_id", None), getattr(tok, "eos_id", None)}
    n = n_byte = n_short = 0
    for i in ids:
        if i in special:
            continue
        n += 1
        if is_byte_piece(tok, i):
            n_byte += 1
            continue
        if is_short_piece(tok.piece(i), short_chars):  # one definition with `brlm tokenizer report`
            n_short += 1
    return {
        "pieces": n,
        "byte_pieces": n_byte,
        "short_pieces": n_short,
        "byte_fallback_ratio": n_byte / n if n else 0.0,
        "short_piece_ratio": n_short / n if n else 0.0,
    }


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(seq: list[str], n: int) -> float | None:
    grams = ngrams(seq, n)
    return len(set(grams)) / len(grams) if grams else None


def longest_repeated_ngram(seq: list[str]) -> int:
    """Length of the longest word n-gram occurring at least twice (overlaps allowed)."""
    lo, hi = 0, max(len(seq) - 1, 0)
    # "some n-gram repeats" is monotone in n (a repeated n-gram contains a repeated (n-1)-gram).
    while lo < hi:
        mid = (lo + hi + 1) // 2
        grams = ngrams(seq, mid)
        if len(set(grams)) < len(grams):
            lo = mid
        else:
            hi = mid - 1
    return lo


def repetition_stats(text: str) -> dict[str, Any]:
    w = words(text)
    return {
        "words": len(w),
        "distinct_1": distinct_n(w, 1),
        "distinct_2": distinct_n(w, 2),
        "distinct_3": distinct_n(w, 3),
        "longest_repeated_ngram": longest_repeated_ngram(w),
    }


def training_vocabulary(texts: Iterable[str]) -> set[str]:
    vocab: set[str] = set()
    for t in texts:
        vocab.update(words(t))
    return vocab


def jsonl_texts(path: str | Path, field: str = "text") -> Iterable[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)[field]


def sample_guardrails(tok: Any, ids: list[int], completion: str, vocab: set[str] | None, short_chars: int = 2) -> dict[str, Any]:
    out = {**piece_stats(tok, ids, short_chars), **repetition_stats(completion)}
    if vocab is not None:
        w = words(completion)
        unseen = [x for x in w if x not in vocab]
        out["unseen_words"] = len(unseen)
        out["unseen_word_ratio"] = len(unseen) / len(w) if w else 0.0
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(rows: list[dict[str, Any]], max_byte_fallback: float = 0.03, max_short_piece: float = 0.12) -> dict[str, Any]:
    """Pooled ratios over all samples (token-weighted), mean repetition figures, and pass/fail."""
    pieces = sum(r["pieces"] for r in rows)
    byte_ratio = sum(r["byte_pieces"] for r in rows) / pieces if pieces else 0.0
    short_ratio = sum(r["short_pieces"] for r in rows) / pieces if pieces else 0.0
    n_words = sum(r["words"] for r in rows)
    agg: dict[str, Any] = {
        "samples": len(rows),
        "pieces": pieces,
        "byte_fallback_ratio": byte_ratio,
        "short_piece_ratio": short_ratio,
        "distinct_1": _mean([r["distinct_1"] for r in rows]),
        "distinct_2": _mean([r["distinct_2"] for r in rows]),
        "distinct_3": _mean([r["distinct_3"] for r in rows]),
        "longest_repeated_ngram": max((r["longest_repeated_ngram"] for r in rows), default=0),
        "thresholds": {"max_byte_fallback": max_byte_fallback, "max_short_piece": max_short_piece},
        "byte_fallback_pass": byte_ratio <= max_byte_fallback,
        "short_piece_pass": short_ratio <= max_short_piece,
    }
    if rows and "unseen_words" in rows[0]:
        agg["unseen_word_ratio"] = sum(r["unseen_words"] for r in rows) / n_words if n_words else 0.0
    agg["passed"] = agg["byte_fallback_pass"] and agg["short_piece_pass"]
    agg["samples_passed"] = sum(
        1 for r in rows if r["byte_fallback_ratio"] <= max_byte_fallback and r["short_piece_ratio"] <= max_short_piece
    )
    return agg
