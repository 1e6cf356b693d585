"""The tokenizer protocol every model, evaluator and sampler relies on.

`token_bytes()` gives the UTF-8 byte length each id stands for (0 for special tokens); summing
it over target ids is what turns a loss into bits per byte, the one figure comparable across
tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from brlm.errors import BrlmError
from brlm.runs.artifacts import read_json


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def token_bytes(self) -> np.ndarray: ...
    def piece(self, token_id: int) -> str: ...


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load the tokenizer a `tokenizer` stage wrote into `folder` (reads tokenizer.json)."""
    folder = Path(folder)
    meta_path = folder / "tokenizer.json"
    if not meta_path.is_file():
        raise BrlmError(f"{folder}: no tokenizer here (tokenizer.json missing); run `brlm tokenizer train` first")
    meta = read_json(meta_path)
    if meta.get("kind") == "spm":
        from brlm.tokenizers.spm import SentencePieceTokenizer

        return SentencePieceTokenizer(folder / meta["model_file"])
    raise BrlmError(f"{meta_path}: unknown tokenizer kind {meta.get('kind')!r}; expected 'spm'")
