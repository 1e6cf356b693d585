"""The tokenizer protocol every model, evaluator and sampler relies on.

`token_bytes()` gives the UTF-8 byte length each id stands for (0 for special tokens); summing
it over target ids is what turns a loss into bits per byte, the one figure comparable across
tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from brlm.errors import BrlmError, DataError
from brlm.io.files import read_json


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
    verify_tokenizer(folder, meta)
    if meta.get("kind") == "spm":
        from brlm.tokenizers.spm import SentencePieceTokenizer

        return SentencePieceTokenizer(folder / meta["model_file"])
    if meta.get("kind") == "char":
        from brlm.tokenizers.char import CharTokenizer

        return CharTokenizer(folder / meta["model_file"])
    raise BrlmError(f"{meta_path}: unknown tokenizer kind {meta.get('kind')!r}; expected 'spm' or 'char'")


def verify_tokenizer(folder: Path, meta: dict[str, Any]) -> None:
    """The model file must be the one the tokenizer stage wrote: its SHA-256 against tokenizer.json
    and the manifest. Another valid model swapped in would silently change every figure."""
    from brlm.io.files import file_sha256, read_manifest

    model = folder / str(meta.get("model_file", ""))
    if not meta.get("model_file") or not model.is_file():
        raise BrlmError(f"{model}: tokenizer model file missing (named by {folder / 'tokenizer.json'})")
    expected = {meta.get("sha256"), (read_manifest(folder) or {}).get("sha256")} - {None}
    if not expected:
        return  # written before hashes were recorded
    actual = file_sha256(model)
    if actual not in expected or len(expected) > 1:
        raise DataError(f"{model}: SHA-256 {actual[:12]} does not match the tokenizer's manifest "
                        f"({', '.join(sorted(e[:12] for e in expected))}); the file was replaced or damaged. "
                        "Retrain it with `brlm tokenizer train --force` (and the model after it)")


def train_tokenizer(texts: Iterable[str], cfg: Any, out_dir: str | Path, data_key: str, force: bool = False,
                    cleaning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the tokenizer `cfg.kind` names (a TokenizerConfig) on cleaned `texts` into `out_dir`.

    Pieces the cleaning inserts (the end-of-document marker, PII placeholders) become
    user-defined symbols, so they are one token each instead of a handful of fragments."""
    import dataclasses

    spec = (cleaning or {}).get("config") or {}
    inserted = [spec["eod_marker"]] if spec.get("eod_marker") else []
    if spec.get("pii"):
        from brlm.data.clean import PII_PLACEHOLDERS

        inserted += list(PII_PLACEHOLDERS)
    have = [x.strip() for x in cfg.user_defined_symbols.split(",") if x.strip()]
    missing = [x for x in inserted if x not in have]
    if missing:
        cfg = dataclasses.replace(cfg, user_defined_symbols=",".join(have + missing))
    if cfg.kind == "char":
        from brlm.tokenizers.char import train_char

        return train_char(texts, cfg, out_dir, data_key, force=force, cleaning=cleaning)
    from brlm.tokenizers.spm import train_spm

    return train_spm(texts, cfg, out_dir, data_key, force=force, cleaning=cleaning)


def check_aligned(tokenizer_dir: str | Path, data_cleaning: dict[str, Any] | None, allow_misaligned: bool = False) -> dict[str, Any]:
    """Aligned cleaning: the tokenizer must have been trained on text cleaned exactly like the text
    it is about to tokenize (the seeds' v6 was not). A mismatch is a DataError unless
    `allow_misaligned`, and the returned record says what was allowed (stored in the shards manifest)."""
    meta = read_json(Path(tokenizer_dir) / "tokenizer.json")
    tok_cleaning = meta.get("cleaning")
    tok_hash = (tok_cleaning or {}).get("hash")
    data_hash = (data_cleaning or {}).get("hash")
    if tok_hash == data_hash:
        return {"aligned": True, "cleaning_hash": data_hash}
    tok_cfg = (tok_cleaning or {}).get("config") or {}
    data_cfg = (data_cleaning or {}).get("config") or {}
    diff = sorted(k for k in set(tok_cfg) | set(data_cfg) if tok_cfg.get(k) != data_cfg.get(k) and k != "preset")
    what = ", ".join(f"clean.{k}: tokenizer {tok_cfg.get(k)!r} vs data {data_cfg.get(k)!r}" for k in diff[:4]) or \
        f"cleaning hash {str(tok_hash)[:12]} vs {str(data_hash)[:12]}"
    record = {"aligned": False, "allowed": allow_misaligned, "tokenizer_cleaning_hash": tok_hash,
              "data_cleaning_hash": data_hash, "differences": diff}
    if not allow_misaligned:
        raise DataError(
            f"{tokenizer_dir}: the tokenizer was trained on text cleaned differently from this data ({what}); "
            "prepare the data with the tokenizer's cleaning, retrain the tokenizer, or pass --allow-misaligned "
            "(tokenizer.allow_misaligned=true, recorded in the run)"
        )
    return record
