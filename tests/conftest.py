"""Shared fixtures: tiny Portuguese texts, a tokenizer trained from them, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Run in parallel (pytest -n 2), each worker and the CLI subprocesses it starts take one thread:
    # two PyTorch processes with two threads each on two cores slow each other down many times over.
    os.environ["OMP_NUM_THREADS"] = "1"

SENTENCES = [
    "O ônibus da linha azul atrasou de novo por causa da obra na avenida principal.",
    "A prefeitura prometeu concluir a reforma da praça até o fim do mês de março.",
    "Os moradores do bairro pediram mais iluminação e segurança nas ruas à noite.",
    "O time venceu o clássico de domingo com um gol de cabeça nos acréscimos.",
    "A inflação dos alimentos pesou no orçamento das famílias durante o inverno.",
    "Pesquisadores brasileiros estudam como o calor afeta a produção de café.",
    "A vacinação contra a gripe começa na segunda-feira em todos os postos de saúde.",
    "O festival de música reuniu artistas de várias regiões do país no fim de semana.",
    "Especialistas recomendam trocar as senhas com frequência e ativar a verificação em duas etapas.",
    "A escola estadual abriu inscrições para o curso noturno de educação de jovens e adultos.",
]


@pytest.fixture(autouse=True, scope="session")
def _session_cache_dir(tmp_path_factory):
    """brlm keeps what it measures per machine (CPU peak, loss / attention / decode-layout plans,
    dtype probes) in cache_dir(). Tests measure tiny shapes: point the cache at a folder of this
    session (CLI subprocesses inherit it), so a test run neither reads a developer's decisions nor
    leaves its own in ~/.cache/brlm. Tests that need an empty cache still set their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRLM_CACHE_DIR", str(tmp_path_factory.mktemp("brlm-cache")))
        yield


@pytest.fixture(autouse=True)
def _fresh_attention_plans():
    """A trainer run leaves its attention plan in this process (brlm.models.attention): clear it
    after each test, so a later test's gradients do not depend on which tests ran before."""
    yield
    import brlm.models.attention as attention

    attention._plans.clear()


def make_corpus_jsonl(path: Path, n_docs: int = 60) -> Path:
    """A small JSONL corpus: each document joins several sentences in a different order."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            k = len(SENTENCES)
            doc = " ".join(SENTENCES[(i + j * 3) % k] for j in range(4)) + f" Documento número {i}."
            f.write(json.dumps({"id": f"d{i}", "text": doc, "category": "teste"}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def spm_tokenizer(tmp_path_factory):
    from brlm.config import TokenizerConfig
    from brlm.tokenizers.spm import SentencePieceTokenizer, train_spm

    out = tmp_path_factory.mktemp("tok")
    texts = [" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES))] * 3
    # unigram: at 300 pieces a BPE spends its vocabulary on bytes and characters (no merges to measure)
    train_spm(texts, TokenizerConfig(model_type="unigram", vocab_size=300), out, data_key="fixture")
    return SentencePieceTokenizer(out / "spm.model")


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `brlm` CLI in a subprocess (as a user would)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "brlm", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"brlm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny end-to-end demo run through the CLI, shared by the tests that read its folder."""
    runs = tmp_path_factory.mktemp("runs")
    run_cli("run", "demo", "--scale", "tiny", "--runs-dir", str(runs), "--name", "tiny", check=True)
    return runs / "tiny"
