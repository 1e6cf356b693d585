"""The faults a new user hit (issue 15), each reproduced: a lock on the run folder, operating-system
errors as one line, `brlm run --resume`, the tokenizer hash, file modes, a rejected --set, the
`interrupted` status, corrupt checkpoints on --resume, one cache variable, one truncation
warning, the eval table, HTML in report.md, no flag prefixes; and the new training budgets."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brlm.cli import main
from brlm.io.run_folder import RunLock, RunPaths, live_status

from .conftest import SENTENCES, make_corpus_jsonl, run_cli

TINY = ["--preset", "demo", "--scale", "tiny"]


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture
def copy_run(tiny_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_run, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# -- 1. one writer per run folder ---------------------------------------------------------------

def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                               "since": "2025-01-01T00:00:00+00:00", "command": "brlm train --run r"}))
        proc = run_cli("data", "prepare", "--run", str(run), *TINY)
        _one_line_error(proc, f"in use by pid {holder.pid}", socket.gethostname(), "since 2025-01-01", "brlm train")
        assert not (run / "data").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next writer takes it over
    proc = run_cli("data", "prepare", "--run", str(run), *TINY, check=True)
    assert "taking over a stale lock" in proc.stderr and not (run / ".lock").exists()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    paths = RunPaths(tmp_path / "r")
    with RunLock(paths, "a"):
        with RunLock(paths, "b"):  # a verb inside `brlm run` in the same process
            pass
        assert (paths.root / ".lock").is_file()
    assert not (paths.root / ".lock").exists()


# -- 2. operating-system errors: one line, exit 2 -----------------------------------------------

def test_run_folder_that_is_a_file(tmp_path):
    f = tmp_path / "ocupado"
    f.write_text("x")
    _one_line_error(run_cli("run", "demo", "--scale", "tiny", "--run", str(f)), "not a folder")


def test_read_only_run_folder_is_found_before_any_work(tmp_path, monkeypatch, capsys):
    import brlm.io.run_folder as rf

    real_open = os.open

    def readonly(path, flags, *a):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(rf.os, "open", readonly)  # (as root, chmod would not stop us)
    assert main(["data", "prepare", "--run", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "read-only" in err and not (tmp_path / "r" / "data").exists()


def test_disk_full_is_one_line(tmp_path, monkeypatch, capsys):
    import brlm.verbs.report as verb

    def full(_):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report.md"))

    monkeypatch.setattr(verb, "render_report", full)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"brlm report: error: {tmp_path / 'report.md'}: No space left on device"


def test_broken_pipe_is_one_line_not_a_traceback():
    r, w = os.pipe()
    os.close(r)  # the reader (`| head`) is already gone
    try:
        proc = subprocess.run([sys.executable, "-m", "brlm", "estimate", "fits", "llama-3.1-8b", "--gpu", "rtx4090", "--json"],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "broken pipe" in proc.stderr


def test_refused_pickle_and_damaged_latest_json(copy_run):
    ckpt = copy_run / "checkpoints"
    step = json.loads((ckpt / "latest.json").read_text())["last"]
    evil = ckpt / f"train_{step:06d}.pt"
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil.write_bytes(pickle.dumps(Evil()))
    meta_path = ckpt / f"meta_{step:06d}.json"
    meta = json.loads(meta_path.read_text())
    from brlm.io.files import file_sha256

    meta["files"][evil.name] = file_sha256(evil)  # vouched for, so only the loader can refuse it
    meta_path.write_text(json.dumps(meta))
    proc = run_cli("train", "--run", str(copy_run), "--resume")
    _one_line_error(proc, evil.name, "refused to unpickle")
    assert "pwned" not in proc.stdout
    (ckpt / "latest.json").write_text("{garbage")
    _one_line_error(run_cli("eval", "intrinsic", str(copy_run)), "latest.json: damaged")


def test_report_tolerates_a_partial_last_metrics_line(copy_run):
    with open(copy_run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 99, "train_lo')  # the process died mid-line
    run_cli("report", str(copy_run), check=True)


# -- 3. brlm run --resume: training continues, then the stages still missing --------------------

def test_run_resume_continues_training_then_the_missing_stages(tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "brlm", "run", "demo", "--scale", "tiny", "--run", str(run),
           "--set", "train.max_steps=1000", "--set", "train.save_interval=2", "--set", "train.eval_interval=500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def saved_steps() -> list[int]:
        return [int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("meta_*.json")]

    try:
        # Kill as soon as any checkpoint past step 4 exists (older ones are pruned as training goes,
        # so wait for "some step >= 4", not for a particular one), while training still runs.
        deadline = time.time() + 300
        while proc.poll() is None and not any(s >= 4 for s in saved_steps()) and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be interrupted; raise train.max_steps"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "running" and live_status(record) == "interrupted"  # 5: the pid is gone
    listed = json.loads(run_cli("runs", "list", "--runs-dir", str(tmp_path), "--json", check=True).stdout)
    assert listed[0]["status"] == "interrupted"
    assert not (run / "eval.json").exists()
    res = run_cli("run", "--resume", "--run", str(run), check=True)
    assert "resume: continuing from the checkpoint at step" in res.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed"] == 1
    for name in ("eval.json", "samples.json", "guardrails.json", "cost.json", "report.md"):
        assert (run / name).is_file(), name
    assert json.loads((run / "train.json").read_text())["steps"] == 1000
    from brlm.io.logging import read_metrics

    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one unbroken log, not a restart


def test_run_rejects_resume_with_new_settings(tmp_path):
    proc = run_cli("run", "--resume", "--run", str(tmp_path), "--set", "train.lr=1")
    assert proc.returncode == 2 and "--resume continues a run as its config.yaml says" in proc.stderr


def test_resume_with_every_checkpoint_corrupt_refuses(copy_run):
    ckpt = copy_run / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    for p in ckpt.glob("model_*.safetensors"):
        p.write_bytes(p.read_bytes()[:100])
    corrupted = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    proc = run_cli("train", "--run", str(copy_run), "--resume")
    _one_line_error(proc, "none verifies", "nothing was changed")
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == corrupted and set(corrupted) == set(before)
    _one_line_error(run_cli("run", "--resume", "--run", str(copy_run)), "none verifies")


# -- 4. the tokenizer's hash is checked when it is loaded ---------------------------------------

def test_swapped_tokenizer_is_refused(copy_run, tmp_path):
    from brlm.config import TokenizerConfig
    from brlm.tokenizers.spm import train_spm

    other = tmp_path / "other"
    train_spm([" ".join(SENTENCES)] * 20, TokenizerConfig(model_type="unigram", vocab_size=400), other, data_key="x")
    shutil.copy(other / "spm.model", copy_run / "tokenizer" / "spm.model")  # a valid model, not this run's
    _one_line_error(run_cli("eval", "intrinsic", str(copy_run)), "spm.model: SHA-256", "does not match")


# -- 5. the small ones -------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_honour_the_umask(tmp_path, umask, mode):
    run = tmp_path / "r"
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=30)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "-m", "brlm", "data", "prepare", "--run", str(run), "--source", str(src),
                    "--set", "data.min_doc_chars=50", "--set", "data.val_fraction=0.3"], env=env, check=True, capture_output=True,
                   preexec_fn=lambda: os.umask(umask))
    for name in ("config.yaml", "data/manifest.json", "data/train.jsonl"):
        assert (run / name).stat().st_mode & 0o777 == mode, name


def test_a_rejected_set_is_not_kept_in_config_yaml(tmp_path):
    run = tmp_path / "r"
    run_cli("data", "prepare", "--run", str(run), *TINY, check=True)
    before = (run / "config.yaml").read_text()
    proc = run_cli("tokenizer", "train", "--run", str(run), "--set", "tokenizer.vocab_size=900000")
    _one_line_error(proc, "tokenizer.vocab_size=900000")
    assert (run / "config.yaml").read_text() == before
    run_cli("tokenizer", "train", "--run", str(run), check=True)  # a later command does not trip on it


def test_one_cache_variable(tmp_path, monkeypatch, capsys):
    from brlm.data.catalogue import cache_root
    from brlm.io import machine

    monkeypatch.delenv("BRLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BRLM_CACHE", str(tmp_path / "old"))
    assert cache_root() == tmp_path / "xdg" / "brlm"  # the old name is not read (a warning says so)
    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "one"))
    assert cache_root() == machine.cache_dir() == tmp_path / "one"
    from brlm.compute.peak import PEAK_CACHE

    assert machine.MachineCache(PEAK_CACHE).path == tmp_path / "one" / "cpu_peak.json"


def test_prompt_truncation_is_said_once_with_a_count(capsys):
    import torch

    from brlm.config import ModelConfig, SampleConfig
    from brlm.eval.samples import generate_samples
    from brlm.models.registry import build_model

    class Tok:
        eos_id = 2

        def encode(self, text):
            return [5 + (ord(c) % 30) for c in text]

        def decode(self, ids):
            return "x" * len(ids)

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, dropout=0.0), 40)
    prompts = ["um prompt bem mais longo que o contexto"] * 3 + ["ok"]
    rows = generate_samples(model, Tok(), prompts, SampleConfig(max_new_tokens=2), seeds=[1, 2])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "6 of 8" in warnings[0] and sum("warning" in r for r in rows) == 6


def test_eval_intrinsic_text_table_and_json(tiny_run, tmp_path):
    src = make_corpus_jsonl(tmp_path / "outro.jsonl", n_docs=12)
    proc = run_cli("eval", "intrinsic", str(tiny_run), "--text", str(src), "--text-field", "text", "--json", check=True)
    obj = json.loads(proc.stdout)  # one object, nothing else on stdout
    assert {"bits_per_byte", "bits_per_char", "loss", "tokens", "bytes"} <= set(obj) and obj["bits_per_byte"] > 0
    written = json.loads((tiny_run / "eval_text.json").read_text())
    assert written["text_source"] == str(src) and written["documents"] == 12 and written["bits_per_byte"] == obj["bits_per_byte"]
    assert obj["file"] == str(tiny_run / "eval_text.json")
    table = run_cli("eval", "intrinsic", str(tiny_run), "--text", str(src), check=True).stdout
    assert table.startswith("| | bits/byte") and len(table.splitlines()) < 10
    bad = run_cli("eval", "intrinsic", str(tiny_run), "--text", str(src), "--text-field", "corpo")
    assert bad.returncode == 2 and "corpo" in bad.stderr


def test_report_md_escapes_raw_html():
    from brlm.runs.report import Report

    r = Report("t")
    r.sample("<b>Olá</b>", "<script>alert(1)</script>", "temperatura 0.8")
    r.table(["categoria"], [["<img src=x onerror=alert(1)>"]])
    md = r.markdown()
    assert "<script>" not in md and "&lt;script&gt;" in md and "<img" not in md


def test_no_flag_prefixes_and_run_takes_run_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "demo", "--runs-d", str(tmp_path)])  # once read as --runs-dir
    assert e.value.code == 2 and "--runs-d" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--resu"])


# -- budgets -----------------------------------------------------------------------------------

def test_epochs_and_byte_budget_set_the_steps():
    import dataclasses

    from brlm.config import load_config
    from brlm.errors import ConfigError
    from brlm.stages.pretrain import with_byte_budget
    from brlm.train.loop import steps_for_epochs

    assert steps_for_epochs(2, 1000, 64) == math.ceil(2000 / 64)
    cfg = load_config(preset="demo", scale="tiny", overrides=["train.budget_bytes=100000"])  # batch 8, block 32
    assert with_byte_budget(cfg, 1.0).train.max_steps == math.ceil(100000 / 256)  # a char: ~1 byte per token
    assert with_byte_budget(cfg, 4.0).train.max_steps == math.ceil(100000 / 1024)  # a subword: ~4
    with pytest.raises(ConfigError, match="train.epochs"):
        dataclasses.replace(cfg.train, epochs=1.0)
    # The literal token budget, for whoever wants equal tokens rather than equal text.
    cfg = load_config(preset="demo", scale="tiny", overrides=["train.budget_tokens=100000"])
    assert with_byte_budget(cfg, 1.0).train.max_steps == with_byte_budget(cfg, 4.0).train.max_steps == math.ceil(100000 / 256)
    with pytest.raises(ConfigError, match=r"train.budget_tokens.*0 when train.budget_bytes is set"):
        dataclasses.replace(cfg.train, budget_bytes=5)


def test_training_for_epochs(tmp_path):
    import numpy as np

    from brlm.config import ModelConfig, RunConfig, TrainConfig
    from brlm.io.logging import JSONLLogger
    from brlm.train.loop import train

    t = (np.arange(1200) % 50).astype(np.uint16)
    cfg = RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.0),
                    train=TrainConfig(batch_size=4, epochs=1.5, stride=8, warmup_steps=0, eval_interval=50, eval_windows=2,
                                      label_smoothing=0.1))
    logger = JSONLLogger(tmp_path / "m.jsonl")
    s = train(cfg, t[:1000], t[1000:], 50, tmp_path / "ck", logger)
    logger.close()
    windows = (1000 - 17) // 8 + 1
    assert s["steps"] == s["max_steps"] == math.ceil(1.5 * windows / 4) and s["epochs"] > 1.0


# -- the ladder --------------------------------------------------------------------------------

def test_ladder_tiny_prints_one_table_with_a_chart(tmp_path):
    proc = run_cli("run", "ladder", "--scale", "tiny", "--run", str(tmp_path / "ladder"), "--set", "data.source=builtin:demo",
                   check=True)
    parent = tmp_path / "ladder"
    rows = json.loads((parent / "comparison.json").read_text())
    assert [r["run"] for r in rows] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    assert all(r["status"] == "completed" and r["bits_per_byte"] > 0 and r["bits_per_char"] > 0 for r in rows)
    assert [r["tokenizer"].split()[0] for r in rows] == ["char"] * 3 + ["bpe", "bpe", "unigram"]
    seen = [r["bytes_seen"] for r in rows]  # the same budget in bytes, to within one step each
    assert min(seen) >= 6000 and max(seen) < 6000 + 32 * 8 * 5
    assert "| v1 | rnn | char" in proc.stdout and "bits/byte" in proc.stdout
    assert (parent / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    md = (parent / "comparison.md").read_text()
    assert "comparison.png" in md and "same bytes of training text" in md
    assert (parent / "comparison.csv").read_text().count("\n") == 7


@pytest.mark.skipif(not Path("../shared/data/fakebr/news.jsonl.gz").is_file(), reason="Fake.br not in ../shared/data")
def test_ladder_picks_fakebr_when_present():
    from brlm.verbs.run import pick_corpus

    overrides, label = pick_corpus("ladder", [])
    assert label == "Fake.br" and overrides == ["data.source=../shared/data/fakebr/news.jsonl.gz"]
    assert pick_corpus("ladder", ["data.source=x.jsonl"]) == ([], None)
