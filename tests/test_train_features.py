"""Trainer features: schedules (constant, reduce-on-plateau), gradient accumulation, early
stopping, checkpoint pruning (keep K), MoE metrics, and every shipped preset's tiny scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from brlm.config import ModelConfig, RunConfig, TrainConfig, list_presets, load_config
from brlm.io.logging import JSONLLogger, read_metrics
from brlm.models.registry import build_model
from brlm.runs.compare import RUN_COLUMNS, comparison_table
from brlm.train.loop import train
from brlm.train.optim import Plateau, lr_at
from brlm.verbs.run import preset_variants, variant_config

from .conftest import run_cli

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)


def _tokens(n=4000):
    rng = np.random.default_rng(0)
    base = np.tile(np.arange(50, dtype=np.uint16), n // 50)
    return np.where(rng.random(base.size) < 0.1, rng.integers(0, 300, base.size).astype(np.uint16), base)


def _run(tmp_path, model=TINY, vocab=300, **tc):
    t = _tokens()
    base = dict(batch_size=4, max_steps=8, stride=8, warmup_steps=1, eval_interval=4, eval_windows=4, log_interval=1, seed=3)
    cfg = RunConfig(model=model, train=TrainConfig(**{**base, **tc}))
    logger = JSONLLogger(tmp_path / "metrics.jsonl")
    try:
        summary = train(cfg, t[:3000] % vocab, t[3000:] % vocab, vocab, tmp_path / "ckpt", logger)
    finally:
        logger.close()
    return summary, read_metrics(tmp_path / "metrics.jsonl")


def test_constant_and_plateau_schedules():
    tc = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, schedule="constant")
    assert lr_at(5, tc) == pytest.approx(6e-4) and lr_at(50, tc) == lr_at(99, tc) == 1e-3
    tp = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=100, schedule="plateau")
    p = Plateau(factor=0.5, patience=2)
    assert [p.step(v) for v in (3.0, 2.9, 2.95, 2.91, 2.92, 2.93)] == [False, False, False, True, False, True]
    assert p.scale == 0.25 and lr_at(50, tp, p.scale) == pytest.approx(2.5e-4)
    assert lr_at(50, tp, 0.01) == pytest.approx(1e-4)  # never below min_lr
    q = Plateau(0.5, 2)
    q.load_state_dict(p.state_dict())
    assert q.state_dict() == p.state_dict()


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    # fp32: bf16 autocast ("auto" on AMX CPUs) rounds the two sums differently.
    _, big = _run(tmp_path / "big", batch_size=8, dtype="fp32")
    _, acc = _run(tmp_path / "acc", batch_size=4, grad_accum=2, dtype="fp32")
    lb = [r["train_loss"] for r in big if "train_loss" in r]
    la = [r["train_loss"] for r in acc if "train_loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)
    assert [r["tokens"] for r in big if "train_loss" in r] == [r["tokens"] for r in acc if "train_loss" in r]


def test_early_stopping_and_keep_k(tmp_path):
    # lr so high that validation gets worse: stop after 2 validations without improvement.
    s, m = _run(tmp_path, max_steps=60, lr=0.5, min_lr=0.5, schedule="constant", eval_interval=2,
                early_stop_patience=2, save_interval=2, keep_checkpoints=2, grad_clip=0.0)
    assert s["stopped_early"] and s["steps"] < 60
    vals = [r for r in m if "val_loss" in r]
    best = min(r["val_loss"] for r in vals)
    assert all(r["val_loss"] >= best for r in vals[-2:])  # the last two did not improve
    ckpt = tmp_path / "ckpt"
    kept = sorted(int(p.stem.split("_")[1]) for p in ckpt.glob("model_*.safetensors"))
    pointers = json.loads((ckpt / "latest.json").read_text())
    assert pointers["last"] == s["steps"] and pointers["best"] == s["best_step"]
    assert set(kept) == {pointers["best"], s["steps"], s["steps"] - 2}


def test_moe_training_logs_aux_losses_and_expert_load(tmp_path):
    moe = ModelConfig(arch="moe", n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, expert_hidden=32)
    s, m = _run(tmp_path, model=moe, max_steps=3, peak_tflops=1.0)
    row = next(r for r in m if "train_loss" in r)
    assert {"moe_balance", "moe_z", "expert_load", "mfu"} <= set(row)
    assert len(row["expert_load"]) == 2 and sum(row["expert_load"][0]) == pytest.approx(1.0, abs=1e-3)
    assert 0 < row["mfu"] < 1 and s["flops_per_token"] > 0


def _tiny_presets():
    out = []
    from brlm.stages import preset_workflow

    for name in list_presets():
        if preset_workflow(name) != "pretrain":
            continue  # post-training presets train HF models: tests/test_posttrain_*
        variants = list(preset_variants(name)) or [None]
        for v in variants:
            out.append((name, v))
    return out


@pytest.mark.parametrize("preset,variant", _tiny_presets())
def test_every_preset_tiny_scale_builds_and_trains(preset, variant, tmp_path):
    cfg = variant_config(preset, variant, "tiny", []) if variant else load_config(preset=preset, scale="tiny")
    vocab = cfg.tokenizer.vocab_size
    model = build_model(cfg.model, vocab)
    assert model.num_params() < 1_000_000, "a tiny scale must stay tiny"
    t = _tokens(3000) % vocab
    cfg.train.max_steps, cfg.train.eval_interval = 2, 2
    logger = JSONLLogger(tmp_path / "m.jsonl")
    s = train(cfg, t[:2400], t[2400:], vocab, tmp_path / "ckpt", logger)
    logger.close()
    assert s["steps"] == 2 and np.isfinite(s["final_val_loss"])


def test_paper_scales_follow_the_seeds():
    moe = variant_config("gpt2-vs-moe", "moe", "paper", [])
    assert (moe.model.n_embd, moe.model.block_size, moe.model.n_layer, moe.model.n_head) == (512, 256, 8, 8)
    assert (moe.model.n_kv_head, moe.model.n_expert, moe.model.expert_top_k, moe.model.expert_hidden) == (4, 4, 2, 1024)
    assert moe.model.qk_norm and moe.train.stride == 128
    gpt2 = variant_config("gpt2-vs-moe", "gpt2", "paper", ["train.lr=1e-4"])
    assert gpt2.model.arch == "gpt" and gpt2.model.mlp_hidden == 2048 and gpt2.train.lr == 1e-4
    v1 = load_config(preset="v1", scale="paper")
    assert (v1.model.n_embd, v1.model.rnn_hidden, v1.model.block_size, v1.train.stride) == (128, 256, 160, 1)
    v3 = load_config(preset="v3", scale="paper")
    assert v3.model.n_layer == 2 and v3.model.rnn_layernorm and v3.model.rnn_hidden == 512
    assert load_config(preset="v2").train.schedule == "plateau"
    assert set(preset_variants("v4")) == {"gru", "lstm"}
    v6 = load_config(preset="v6")
    assert (v6.tokenizer.vocab_size, v6.model.block_size, v6.train.stride) == (16000, 256, 96)


def test_comparison_table_format():
    """One table for `brlm compare` and multi-run presets (runs/compare.py); missing or NaN figures are '—'."""
    rows = [{"run": "a", "arch": "gpt", "tokenizer": "bpe 400", "params_m": 1.5, "bytes_seen": 1000, "loss": 3.0,
             "perplexity": 20.08, "bits_per_byte": 1.2, "bits_per_char": float("nan"), "tokens_per_s": 1234.0,
             "peak_memory_mb": 512.0, "wall_time_s": 10.0, "guardrails_passed": False, "tokenizer_sha256": "ab" * 32}]
    md, _csv, _warn = comparison_table(rows, RUN_COLUMNS)
    assert "| a | gpt | bpe 400 | 1.50 | 1,000 | 1.2000 | — | 3.0000 | 20.08 | — | — | 1,234 | 512 | 10.0 | — | FAIL |" in md


def test_cli_multi_run_preset_prints_comparison(tmp_path):
    proc = run_cli("run", "gpt2-vs-moe", "--scale", "tiny", "--runs-dir", str(tmp_path), "--set", "train.max_steps=3",
                   "--set", "sample.max_new_tokens=2", "--set", "eval.max_windows=4", check=True)
    parent = tmp_path / "gpt2-vs-moe-tiny"
    for v in ("gpt2", "moe"):
        assert json.loads((parent / v / "run.json").read_text())["status"] == "completed"
        assert yaml.safe_load((parent / v / "config.yaml").read_text())["model"]["arch"] == ("gpt" if v == "gpt2" else "moe")
    assert "| gpt2 | gpt |" in proc.stdout and "| moe | moe |" in proc.stdout
    rows = json.loads((parent / "comparison.json").read_text())
    assert [r["run"] for r in rows] == ["gpt2", "moe"] and all(r["tokens_per_s"] > 0 for r in rows)
    assert (parent / "comparison.md").is_file()


def test_bad_variant_is_a_one_line_error(tmp_path):
    proc = run_cli("run", "gpt2-vs-moe", "--variant", "nope", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "--variant 'nope'" in proc.stderr


def test_mfu_by_default_uses_the_measured_cpu_peak(tmp_path, monkeypatch):
    from brlm.compute.flops import flops_per_token

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "cache" / "brlm"))  # a fresh per-machine peak cache
    s, m = _run(tmp_path, max_steps=2)
    row = next(r for r in m if "train_loss" in r)
    assert s["peak_flops_per_s"] > 1e8 and 0 < row["mfu"] < 1
    assert s["flops_per_token"] == flops_per_token(TINY, 300)  # one FLOPs count for trainer and ledger
    assert (tmp_path / "cache" / "brlm" / "cpu_peak.json").is_file()


def test_a_stale_low_cpu_peak_is_measured_again(tmp_path, monkeypatch):
    # A peak cached while the machine was busy is too low; an achieved rate above it forces a
    # new measurement, and the cache keeps the best figure ever measured.
    import json

    from brlm.compute.peak import cpu_peak_flops

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "brlm"))  # the one cache variable (a user's own is ignored here)
    first = cpu_peak_flops("fp32", 1)
    path = tmp_path / "brlm" / "cpu_peak.json"
    cache = json.loads(path.read_text())
    key = next(iter(cache))
    cache[key]["peak_flops_per_s"] = 1.0  # stale, absurdly low
    path.write_text(json.dumps(cache))
    assert cpu_peak_flops("fp32", 1)["peak_flops_per_s"] == 1.0  # trusted while nothing contradicts it
    again = cpu_peak_flops("fp32", 1, at_least=1e6)
    assert again["cached"] is False and again["peak_flops_per_s"] > 1e6
    assert json.loads(path.read_text())[key]["peak_flops_per_s"] == again["peak_flops_per_s"]
    assert first["peak_flops_per_s"] > 1e6


_RSS_AFTER_FREE = """
import sys, torch
from brlm.io.machine import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()["kept"]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
x = torch.ones(64 * 2**20)  # 256 MiB, touched
before = rss()
del x
print((before - rss()) / 2**20)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's allocator only")
def test_kept_allocator_reuses_freed_memory_instead_of_returning_it(tmp_path):
    """With glibc's defaults a freed 256 MiB tensor goes back to the OS (and faults in again next
    step); after keep_freed_memory it stays mapped for the next allocation."""
    import subprocess
    import sys

    def released(mode):
        out = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    assert released("system") > 200
    assert released("keep") < 50


def test_trainer_records_the_cpu_allocator_and_refuses_a_bad_value(tmp_path):
    s, _ = _run(tmp_path / "system", max_steps=1, cpu_allocator="system")
    assert s["cpu_allocator"] == {"kept": False, "reason": "asked for"}
    s, _ = _run(tmp_path / "keep", max_steps=1)
    assert s["cpu_allocator"]["allocator"] in ("glibc", "system", "unknown") and "kept" in s["cpu_allocator"]
    assert s["attention_plan"]["form"] in ("fused", "plain") and s["attention_plan"]["dtype"] in ("float32", "bfloat16")
    with pytest.raises(Exception, match="train.cpu_allocator"):
        TrainConfig(cpu_allocator="jemalloc")
