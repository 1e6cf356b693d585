"""DDP on CPU (gloo): `torchrun --nproc_per_node 2 -m brlm train` with batch_size B per process
follows the same loss trajectory as one process with batch_size 2B (the same global batch).

Tolerance: 1e-4 relative per logged loss. Gradients are averaged by an all-reduce instead of one
mean over the whole batch, so sums happen in a different order; in float32 over 12 steps that
moves losses by ~1e-6, far inside the tolerance, while a wrong data slice or a missing all-reduce
moves them by >1e-2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from brlm.io.logging import read_metrics

from .conftest import run_cli

COMMON = ["--set", "train.max_steps=12", "--set", "train.log_interval=1", "--set", "train.eval_interval=6",
          "--set", "model.dropout=0.0", "--set", "train.threads=1", "--set", "train.dtype=fp32"]  # tolerance is for fp32


def _losses(run):
    return [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    base = tmp_path / "base"
    run_cli("data", "prepare", "--run", str(base), "--preset", "demo", "--scale", "tiny", check=True)
    run_cli("tokenizer", "train", "--run", str(base), check=True)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    shutil.copytree(base, single)
    shutil.copytree(base, ddp)

    run_cli("train", "--run", str(single), *COMMON, "--set", "train.batch_size=8", check=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "brlm", "train",
         "--run-dir", str(ddp), *COMMON, "--set", "train.batch_size=4"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(ddp)
    assert len(a) == len(b) == 12
    assert b == pytest.approx(a, rel=1e-4)
    sa, sb = (json.loads((r / "train.json").read_text()) for r in (single, ddp))
    assert sb["processes"] == 2 and sa["processes"] == 1
    assert sb["tokens_seen"] == sa["tokens_seen"]  # same global batch
    assert sb["final_val_loss"] == pytest.approx(sa["final_val_loss"], rel=1e-4)
    # Only rank 0 wrote: one progress line per logged step, not two.
    assert proc.stderr.count("step     12/12 | loss") == 1


def _torchrun(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "brlm", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_whole_pipeline_under_torchrun(tmp_path):
    """`brlm run` under torchrun: rank 0 prepares data and tokenizer, both ranks train, rank 0
    evaluates, samples and writes the report; one report path on stdout."""
    proc = _torchrun("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "d",
                     "--set", "train.max_steps=6", "--set", "train.eval_interval=3", "--set", "train.threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "d"
    assert json.loads((run / "train.json").read_text())["processes"] == 2
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for name in ("eval.json", "cost.json", "samples.json", "guardrails.json", "report.md"):
        assert (run / name).exists(), name
    assert proc.stdout.count("report.md") == 1


def test_rank0_failure_before_training_stops_every_rank(tmp_path):
    missing = tmp_path / "nope.jsonl"
    proc = _torchrun("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "d",
                     "--set", f"data.source={missing}", timeout=300)
    assert proc.returncode != 0
    assert "nope.jsonl" in proc.stderr and "rank 0 failed before training" in proc.stderr


def test_mpi_ranks_and_the_single_process_accelerate_cpu_trap(monkeypatch, capsys):
    """Under mpirun (`accelerate launch --cpu --mpirun_hostfile …`) the MPI ranks become RANK /
    WORLD_SIZE / LOCAL_RANK; `accelerate launch --cpu --num_processes 2` without mpirun starts one
    process, which trains alone but says how to get two."""
    import brlm.train.distributed as d

    # adopt_mpi_env writes os.environ itself: give this test its own copy, so nothing leaks.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU",
              *(v for names in d._MPI_VARS.values() for v in names)):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert not d.is_ddp_env() and "RANK" not in os.environ  # MPI variables alone (no MASTER_ADDR): not a torch job
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert d.is_ddp_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    monkeypatch.setenv("RANK", "0")  # torchrun's own variables win
    assert not d.adopt_mpi_env() and os.environ["RANK"] == "0"

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setattr(d, "_warned_single", False)
    assert d.compute_init("cpu")[:4] == (False, 0, 0, 1)
    err = capsys.readouterr().err
    assert "started only this process" in err and "--multi_gpu" in err


def _resume_rank(rank: int, port: int, steps: tuple[int, int], out: str) -> None:
    import torch
    import torch.distributed as dist

    from brlm.errors import BrlmError
    from brlm.train.loop import same_checkpoint_everywhere

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        same_checkpoint_everywhere(steps[rank], torch.device("cpu"), "runs/x/checkpoints")
        msg = "ok"
    except BrlmError as e:
        msg = str(e)
    finally:
        dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        f.write(msg)


@pytest.mark.parametrize("steps,error", [((4, 4), None), ((4, 2), "step 2 and step 4"), ((-1, 6), "no checkpoint and step 6")])
def test_every_rank_must_resume_from_the_same_checkpoint(tmp_path, steps, error):
    """Ranks without a shared run folder find different checkpoints: each says so instead of
    resuming apart (FSDP would hang, DDP replicas would differ)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "msg")
    mp.spawn(_resume_rank, args=(port, steps, out), nprocs=2, join=True)
    msgs = [open(f"{out}.{r}").read() for r in (0, 1)]
    if error is None:
        assert msgs == ["ok", "ok"]
    else:
        assert msgs[0] == msgs[1] and error in msgs[0] and "shared file system" in msgs[0] and "\n" not in msgs[0]
