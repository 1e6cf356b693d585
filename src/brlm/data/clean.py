"""Text cleaning. The same function cleans the tokenizer's training text and the model's training
text, so the two can never disagree (one of the seeds' costliest mistakes).

Rules here: Unicode NFKC, removal of BOM / zero-width / control characters, spaces collapsed
inside lines, at most one blank line in a row, and a minimum document length.
"""

from __future__ import annotations

import re
import unicodedata

# BOM, zero-width space/joiners, word joiner, soft hyphen.
_INVISIBLE = re.compile("[\ufeff\u200b\u200c\u200d\u2060\u00ad]")
# C0/C1 controls except newline and tab.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str, nfkc: bool = True) -> str:
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
