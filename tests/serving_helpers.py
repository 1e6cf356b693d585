"""Tiny run folders for the chat / prompting / quantisation / GGUF tests: a SentencePiece tokenizer
trained on the fixture sentences and a random llama checkpoint, built in about a second."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from brlm.config import ModelConfig, TokenizerConfig
from tests.conftest import SENTENCES

ROLE_SYMBOLS = "<|sistema|>,<|usuario|>,<|assistente|>"
LLAMA = ModelConfig(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=64, dropout=0.0)


def train_tokenizer_dir(out: Path, model_type: str = "unigram", symbols: str = "", kind: str = "spm") -> Path:
    from brlm.tokenizers.base import train_tokenizer

    texts = [" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES))] * 3
    texts += ["Sim. Não. Talvez. Qual é a capital? Brasília.\nResposta: sim\nResposta: não"] * 3
    cfg = TokenizerConfig(kind=kind, vocab_size=360 if kind == "spm" else 300, model_type=model_type,
                          user_defined_symbols=symbols)
    train_tokenizer(texts, cfg, out, data_key="fixture")
    return out


def ban_tokens(model: torch.nn.Module, ids: list[int]) -> None:
    """Make a llama with an untied head never predict `ids`: residual dimension 0 is a constant +5
    (every embedding has it, no layer writes to it), so a head row of -1000 there sinks those logits."""
    with torch.no_grad():
        model.tok_emb.weight[:, 0] = 5.0
        for layer in model.layers:
            layer.attn.wo.weight[0, :] = 0.0
            layer.ffn.w2.weight[0, :] = 0.0
        model.norm.weight[0] = 1.0
        model.lm_head.weight[ids, :] = 0.0
        model.lm_head.weight[ids, 0] = -1000.0


def make_run(root: Path, tokenizer_dir: Path, cfg: ModelConfig = LLAMA, step: int = 5, seed: int = 0,
             noise: float = 0.0, sample: dict | None = None, ban: list[int] | None = None) -> Path:
    """A run folder with one checkpoint of a random model; `noise` pushes weights away from init so
    logits are peaked (distinct greedy answers); `ban` ids are never generated (needs an untied head)."""
    import json

    from brlm.models.checkpoint import save_checkpoint, update_pointers
    from brlm.models.registry import build_model

    run = root / f"{cfg.arch}-{tokenizer_dir.name}-{seed}{'-ban' if ban else ''}"
    shutil.copytree(tokenizer_dir, run / "tokenizer")
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())["vocab_size"]
    torch.manual_seed(seed)
    model = build_model(cfg, vocab)
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * noise)
    if ban:
        ban_tokens(model, ban)
    meta = {"arch": cfg.arch, "model": dataclasses.asdict(cfg), "vocab_size": vocab,
            "config": {"sample": sample or {"temperature": 0.8, "seed": 7}}}
    save_checkpoint(run / "checkpoints", step, model, meta)
    update_pointers(run / "checkpoints", best=step, last=step)
    return run
