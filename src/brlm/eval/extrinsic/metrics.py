"""Per-item metrics for the extrinsic tasks: exact match, token F1, ROUGE-L F1 and chrF, in [0, 1].

QA (EM, F1) compares the answer's first non-empty line with the reference after the Portuguese
normaliser (`normalize.py`); ROUGE-L and chrF compare whole texts. Every function takes
`compat="seeds"` where the seeds had an equivalent, and then computes exactly what the seeds'
evaluation computed (first line of output *and* reference, their defective normaliser, EM on the
normalised strings with their spaces as they are).

    >>> round(rouge_l("o gato comeu o rato", "o cão comeu o rato"), 3)
    0.8
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Callable, Sequence

from brlm.eval.extrinsic.normalize import check_compat, first_line, normalize_answer, tokens

METRICS = ("em", "f1", "rouge_l", "chrf")


def exact_match(pred: str | None, ref: str | None, *, fold: bool = False, compat: str | None = None) -> float:
    """1.0 when the normalised first line of `pred` equals the normalised reference (never for an empty one)."""
    if check_compat(compat) == "seeds":
        p, r = normalize_answer(first_line(pred), compat="seeds"), normalize_answer(first_line(ref), compat="seeds")
        return 1.0 if p == r and r != "" else 0.0
    # The reference is the gold answer as written: only the model's answer is cut to its first line.
    p, r = tokens(first_line(pred), fold=fold), tokens(ref, fold=fold)
    return 1.0 if r and p == r else 0.0


def _overlap_f1(p: Sequence[str], r: Sequence[str]) -> float:
    if not p or not r:
        return 0.0
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str | None, ref: str | None, *, fold: bool = False, compat: str | None = None) -> float:
    """SQuAD-style bag-of-tokens F1 between the answer's first line and the reference."""
    if check_compat(compat) == "seeds":
        p = normalize_answer(first_line(pred), compat="seeds").split()
        r = normalize_answer(first_line(ref), compat="seeds").split()
        return _overlap_f1(p, r)
    return _overlap_f1(tokens(first_line(pred), fold=fold), tokens(ref, fold=fold))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(min) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[-1]))
        prev = cur
    return prev[-1]


_WORD = re.compile(r"[^\W_]+")


def rouge_tokens(text: str | None, stemmer: Callable[[str], str] | None = None) -> list[str]:
    """Lower-cased Unicode words (letters with their accents, digits); no stop words removed."""
    words = _WORD.findall(unicodedata.normalize("NFC", (text or "").lower()))
    return [stemmer(w) for w in words] if stemmer else words


def rouge_l(pred: str | None, ref: str | None, *, stemmer: Callable[[str], str] | None = None,
            compat: str | None = None) -> float:
    """ROUGE-L F1 (beta = 1) over word tokens (Lin 2004, https://aclanthology.org/W04-1013/).

    Stemming is off by default; pass a `stemmer` (str -> str) to apply one to every token.
    """
    if check_compat(compat) == "seeds":
        p, r = normalize_answer(pred, compat="seeds").split(), normalize_answer(ref, compat="seeds").split()
    else:
        p, r = rouge_tokens(pred, stemmer), rouge_tokens(ref, stemmer)
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def chrf(pred: str | None, ref: str | None, *, max_n: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015, https://aclanthology.org/W15-3049/): character n-gram F-beta, n = 1..6.

    Whitespace is removed first (as sacreBLEU); precision and recall are averaged over the orders
    both texts are long enough for, then combined with beta = 2 (recall weighs twice as much).
    """
    p = "".join(unicodedata.normalize("NFC", pred or "").split())
    r = "".join(unicodedata.normalize("NFC", ref or "").split())
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        hp, hr = _char_ngrams(p, n), _char_ngrams(r, n)
        if not hp or not hr:
            continue
        match = sum((hp & hr).values())
        precisions.append(match / sum(hp.values()))
        recalls.append(match / sum(hr.values()))
    if not precisions:
        return 0.0
    cp, cr = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if cp == 0 and cr == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * cp * cr / (b2 * cp + cr)


def score_item(pred: str | None, ref: str | None, *, compat: str | None = None, fold: bool = False) -> dict[str, float]:
    """Every metric of one answer: {'em', 'f1', 'rouge_l', 'chrf'} (chrF has no seeds' counterpart)."""
    return {
        "em": exact_match(pred, ref, fold=fold, compat=compat),
        "f1": token_f1(pred, ref, fold=fold, compat=compat),
        "rouge_l": rouge_l(pred, ref, compat=compat),
        "chrf": chrf(pred, ref),
    }
