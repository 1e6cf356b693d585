"""Exact resume: a run killed with SIGKILL and restarted with `--resume` ends with the same
weights and losses as an unbroken run; a corrupted checkpoint is reported and skipped; SIGTERM
saves a checkpoint before exiting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brlm.config import ModelConfig, RunConfig, TrainConfig
from brlm.io.logging import JSONLLogger, read_metrics
from brlm.models.checkpoint import latest_good_checkpoint, verify_checkpoint
from brlm.train.loop import train

from .conftest import run_cli

# Dropout on, so the resumed run must also restore the RNG to match.
TRAIN_SETS = ["--set", "train.max_steps=120", "--set", "train.save_interval=10", "--set", "train.eval_interval=40",
              "--set", "train.log_interval=5", "--set", "model.dropout=0.1", "--set", "train.keep_checkpoints=2",
              "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A run folder with prepared data and a tokenizer (demo preset, tiny scale)."""
    run = tmp_path_factory.mktemp("resume") / "base"
    run_cli("data", "prepare", "--run", str(run), "--preset", "demo", "--scale", "tiny", check=True)
    run_cli("tokenizer", "train", "--run", str(run), check=True)
    return run


def _copy(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest)
    return dest


def _popen(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "brlm", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 120) -> None:
    folder, pattern = path_glob
    t0 = time.time()
    while time.time() - t0 < timeout:
        if folder.is_dir() and list(folder.glob(pattern)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {pattern} appeared:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    raise AssertionError(f"{pattern} did not appear in {timeout}s")


def _train_losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]


def test_sigkill_then_resume_matches_unbroken_run(prepared, tmp_path):
    a = _copy(prepared, tmp_path / "unbroken")
    b = _copy(prepared, tmp_path / "killed")
    run_cli("train", "--run", str(a), *TRAIN_SETS, check=True)

    proc = _popen("train", "--run", str(b), *TRAIN_SETS)
    _wait_for((b / "checkpoints", "meta_000030.json"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (b / "checkpoints" / "meta_000120.json").exists(), "killed too late: the run had finished"
    assert json.loads((b / "run.json").read_text())["status"] == "running"  # nobody got to say otherwise

    out = run_cli("train", "--run", str(b), "--resume", check=True)  # the saved config.yaml has the --set values
    assert "resume: continuing from the checkpoint at step" in out.stderr

    wa = load_file(str(a / "checkpoints" / "model_000120.safetensors"))
    wb = load_file(str(b / "checkpoints" / "model_000120.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bit-for-bit
    sa, sb = (json.loads((r / "train.json").read_text()) for r in (a, b))
    assert sa["final_train_loss"] == sb["final_train_loss"] and sa["final_val_loss"] == sb["final_val_loss"]
    assert _train_losses(a) == _train_losses(b)  # the whole logged trajectory, no duplicated rows
    assert sa["tokens_seen"] == sb["tokens_seen"]
    # Only the best and the 2 most recent checkpoints are kept.
    kept = sorted(int(p.stem.split("_")[1]) for p in (a / "checkpoints").glob("model_*.safetensors"))
    assert kept[-2:] == [110, 120] and len(kept) <= 3


def test_sigterm_saves_a_checkpoint_and_exits(prepared, tmp_path):
    run = _copy(prepared, tmp_path / "term")
    proc = _popen("train", "--run", str(run), "--set", "train.max_steps=100000", "--set", "train.eval_interval=100000",
                  "--set", "train.log_interval=1")
    _wait_for((run, "metrics.jsonl"), proc)
    t0 = time.time()
    while not _train_losses(run) and time.time() - t0 < 60:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "continue with --resume" in err
    pointers = json.loads((run / "checkpoints" / "latest.json").read_text())
    meta = verify_checkpoint(run / "checkpoints", pointers["last"])
    assert meta["train_state"]["loop"]["step"] == pointers["last"] > 0
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


# In-process: corrupted-checkpoint fallback (fast, no subprocess).

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.1)


def _tokens():
    rng = np.random.default_rng(0)
    base = np.tile(np.arange(50, dtype=np.uint16), 60)
    return np.where(rng.random(base.size) < 0.1, rng.integers(0, 300, base.size).astype(np.uint16), base)


def _train(folder: Path, resume: bool = False, **overrides):
    tokens = _tokens()
    tc = dict(batch_size=4, max_steps=20, stride=8, warmup_steps=2, eval_interval=5, eval_windows=4, log_interval=1,
              seed=5, save_interval=5, keep_checkpoints=3)
    cfg = RunConfig(model=TINY, train=TrainConfig(**{**tc, **overrides}))
    logger = JSONLLogger(folder / "metrics.jsonl", append=resume)
    try:
        return train(cfg, tokens[:2500], tokens[2500:], 300, folder / "ckpt", logger, resume=resume)
    finally:
        logger.close()


def test_corrupted_checkpoint_is_reported_and_the_previous_one_used(tmp_path, capsys):
    ref = _train(tmp_path / "ref")
    run = tmp_path / "run"
    _train(run)
    ckpt = run / "ckpt"
    # Truncate the newest checkpoint's weights, as a disk-full or a kill during a copy would.
    w = ckpt / "model_000020.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    capsys.readouterr()
    step, _ = latest_good_checkpoint(ckpt)
    assert step == 15
    assert "model_000020.safetensors: corrupted or truncated" in capsys.readouterr().err
    # A meta that is not JSON at all is skipped too.
    (ckpt / "meta_000015.json").write_text("{not json")
    assert latest_good_checkpoint(ckpt)[0] == 10
    # Resuming from step 10 reaches the unbroken run's final weights.
    summary = _train(run, resume=True)
    assert summary["final_train_loss"] == ref["final_train_loss"]
    assert summary["final_val_loss"] == ref["final_val_loss"]
    a = load_file(str(tmp_path / "ref" / "ckpt" / "model_000020.safetensors"))
    b = load_file(str(ckpt / "model_000020.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
