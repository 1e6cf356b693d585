"""A run's SentencePiece tokenizer as GGUF tokenizer metadata (llama.cpp's "llama" = SPM tokenizer):
pieces, scores and token types (normal, unknown, control, user-defined, byte), the special ids,
no BOS/EOS added (brlm trains on text without them), no space prefix (trained with
add_dummy_prefix=false), and the PT-BR chat template `brlm export hf` writes.

    from brlm.tokenizers.gguf import gguf_vocab
    vocab = gguf_vocab("runs/demo/tokenizer", vocab_size=model.vocab_size)

llama.cpp's SPM tokenizer merges pieces by score, which is SentencePiece's BPE algorithm: a
`tokenizer.model_type=bpe` run tokenizes there as it does here; a unigram run (Viterbi over the
lattice) may split some words differently in llama.cpp, with the same pieces and ids. The char
tokenizer has no llama.cpp counterpart and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from brlm.errors import BrlmError
from brlm.io.files import read_json
from brlm.tokenizers.hf import CHAT_TEMPLATE, _user_symbols

# gguf.TokenType values (llama.cpp's llama_token_type), spelled here so this module needs no gguf.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class GGUFVocab:
    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    special: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> id
    model: str = "llama"
    chat_template: str = CHAT_TEMPLATE


def gguf_vocab(tokenizer_dir: str | Path, vocab_size: int | None = None) -> GGUFVocab:
    """The vocabulary of a run's SentencePiece tokenizer, padded with unused `[PAD{i}]` entries up
    to the model's `vocab_size` (as llama.cpp's convert script pads)."""
    folder = Path(tokenizer_dir)
    meta = read_json(folder / "tokenizer.json")
    if meta.get("kind") != "spm":
        raise BrlmError(f"{folder}: tokenizer.kind={meta.get('kind')!r} has no llama.cpp tokenizer; GGUF export needs "
                        "a SentencePiece tokenizer (tokenizer.kind=spm)")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(folder / meta["model_file"]))
    n = sp.get_piece_size()
    user = {sp.piece_to_id(s) for s in _user_symbols(meta.get("config") or {})} - {sp.unk_id()}
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_unused(i):
            types.append(UNUSED)
        elif sp.is_byte(i):
            types.append(BYTE)
        elif i in user:
            types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
    if vocab_size is not None:
        if vocab_size < n:
            raise BrlmError(f"{folder}: tokenizer has {n} ids but the model only {vocab_size}")
        for i in range(n, vocab_size):
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(UNUSED)
    special = {k: i for k, i in (("unk", sp.unk_id()), ("bos", sp.bos_id()), ("eos", sp.eos_id()), ("pad", sp.pad_id()))
               if i >= 0}
    return GGUFVocab(tokens, scores, types, special)
