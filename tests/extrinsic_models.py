"""Tiny models and task sets for the extrinsic-run tests, built offline in seconds.

* `make_tokenizer_dir`: a SentencePiece tokenizer (vocab 300) trained on the fixture sentences;
* `make_brlm_run`: a run folder (checkpoints/ + tokenizer/) with a random Llama or GPT;
* `make_hf_folder`: the same kind of model saved as a Hugging Face folder with brlm's PT-BR chat template;
* `make_sets`: `<folder>/<seed>/{qa,summarization,rewriting}.jsonl` with prompts of different lengths.

Weights are pushed far from init (as tests/test_export_hf.py) so greedy decoding has no near-ties
and different prompts give different answers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from brlm.config import ModelConfig, TokenizerConfig
from brlm.models.registry import build_model

from .conftest import SENTENCES

V = 300


def make_tokenizer_dir(out: Path) -> Path:
    from brlm.tokenizers.spm import train_spm

    texts = [" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES))] * 3
    train_spm(texts, TokenizerConfig(vocab_size=V), out, data_key="fixture")
    return out


def random_model(arch: str = "llama", seed: int = 0, block_size: int = 128) -> torch.nn.Module:
    cfg = ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, block_size=block_size, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(cfg, V).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def make_brlm_run(out: Path, tok_dir: Path, arch: str = "llama", seed: int = 0) -> Path:
    from brlm.models.checkpoint import save_checkpoint, update_pointers

    model = random_model(arch, seed)
    save_checkpoint(out / "checkpoints", 1, model, {"model": dataclasses.asdict(model.cfg), "vocab_size": V})
    update_pointers(out / "checkpoints", best=1, last=1)
    shutil.copytree(tok_dir, out / "tokenizer")
    return out


def make_hf_folder(out: Path, tok_dir: Path, arch: str = "llama", seed: int = 0) -> Path:
    from brlm.models.export_hf import save_hf_model
    from brlm.tokenizers.hf import save_hf_tokenizer

    save_hf_model(random_model(arch, seed), out, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None})
    save_hf_tokenizer(tok_dir, out)
    return out


QUESTIONS = [
    "Qual é a capital do Brasil?",
    "O ônibus da linha azul atrasou de novo por causa da obra na avenida principal. Por que o ônibus atrasou?",
    "Quem venceu o clássico?",
    "A prefeitura prometeu concluir a reforma da praça até o fim do mês de março. Quando termina a reforma da praça?",
    "Onde começa a vacinação?",
    "Os moradores do bairro pediram mais iluminação e segurança nas ruas à noite. O que pediram os moradores?",
]
TEXTS = [SENTENCES[i] + " " + SENTENCES[(i + 3) % len(SENTENCES)] * (1 + i % 3) for i in range(6)]


def items(task: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if task == "qa":
            row = {"instruction": QUESTIONS[i % len(QUESTIONS)], "input": "", "reference": "a praça"}
        elif task == "summarization":
            row = {"instruction": "Resuma o texto em uma frase.", "input": TEXTS[i % len(TEXTS)], "reference": SENTENCES[i % 10]}
        else:
            row = {"instruction": "Reescreva o texto de forma mais simples.", "input": TEXTS[(i + 2) % len(TEXTS)],
                   "reference": SENTENCES[(i + 1) % 10]}
        rows.append({"task": task, **row, "hash": f"{task}-{i:03d}"})
    return rows


def make_sets(folder: Path, seeds: tuple[str, ...] = ("seed1", "seed2"), n: int = 4) -> list[Path]:
    out = []
    for s, seed in enumerate(seeds):
        d = folder / seed
        d.mkdir(parents=True, exist_ok=True)
        for task in ("qa", "summarization", "rewriting"):
            rows = items(task, n + s)[s:]  # the seeds overlap but differ
            (d / f"{task}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        out.append(d)
    return out
