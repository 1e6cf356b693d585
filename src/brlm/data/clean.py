"""Text cleaning. The same function cleans the tokenizer's training text and the model's training
text, so the two can never disagree (one of the seeds' costliest mistakes); the cleaning config's
hash travels with the data and the tokenizer so a mismatch is caught (see `cleaning_spec`).

Every rule the seeds used is an option of `CleanConfig` (`--set clean.x=y`); presets `natural`
(default, keeps case/digits/punctuation), `seed-v1` and `seed-v6` (`--clean NAME`). Rules run in
this order, each counted by `Cleaner` (documents and characters in and out, documents changed):

    nfkc, invisible, pii, urls, emails, digits, punctuation, spaces,
    line filters (min_line_chars, min_alpha_ratio, upper-case headers), lowercase, newlines,
    min_doc_chars, eod

    cleaner = Cleaner(data_cfg, clean_cfg); text = cleaner(raw)  # None when the document is dropped
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import unicodedata
from collections import Counter
from typing import Any

from brlm.config import CleanConfig, DataConfig

# BOM, zero-width space/joiners, word joiner, soft hyphen.
_INVISIBLE = re.compile("[\ufeff\u200b\u200c\u200d\u2060\u00ad]")
# C0/C1 controls except newline and tab.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_NUMBER = re.compile(r"\d{2,}")

# Brazilian PII. Formatted numbers are unambiguous; a bare run of 11 digits is a CPF only when
# its check digits are right (otherwise it is usually a phone number or an id of something else).
PII_PLACEHOLDERS = ("<EMAIL>", "<CNPJ>", "<CPF>", "<CEP>", "<TELEFONE>")
_PII = [
    ("email", _EMAIL, "<EMAIL>"),
    ("cnpj", re.compile(r"(?<![\d/.-])\d{2}\.?\d{3}\.?\d{3}/\d{4}-?\d{2}(?![\d-])|(?<!\d)\d{2}\.\d{3}\.\d{3}-?\d{4}-\d{2}(?!\d)"), "<CNPJ>"),
    ("cpf", re.compile(r"(?<![\d.-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\d-])"), "<CPF>"),
    ("cep", re.compile(r"(?<![\d.-])(?:\d{5}|\d{2}\.\d{3})-\d{3}(?![\d-])"), "<CEP>"),
    ("phone", re.compile(r"(?<![\w+])(?:\+?55[\s.-]?)?(?:\(\d{2}\)\s?|\d{2}[\s.-])9?\s?\d{4}[\s.-]?\d{4}(?!\d)"), "<TELEFONE>"),
]
_BARE11 = re.compile(r"(?<![\d.-])\d{11}(?![\d-])")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PII_PLACEHOLDERS))


def cpf_is_valid(digits: str) -> bool:
    """The two CPF check digits (mod 11), and not all digits equal."""
    if len(digits) != 11 or len(set(digits)) == 1:
        return False
    nums = [int(c) for c in digits]
    for n in (9, 10):
        s = sum(nums[i] * (n + 1 - i) for i in range(n))
        if (s * 10 % 11) % 10 != nums[n]:
            return False
    return True


def scrub_pii(text: str, counts: Counter | None = None) -> str:
    """Replace Brazilian PII by typed placeholders; `counts[kind]` gets the number replaced."""
    counts = counts if counts is not None else Counter()
    for kind, pattern, placeholder in _PII:
        text, n = pattern.subn(placeholder, text)
        counts[kind] += n

    def bare(m: re.Match) -> str:
        if cpf_is_valid(m.group(0)):
            counts["cpf"] += 1
            return "<CPF>"
        return m.group(0)

    return _BARE11.sub(bare, text)


def clean_text(text: str, nfkc: bool = True) -> str:
    """The `natural` cleaning of one text (no document-length rule): kept for callers that clean
    single strings such as prompts."""
    return Cleaner(DataConfig(nfkc=nfkc, min_doc_chars=1), CleanConfig()).clean_one(text) or ""


def cleaning_spec(data: DataConfig, clean: CleanConfig) -> dict[str, Any]:
    """Every value that changes cleaned text (and nothing else): what the data and the tokenizer
    record, and what their hash compares."""
    rules = {k: v for k, v in dataclasses.asdict(clean).items() if not k.startswith("near_dedup") and k != "preset"}
    return {"preset": clean.preset, "nfkc": data.nfkc, "min_doc_chars": data.min_doc_chars, **rules}


def cleaning_hash(spec: dict[str, Any]) -> str:
    blob = json.dumps({k: v for k, v in spec.items() if k != "preset"}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cleaner:
    """Applies the configured rules in order and keeps per-rule counts (see `report()`)."""

    def __init__(self, data: DataConfig, clean: CleanConfig):
        self.data, self.cfg = data, clean
        c = clean
        self.rules: list[tuple[str, Any]] = []
        if data.nfkc:
            self.rules.append(("nfkc", lambda t: unicodedata.normalize("NFKC", t)))
        if c.strip_invisible:
            self.rules.append(("invisible", lambda t: _CONTROL.sub(" ", _INVISIBLE.sub("", t))))
        if c.pii:
            self.rules.append(("pii", lambda t: scrub_pii(t, self.pii_counts)))
        if c.remove_urls:
            self.rules.append(("urls", lambda t: _URL.sub(" ", t)))
        if c.remove_emails:
            self.rules.append(("emails", lambda t: _EMAIL.sub(" ", t)))
        if c.digits_to_zero:
            self.rules.append(("digits", lambda t: _NUMBER.sub("0", t)))
        if c.punct_filter:
            keep = re.escape(c.punct_whitelist)
            bad = re.compile(rf"({_PLACEHOLDER.pattern}|<\|endoftext\|>)|[^\w\s{keep}]|_")
            self.rules.append(("punctuation", lambda t: bad.sub(lambda m: m.group(1) or " ", t)))
        if c.collapse_spaces:
            self.rules.append(("spaces", lambda t: "\n".join(_SPACES.sub(" ", x).strip() for x in t.split("\n"))))
        if c.min_line_chars or c.min_alpha_ratio or c.drop_upper_lines:
            self.rules.append(("lines", self._filter_lines))
        if c.lowercase:
            # After the line filters (upper-case headers must still look upper-case); the PII
            # placeholders keep their case so they stay one token.
            self.rules.append(("lowercase", self._lower))
        if c.newlines != "keep":
            self.rules.append(("newlines", self._newlines))
        self.counts: dict[str, Counter] = {name: Counter() for name, _ in self.rules}
        self.counts["min_doc_chars"] = Counter()
        if c.eod_marker:
            self.counts["eod"] = Counter()
        self.pii_counts: Counter = Counter()
        self.lines_dropped: Counter = Counter()

    def _lower(self, text: str) -> str:
        text = text.lower()
        if self.cfg.pii:
            for p in PII_PLACEHOLDERS:
                text = text.replace(p.lower(), p)
        return text

    def _filter_lines(self, text: str) -> str:
        c = self.cfg
        out = []
        for line in text.split("\n"):
            s = line.strip()
            if not s:
                out.append(line)  # blank lines are paragraph breaks, handled by `newlines`
                continue
            if c.min_line_chars and len(s) < c.min_line_chars:
                self.lines_dropped["short"] += 1
                continue
            if c.min_alpha_ratio and sum(ch.isalpha() for ch in s) / len(s) < c.min_alpha_ratio:
                self.lines_dropped["low_alpha"] += 1
                continue
            if c.drop_upper_lines and len(s) <= c.upper_line_max_chars and any(ch.isalpha() for ch in s) and s == s.upper() \
                    and s != s.lower():
                self.lines_dropped["upper_case"] += 1
                continue
            out.append(line)
        return "\n".join(out)

    def _newlines(self, text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        mode = self.cfg.newlines
        if mode == "blank":
            return _BLANKS.sub("\n\n", text).strip()
        if mode == "single":
            return "\n".join(x for x in text.split("\n") if x.strip()).strip()
        return " ".join(x.strip() for x in text.split("\n") if x.strip())

    def clean_one(self, text: str) -> str | None:
        """The cleaned text, or None when a rule leaves it empty or too short."""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        for name, fn in self.rules:
            c = self.counts[name]
            c["docs_in"] += 1
            c["chars_in"] += len(text)
            new = fn(text)
            if new != text:
                c["docs_changed"] += 1
            text = new
            if not text.strip():
                return None
            c["docs_out"] += 1
            c["chars_out"] += len(text)
        c = self.counts["min_doc_chars"]
        c["docs_in"] += 1
        c["chars_in"] += len(text)
        if len(text) < self.data.min_doc_chars:
            return None
        c["docs_out"] += 1
        c["chars_out"] += len(text)
        if self.cfg.eod_marker:
            c = self.counts["eod"]
            c["docs_in"] += 1
            c["chars_in"] += len(text)
            text = f"{text}\n{self.cfg.eod_marker}"
            c["docs_out"] += 1
            c["docs_changed"] += 1
            c["chars_out"] += len(text)
        return text

    __call__ = clean_one

    def report(self) -> dict[str, Any]:
        """Per-rule counts in rule order, plus PII replacements and dropped lines by reason."""
        keys = ("docs_in", "docs_out", "chars_in", "chars_out", "docs_changed")
        out: dict[str, Any] = {name: {k: int(c[k]) for k in keys} for name, c in self.counts.items()}
        if self.cfg.pii:
            out["pii"]["replaced"] = {k: int(self.pii_counts[k]) for k in ("cpf", "cnpj", "phone", "email", "cep")}
        if "lines" in out:
            out["lines"]["lines_dropped"] = {k: int(self.lines_dropped[k]) for k in ("short", "low_alpha", "upper_case")}
        return out


def dedup_key(text: str) -> str:
    """Hash of the text normalised for exact dedup: case-folded, whitespace collapsed."""
    norm = " ".join(text.casefold().split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


class NearDedup:
    """MinHash LSH over 5-word shingles (datasketch): `seen(text)` is True for a near-duplicate
    of a document added before, else the document is added."""

    def __init__(self, threshold: float, num_perm: int, shingle: int = 5):
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            from brlm.errors import BrlmError

            raise BrlmError("clean.near_dedup=true needs datasketch: pip install 'brlm[dedup]'") from None
        self._MinHash = MinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm, self.shingle, self.n = num_perm, shingle, 0

    def seen(self, text: str) -> bool:
        words = text.casefold().split()
        k = self.shingle
        grams = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
        m = self._MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([g.encode("utf-8") for g in grams])
        if self.lsh.query(m):
            return True
        self.lsh.insert(str(self.n), m)
        self.n += 1
        return False
