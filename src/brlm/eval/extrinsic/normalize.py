"""Answer normalisers for the extrinsic tasks: brlm's Portuguese normaliser, and the seeds' one.

`normalize_answer(text)` is what brlm scores with: lower-case, punctuation and symbols to spaces,
the Portuguese articles `o a os as um uma uns umas` dropped as whole words, whitespace collapsed;
accents are kept (`é` and `e` differ in Portuguese: `é` is a verb) unless `fold_accents=True`.

`normalize_answer(text, compat="seeds")` reproduces the seeds' normaliser *with its defect*, so
their published numbers can be recomputed and the defect measured. Their regular expressions were
double-escaped inside raw strings, so the article and whitespace patterns matched a literal
backslash followed by `b` / `s` instead of a word boundary / whitespace: articles stay, and runs of
spaces are not collapsed (which matters for exact match, not for the whitespace token split).

    >>> normalize_answer("O Brasil é   grande!")
    'brasil é grande'
    >>> normalize_answer("O Brasil é   grande!", compat="seeds")
    'o brasil e   grande'
"""

from __future__ import annotations

import re
import unicodedata

from brlm.errors import BrlmError

ARTICLES = frozenset({"o", "a", "os", "as", "um", "uma", "uns", "umas"})
COMPAT = (None, "seeds")


def check_compat(compat: str | None) -> str | None:
    if compat not in COMPAT:
        raise BrlmError(f"--compat: expected 'seeds' or nothing, got {compat!r}")
    return compat


def first_line(text: str | None) -> str:
    """The first non-empty line, stripped (the whole text stripped when every line is blank)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return (text or "").strip()


def fold_accents(text: str) -> str:
    """Drop combining marks after NFD (`ação` -> `acao`), then recompose."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn"))


def _word_chars_only(text: str) -> str:
    # Letters (any script, with their accents), digits and combining marks survive; punctuation,
    # symbols, underscores and control characters become spaces (so `guarda-chuva` is two words).
    return "".join(ch if (ch.isalnum() or unicodedata.category(ch) == "Mn") else " " for ch in text)


def tokens(text: str | None, *, fold: bool = False, drop_articles: bool = True) -> list[str]:
    """brlm's normalised word tokens of `text` (see the module docstring)."""
    text = unicodedata.normalize("NFC", (text or "").lower())
    words = _word_chars_only(text).split()
    if drop_articles:
        # Articles go before folding: `à` (a + a, crase) is a contraction, not an article. An answer
        # made only of articles is an option letter ("A", "a)"), so it keeps them.
        kept = [w for w in words if w not in ARTICLES]
        words = kept or words
    if fold:
        words = [fold_accents(w) for w in words]
    return words


def _seeds_normalize(text: str) -> str:
    """The seeds' `_normalize_answer`, defect included (written from the description in issue 12)."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    # Everything outside a-z, 0-9 and the backslash becomes a space (the class was `[^a-z0-9\\s]`).
    text = re.sub(r"[^a-z0-9\\]", " ", text)
    # The defect, kept on purpose: these match a literal backslash + "b" / "s", not \b and \s.
    text = re.sub(r"\\b(o|a|os|as|um|uma|uns|umas)\\b", " ", text)
    text = re.sub(r"\\s+", " ", text)
    return text.strip()


def normalize_answer(text: str | None, *, fold: bool = False, compat: str | None = None) -> str:
    """Normalised text (tokens joined by one space; the seeds' string as it was with compat='seeds')."""
    if check_compat(compat) == "seeds":
        return _seeds_normalize(text or "")
    return " ".join(tokens(text, fold=fold))
