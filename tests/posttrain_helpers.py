"""A tiny Hugging Face base for the post-training tests, built the way brlm exports its own models:
a SentencePiece tokenizer trained on a few Portuguese sentences (role markers as single pieces),
a 2-layer Llama-style brlm model with random weights, saved with `brlm export hf`'s writers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SENTENCES

MARKERS = "<|sistema|>,<|usuario|>,<|assistente|>"
INSTRUCTIONS = [
    {"instruction": "Qual é a capital do Paraná?", "input": "", "output": "A capital do Paraná é Curitiba."},
    {"instruction": "Resuma o texto.", "input": "O ônibus da linha azul atrasou de novo por causa da obra.", "output": "O ônibus atrasou pela obra."},
    {"instruction": "Quanto é 2 mais 2?", "input": "", "output": "2 mais 2 é igual a 4."},
]


def texts() -> list[str]:
    chat = [f"<|usuario|>\n{r['instruction']}\n<|assistente|>\n{r['output']}" for r in INSTRUCTIONS]
    return [" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES))] * 3 + chat * 5


def make_hf_base(out: Path, n_embd: int = 64, n_layer: int = 2, vocab_size: int = 400, seed: int = 0,
                 chat_template: bool = True) -> Path:
    import torch

    from brlm.config import ModelConfig, TokenizerConfig
    from brlm.models.export_hf import save_hf_model
    from brlm.models.registry import build_model
    from brlm.tokenizers.base import load_tokenizer, train_tokenizer
    from brlm.tokenizers.hf import save_hf_tokenizer

    tok_dir = out.parent / f".{out.name}-spm"
    train_tokenizer(texts(), TokenizerConfig(vocab_size=vocab_size, user_defined_symbols=MARKERS), tok_dir, data_key="test")
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="llama", n_layer=n_layer, n_head=4, n_kv_head=2, n_embd=n_embd, block_size=256, dropout=0.0,
                      bias=False, tie_embeddings=False)
    model = build_model(cfg, tok.vocab_size)
    save_hf_model(model, out, {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": None})
    save_hf_tokenizer(tok_dir, out, model_max_length=256)
    if not chat_template:
        config = json.loads((out / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (out / "tokenizer_config.json").write_text(json.dumps(config))
        (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
