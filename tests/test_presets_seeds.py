"""The `paper` scale of v1 ... v6 is the seeds' run (issue 15's table, from their logs and scripts),
and every shipped preset resolves at every scale it names (the ladder's rungs included)."""

from __future__ import annotations

import pytest

from brlm.config import list_presets, load_config, preset_variants, read_preset
from brlm.verbs.run import variant_config

SEED_V1 = {"lowercase": True, "drop_upper_lines": True, "min_line_chars": 40, "min_alpha_ratio": 0.4, "digits_to_zero": True}

# preset -> {dotted key: the seeds' value}
TABLE = {
    "v1": {"tokenizer.kind": "char", "clean.preset": "seed-v1", "model.arch": "rnn", "model.rnn_cell": "lstm", "model.n_layer": 1,
           "model.rnn_hidden": 256, "model.n_embd": 128, "model.dropout": 0.0, "model.final_dropout": 0.0,
           "model.block_size": 160, "train.stride": 1, "train.batch_size": 256, "train.epochs": 2.0, "train.grad_clip": 0.0},
    "v2": {"tokenizer.kind": "char", "clean.preset": "seed-v1", "model.arch": "rnn", "model.rnn_cell": "lstm", "model.n_layer": 1,
           "model.rnn_hidden": 512, "model.n_embd": 256, "model.dropout": 0.1, "model.final_dropout": 0.0,
           "model.block_size": 160, "train.stride": 4, "train.batch_size": 256, "train.epochs": 2.0, "train.grad_clip": 1.0},
    "v3": {"tokenizer.kind": "char", "clean.preset": "seed-v1", "model.arch": "rnn", "model.rnn_cell": "lstm", "model.n_layer": 2,
           "model.rnn_hidden": 512, "model.rnn_layernorm": True, "model.n_embd": 256, "model.dropout": 0.1,
           "model.final_dropout": 0.1, "model.block_size": 160, "train.stride": 4, "train.batch_size": 256,
           "train.epochs": 2.0, "train.grad_clip": 1.0},
    "v4": {"tokenizer.kind": "spm", "tokenizer.vocab_size": 4000, "tokenizer.byte_fallback": True, "model.arch": "rnn",
           "model.n_layer": 2, "model.rnn_hidden": 512, "model.n_embd": 512, "model.dropout": 0.1, "model.block_size": 192,
           "train.stride": 2, "train.batch_size": 192, "train.epochs": 2.0, "train.grad_clip": 1.0},
    "v5": {"tokenizer.kind": "spm", "model.arch": "gpt", "model.block_size": 320, "train.batch_size": 192},
    "v6": {"tokenizer.kind": "spm", "tokenizer.model_type": "unigram", "tokenizer.vocab_size": 16000, "clean.preset": "seed-v6",
           "model.arch": "gpt", "model.n_embd": 512, "model.n_layer": 6, "model.n_head": 8, "model.mlp_hidden": 2048,
           "model.dropout": 0.1, "model.block_size": 256, "train.stride": 96, "train.batch_size": 64, "train.epochs": 24.0,
           "train.lr": 1.5e-4, "train.warmup_steps": 2000, "train.weight_decay": 0.1, "train.label_smoothing": 0.05,
           "train.grad_clip": 1.0, "data.max_docs": 100000, "data.val_fraction": 0.1},
}


def _get(cfg, key):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("preset", sorted(TABLE))
def test_paper_scale_is_the_seeds_run(preset):
    configs = [variant_config(preset, v, "paper", []) for v in preset_variants(preset)] or [load_config(preset=preset, scale="paper")]
    for cfg in configs:
        for key, value in TABLE[preset].items():
            assert _get(cfg, key) == value, f"{preset} paper: {key} = {_get(cfg, key)!r}, the seeds: {value!r}"
        if cfg.clean.preset == "seed-v1":
            assert all(getattr(cfg.clean, k) == v for k, v in SEED_V1.items())
        assert cfg.tokenizer.character_coverage == 1.0  # Portuguese: every character (SentencePiece's guidance)
    if preset == "v4":
        assert {c.model.rnn_cell for c in configs} == {"gru", "lstm"}
    assert "differ" in read_preset(preset).get("description", "") or "#" in _text(preset)  # comments say where


def _text(preset):
    from importlib import resources

    return (resources.files("brlm") / "presets" / f"{preset}.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_resolves_at_every_scale(preset):
    data = read_preset(preset)
    from brlm.config import resolve
    from brlm.stages import preset_workflow, workflow_root

    root = workflow_root(preset_workflow(preset))  # post-training presets resolve with their own root
    for scale in data.get("scales") or {"default": {}}:
        for v in preset_variants(preset) or [None]:
            cfg = variant_config(preset, v, scale, []) if v else resolve(root, preset, scale)
            assert cfg.scale == scale


def test_ladder_rungs_are_v1_to_v6_with_one_byte_budget():
    rungs = preset_variants("ladder")
    assert list(rungs) == ["v1", "v2", "v3", "v4", "v5", "v6"]
    for scale in ("tiny", "small"):
        cfgs = {v: variant_config("ladder", v, scale, []) for v in rungs}
        assert len({c.train.budget_bytes for c in cfgs.values()}) == 1 and cfgs["v1"].train.budget_bytes > 0
        assert all(c.train.epochs == 0 for c in cfgs.values())
        assert cfgs["v1"].tokenizer.kind == "char" and cfgs["v3"].model.final_dropout == 0.1
        assert cfgs["v6"].clean.preset == "seed-v6" and cfgs["v4"].model.rnn_cell == "lstm"
        assert len({c.data.max_docs for c in cfgs.values()}) == 1
