"""Tokenizers: a small protocol (base.py) and its implementations (spm.py)."""

from brlm.tokenizers.base import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
