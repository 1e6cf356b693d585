"""SentencePiece tokenizers (unigram or BPE) with byte fallback.

Trained with the identity normalisation: brlm's own cleaning (brlm.data.clean) already ran on
the text, and a second, different normalisation inside the tokenizer would make the tokenizer
see other text than the model (the seeds' v6 mistake). `decode(encode(x)) == x` holds for
cleaned text, and the byte lengths of a text's pieces add up to its UTF-8 length exactly;
newlines are a piece of their own so documents keep their paragraphs.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from brlm.config import TokenizerConfig
from brlm.errors import BrlmError, ConfigError
from brlm.io.files import (
    atomic_path,
    file_sha256,
    is_fresh,
    read_manifest,
    stage_key,
    write_json,
    write_manifest,
    write_text,
)

STAGE_VERSION = 1
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


class SentencePieceTokenizer:
    def __init__(self, model_file: str | Path):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise BrlmError(f"{self.model_file}: SentencePiece model not found")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
        except (OSError, RuntimeError) as e:
            raise BrlmError(f"{self.model_file}: not a readable SentencePiece model ({e})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.unk_id = self.sp.unk_id()
        self.num_threads = -1  # SentencePiece's own threads for encode_batch; 1 inside shard worker processes
        self._token_bytes: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes rebuild the processor from the model file (SentencePiece objects do not pickle).
        return {"model_file": str(self.model_file)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_file"])

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=self.num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id))

    def is_byte(self, token_id: int) -> bool:
        return bool(self.sp.is_byte(int(token_id)))

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes per id: byte pieces 1, control/unknown 0, others their text ('▁' = space)."""
        if self._token_bytes is None:
            out = np.zeros(self.vocab_size, dtype=np.int64)
            for i in range(self.vocab_size):
                if self.sp.is_control(i) or self.sp.is_unknown(i):
                    continue
                if self.sp.is_byte(i):
                    out[i] = 1
                else:
                    out[i] = len(self.sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
            self._token_bytes = out
        return self._token_bytes


def _training_error(msg: str, cfg: TokenizerConfig, n_lines: int, out_dir: Path) -> BrlmError:
    """Turn SentencePiece's multi-line errors into one line that names the setting to change."""
    if n_lines == 0:
        return BrlmError(f"{out_dir}: no text to train the tokenizer on (empty training split)")
    if "Vocabulary size too high" in msg:
        hint = msg[msg.find("Vocabulary size too high"):].splitlines()[0].strip()
        return ConfigError(f"tokenizer.vocab_size={cfg.vocab_size}: too large for this corpus ({hint})")
    if "Vocabulary size is smaller than required_chars" in msg:
        need = msg.split("required_chars.")[1].split(".")[0].strip()
        return ConfigError(
            f"tokenizer.vocab_size={cfg.vocab_size}: too small for the characters of this corpus ({need}); "
            "raise tokenizer.vocab_size or lower tokenizer.character_coverage"
        )
    return BrlmError(f"SentencePiece training failed: {msg.strip().splitlines()[-1] if msg.strip() else 'unknown error'}")


def user_symbols(cfg: TokenizerConfig) -> list[str]:
    return [s for s in (x.strip() for x in cfg.user_defined_symbols.split(",")) if s]


def train_spm(texts: Iterable[str], cfg: TokenizerConfig, out_dir: str | Path, data_key: str, force: bool = False,
              cleaning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a SentencePiece model on `texts` (cleaned documents) into `out_dir`.

    Skipped when `out_dir` already holds a tokenizer trained with this config on this data.
    `cleaning` ({"hash", "config"} from the data manifest) is stored in tokenizer.json, so text
    cleaned differently is caught when it is tokenized (brlm.tokenizers.align).
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    key = stage_key(stage="tokenizer", version=STAGE_VERSION, config=dataclasses.asdict(cfg), data=data_key)
    if not force and is_fresh(out_dir, key):
        return read_manifest(out_dir) or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    counter = {"lines": 0}

    def lines():
        for text in texts:
            for line in text.split("\n"):
                if line.strip():
                    counter["lines"] += 1
                    yield line

    spm.set_random_generator_seed(1234)  # sampling/shuffling inside SentencePiece repeatable
    model = io.BytesIO()
    try:
        # Streamed from Python and written to memory: no temporary paths end up in the model
        # file, so the same text and config give byte-identical models (and hashes).
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(),
            model_writer=model,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            byte_fallback=cfg.byte_fallback,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=cfg.shuffle_input_sentence,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            # No dummy leading space: token bytes then sum to the text's exact UTF-8 length.
            add_dummy_prefix=False,
            split_digits=cfg.split_digits,
            max_sentencepiece_length=cfg.max_piece_length,
            user_defined_symbols=["\n"] + [s for s in user_symbols(cfg) if s != "\n"],
            unk_id=cfg.unk_id,
            bos_id=cfg.bos_id,
            eos_id=cfg.eos_id,
            pad_id=cfg.pad_id,
            max_sentence_length=1 << 16,
            num_threads=max(1, min(os.cpu_count() or 1, 8)),
            minloglevel=2,
        )
    except RuntimeError as e:
        raise _training_error(str(e), cfg, counter["lines"], out_dir) from None
    with atomic_path(out_dir / "spm.model") as tmp:
        tmp.write_bytes(model.getvalue())
    n_lines = counter["lines"]
    tok = SentencePieceTokenizer(out_dir / "spm.model")
    write_text(out_dir / "spm.vocab", "".join(f"{tok.piece(i)}\t{tok.sp.get_score(i)}\n" for i in range(tok.vocab_size)))
    sha = file_sha256(out_dir / "spm.model")
    write_json(
        out_dir / "tokenizer.json",
        {
            "kind": "spm",
            "model_file": "spm.model",
            "sha256": sha,
            "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id,
            "eos_id": tok.eos_id,
            "config": dataclasses.asdict(cfg),
            "trained_on": data_key,
            "training_lines": n_lines,
            "cleaning": cleaning,
        },
    )
    return write_manifest(out_dir, stage="tokenizer", key=key, files=["spm.model", "tokenizer.json"], sha256=sha, vocab_size=tok.vocab_size)
