"""Each family's counts against its built model, for every family in the registry; the registry's
own FLOPs count against brlm.compute's; and models/ importing nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from brlm.compute.flops import COMPONENTS
from brlm.compute.flops import flops_per_token as compute_flops_per_token
from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models.registry import FAMILIES, build_model, family, flops_per_token

V = 300
BASE = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, dropout=0.0)
# Tiny configs per family, tied and untied; a family added to the registry must add its own here.
TINY: dict[str, list[ModelConfig]] = {
    "gpt": [ModelConfig(arch="gpt", **BASE), ModelConfig(arch="gpt", bias=False, tie_embeddings=False, **BASE)],
    "llama": [ModelConfig(arch="llama", n_kv_head=2, qk_norm=True, **BASE),
              ModelConfig(arch="llama", tie_embeddings=False, **BASE)],
    "moe": [ModelConfig(arch="moe", n_kv_head=2, n_expert=4, expert_top_k=2, expert_hidden=48, **BASE),
            ModelConfig(arch="moe", n_expert=3, expert_top_k=1, tie_embeddings=False, **BASE)],
    "rnn": [ModelConfig(arch="rnn", rnn_cell="lstm", rnn_hidden=32, rnn_layernorm=True, **BASE),
            ModelConfig(arch="rnn", rnn_cell="gru", rnn_hidden=48, tie_embeddings=False, **BASE)],
}
CASES = [(arch, i) for arch in sorted(FAMILIES) for i in range(len(TINY.get(arch, [None])))]


def test_every_family_has_tiny_configs():
    assert set(TINY) == set(FAMILIES)


@pytest.mark.parametrize("arch,i", CASES)
def test_param_counts_equal_the_built_model(arch, i):
    cfg = TINY[arch][i]
    model = build_model(cfg, V)
    # A tied head shares its tensor with the embedding: count each tensor once.
    unique = {p.data_ptr(): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    counts = family(arch).param_counts(cfg, V)
    assert counts["total"] == sum(unique.values())
    assert counts["non_embedding"] == counts["total"] - counts["embedding"]
    if hasattr(model, "active_params"):
        assert counts["active"] == model.active_params()


@pytest.mark.parametrize("arch,i", CASES)
def test_registry_flops_agree_with_compute(arch, i):
    cfg = TINY[arch][i]
    model = build_model(cfg, V)
    assert set(family(arch).forward_flops(cfg, V, 8.5)) <= set(COMPONENTS)
    for seq_len in (None, 7):
        assert flops_per_token(model, seq_len) == compute_flops_per_token(cfg, V, seq_len)


def test_unknown_arch_names_the_available_ones():
    with pytest.raises(ConfigError, match=r"model\.arch='mamba'.*gpt, llama, moe, rnn"):
        family("mamba")


FORBIDDEN = ("brlm.compute", "brlm.runs", "brlm.stages", "brlm.verbs", "brlm.train", "brlm.eval", "brlm.infer")


def test_models_import_nothing_above_them():
    root = Path(__file__).resolve().parents[1] / "src" / "brlm" / "models"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name} imports {name}"
