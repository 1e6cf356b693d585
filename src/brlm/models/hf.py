"""Hugging Face causal LMs seen through brlm's protocols: `HFCausalLM` answers `logits, _ = model(idx)`
like brlm's own models, `HFTokenizer` answers encode / decode / token_bytes / piece. A local folder
is loaded offline (`local_files_only`); every verb reaches it through `brlm.infer.load`.

Needs `pip install 'brlm[hf]'` (transformers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.errors import BrlmError

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")  # SentencePiece byte fallback: one byte


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BrlmError("evaluating a Hugging Face model needs transformers: pip install 'brlm[hf]'") from None
    return transformers


class HFCausalLM(nn.Module):
    """Wraps a transformers causal LM in brlm's model protocol: `logits, _ = model(idx)`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.block_size = int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)
        self.vocab_size = int(cfg.vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """As brlm's models: (logits (B, T, V), None) without targets, (None, mean cross-entropy) with them."""
        logits = self.model(input_ids=idx, use_cache=False).logits
        if targets is None:
            return logits, None
        return None, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (openai/gpt-2 encoder.py), which byte-level BPE
    vocabularies are written in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class HFTokenizer:
    """A transformers tokenizer seen through brlm's Tokenizer protocol (encode, decode,
    token_bytes, piece)."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.vocab_size = len(tok)
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else -1
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else -1
        self._token_bytes: np.ndarray | None = None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def piece(self, token_id: int) -> str:
        return self.tok.convert_ids_to_tokens(int(token_id))

    def token_bytes(self) -> np.ndarray:
        """Bytes per id. Byte-level BPE pieces (GPT-2 style) map back to bytes exactly, as do
        SentencePiece pieces (`▁` is a space, `<0xNN>` one byte); other tokenizers fall back to the
        UTF-8 length of the decoded piece."""
        if self._token_bytes is None:
            byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
            special = set(self.tok.all_special_ids)
            out = np.zeros(self.vocab_size, dtype=np.int64)
            pieces = self.tok.convert_ids_to_tokens(list(range(self.vocab_size)))
            byte_level = all(all(ch in byte_decoder for ch in p) for i, p in enumerate(pieces) if p and i not in special)
            metaspace = any(p and "\u2581" in p for p in pieces)
            for i, p in enumerate(pieces):
                if i in special or p is None:
                    continue
                if byte_level:
                    out[i] = len(p)
                elif _BYTE_PIECE.match(p):
                    out[i] = 1
                elif metaspace:
                    out[i] = len(p.replace("\u2581", " ").encode("utf-8"))
                else:
                    out[i] = len(self.tok.convert_tokens_to_string([p]).encode("utf-8"))
            self._token_bytes = out
        return self._token_bytes


def load_hf(folder: str | Path, device: str | torch.device = "cpu") -> tuple[HFCausalLM, HFTokenizer]:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BrlmError(f"--hf {folder}: not a Hugging Face model folder (config.json missing)")
    tf = _transformers()
    try:
        model = tf.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise BrlmError(f"--hf {folder}: cannot load model/tokenizer ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    return HFCausalLM(model).to(device).eval(), HFTokenizer(tok)
