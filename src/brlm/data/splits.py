"""Deterministic document-level splits by content hash.

A document's split depends only on its cleaned text and a salt, so the same document lands in
the same split on every run and every machine, and exact duplicates can never straddle splits.
The hash gives a number u uniform in [0, 1): u < val -> val, u < val + test -> test, else train
(adding a test split never moves a validation document).
"""

from __future__ import annotations

import hashlib


def split_of(text: str, val_fraction: float, salt: str = "brlm", test_fraction: float = 0.0) -> str:
    digest = hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"
