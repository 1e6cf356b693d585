"""`brlm finetune` end to end through the CLI on a tiny exported base: SFT with QLoRA lowers the
response-only validation perplexity and writes the run folder; an adapter loads with `--adapter`;
a run killed with SIGKILL resumes to the same weights and losses; gradient accumulation and two
processes (gloo; torchrun and `accelerate launch`) give the losses of one big batch, also sharded with
FSDP2 (LoRA, full, DPO) and resumed after SIGKILL; DPO; fit check and bad inputs as one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from brlm.io.logging import read_metrics
from tests.conftest import run_cli
from tests.posttrain_helpers import make_hf_base, write_jsonl

pytest.importorskip("peft", reason="post-training needs peft (pip install 'brlm[hf]')")
pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'brlm[hf]')")

FAST = ["--set", "train.threads=1", "--set", "finetune.seq_len=128", "--set", "train.batch_size=4", "--set", "train.grad_accum=2",
        "--set", "sample.max_new_tokens=6", "--set", "eval.max_rows=24", "--set", "pairs.max_train=120"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_hf_base(tmp_path_factory.mktemp("pt") / "base")


@pytest.fixture(scope="module")
def sft_run(base, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "sft"
    proc = run_cli("finetune", "sft", "--base", str(base), "--scale", "tiny", "--run", str(run), *FAST,
                   "--set", "train.max_steps=16", "--set", "train.eval_interval=8", "--set", "train.save_interval=8", check=True)
    return run, proc


def _losses(run: Path) -> list[float]:
    return [r["train_loss"] for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]


def test_sft_qlora_end_to_end(sft_run):
    run, proc = sft_run
    for name in ("config.yaml", "run.json", "metrics.jsonl", "train.json", "cost.json", "eval.json", "samples.json",
                 "report.md", "report.html", "adapter/adapter_model.safetensors", "adapter/brlm_adapter.json", "data/manifest.json"):
        assert (run / name).exists(), name
    ev = json.loads((run / "eval.json").read_text())
    assert ev["task"] == "sft" and ev["adapted"]["perplexity"] < ev["base"]["perplexity"]
    tr = json.loads((run / "train.json").read_text())
    assert tr["method"] == "qlora" and tr["fused_loss"] and tr["steps"] == 16 and tr["tokens_per_s"] > 0
    assert tr["trainable_params"] < tr["n_params"] / 4
    cost = json.loads((run / "cost.json").read_text())
    assert cost["flops_per_token"] > 0 and cost["total_flops"] > 0 and "estimated_cost_usd" in cost
    base = json.loads((run / "base.json").read_text())
    assert base["fit"]["fits"] and base["fit"]["estimate"]["method"] == "qlora"
    cfg = (run / "config.yaml").read_text()
    assert "finetune:" in cfg and "model:" not in cfg and "tokenizer:" not in cfg  # only post-training keys
    assert "tok/s" in proc.stderr and "ETA" in proc.stderr
    assert "val ppl" in proc.stdout
    report = (run / "report.md").read_text()
    assert "Base versus adaptado" in report and "perplexidade só das respostas" in report
    samples = json.loads((run / "samples.json").read_text())
    assert {s["model"] for s in samples} == {"base", "adapted"}


def test_adapter_loads_in_sample_and_eval_and_merge(sft_run, base, tmp_path):
    run, _ = sft_run
    from brlm.infer.load import load_model

    lm = load_model(base, adapter=run / "adapter")
    assert lm.meta["adapter"].endswith("adapter")
    same = load_model(run)  # a post-training run: its base + adapter
    ids = lm.tokenizer.encode("A capital do Paraná")
    import torch

    with torch.no_grad():
        assert torch.allclose(lm.model(torch.tensor([ids]))[0], same.model(torch.tensor([ids]))[0])
    proc = run_cli("sample", str(base), "--adapter", str(run), "--chat", "--prompt", "Qual é a capital do Paraná?",
                   "--max-new-tokens", "4", "--temperature", "0", check=True)
    assert "<|usuario|>" in proc.stdout
    other = make_hf_base(tmp_path / "other", seed=3)
    bad = run_cli("sample", str(other), "--adapter", str(run / "adapter"), "--prompt", "Oi", "--max-new-tokens", "2")
    errors = [line for line in bad.stderr.splitlines() if line.startswith("brlm sample: error")]
    assert bad.returncode == 2 and len(errors) == 1 and "trained on a different base" in errors[0]
    run_cli("finetune", "merge", str(run), check=True)
    assert (run / "merged" / "model.safetensors").is_file() and (run / "merged" / "tokenizer.json").is_file()


def test_resume_after_sigkill_is_exact(base, tmp_path):
    args = ["--base", str(base), "--scale", "tiny", *FAST, "--set", "train.max_steps=10", "--set", "train.save_interval=2",
            "--set", "train.eval_interval=5", "--set", "eval.adapted_only=true", "--set", "sample.num_samples=1"]
    whole = tmp_path / "whole"
    run_cli("finetune", "sft", "--run", str(whole), *args, check=True)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "brlm", "finetune", "sft", "--run", str(killed), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "meta_000006.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists()
    run_cli("finetune", "sft", "--run", str(killed), "--resume", check=True)
    a, b = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (whole, killed))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert _losses(killed) == _losses(whole) and len(_losses(whole)) == len([r for r in read_metrics(whole / "metrics.jsonl")
                                                                            if "train_loss" in r])
    va = [r["val_loss"] for r in read_metrics(whole / "metrics.jsonl") if "val_loss" in r]
    assert va == [r["val_loss"] for r in read_metrics(killed / "metrics.jsonl") if "val_loss" in r]


LORA = ["--method", "lora", "--set", "lora.dropout=0", "--set", "train.gradient_checkpointing=false",
        "--set", "train.max_steps=6", "--set", "train.log_interval=1", "--set", "train.eval_interval=4",
        "--set", "eval.adapted_only=true", "--set", "sample.num_samples=1", "--set", "sample.max_new_tokens=2"]
# 2 processes x batch 2 x accumulation 2 = the global batch of 8 rows; a checkpoint every 2 steps.
FSDP = ["--set", "train.parallel=fsdp", "--set", "train.batch_size=2", "--set", "train.grad_accum=2", "--set", "train.save_interval=2"]
ONE = ["--set", "train.batch_size=8", "--set", "train.grad_accum=1"]  # 1 process, the same global batch
ENV2 = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "brlm"]
# CPU: accelerate's --multi_gpu launcher is torchrun underneath (gloo without CUDA); its --cpu launcher
# starts one process and needs mpirun (--mpirun_hostfile) for more.
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "brlm"]


def _two(launcher: list[str], *args: str) -> subprocess.CompletedProcess:
    """A 2-process run (torchrun or accelerate launch; `--run-dir`, as torchrun takes `--run` for its `--run-path`)."""
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=ENV2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _lora(base: Path) -> list[str]:
    return ["--base", str(base), "--scale", "tiny", *FAST, *LORA]


@pytest.fixture(scope="module")
def lora_one(base, tmp_path_factory):
    """LoRA SFT in 1 process with batch 8: the reference the multi-process runs must match."""
    run = tmp_path_factory.mktemp("lora") / "one"
    run_cli("finetune", "sft", "--run", str(run), *_lora(base), *ONE, check=True)
    assert len(_losses(run)) == 6
    return run


@pytest.fixture(scope="module")
def lora_fsdp(base, tmp_path_factory):
    """The same LoRA SFT sharded with FSDP2 over 2 gloo processes, uninterrupted."""
    run = tmp_path_factory.mktemp("lora") / "fsdp"
    _two(TORCHRUN, "finetune", "sft", "--run-dir", str(run), *_lora(base), *FSDP)
    return run


def test_accumulation_and_two_processes_match_one_big_batch(base, lora_one, tmp_path):
    """Per-token loss over the whole step: batch 8 = batch 4 x accumulation 2 = 2 processes x batch 4
    (DDP over gloo, started by `accelerate launch`), step for step."""
    accum = tmp_path / "accum"
    run_cli("finetune", "sft", "--run", str(accum), *_lora(base), "--set", "train.batch_size=4", "--set", "train.grad_accum=2", check=True)
    ddp = tmp_path / "ddp"
    proc = _two(ACCELERATE, "finetune", "sft", "--run-dir", str(ddp), *_lora(base), "--set", "train.batch_size=4",
                "--set", "train.grad_accum=1")
    a, b, c = _losses(lora_one), _losses(accum), _losses(ddp)
    assert b == pytest.approx(a, rel=1e-5) and c == pytest.approx(a, rel=1e-5)
    ta, tc = (json.loads((r / "train.json").read_text()) for r in (lora_one, ddp))
    assert tc["processes"] == 2 and tc["tokens_seen"] == ta["tokens_seen"]
    assert proc.stderr.count("step      6/6 | loss") == 1  # only rank 0 prints


def test_fsdp_two_processes_match_one_process_and_save_a_full_adapter(base, lora_one, lora_fsdp):
    """train.parallel=fsdp (FSDP2 over gloo): 2 processes x batch 2 x accumulation 2 give the losses of
    1 process x batch 8, and the adapter rank 0 writes holds full tensors that load."""
    a, c = _losses(lora_one), _losses(lora_fsdp)
    print("1 process:", a, "| 2 processes FSDP:", c)
    assert c == pytest.approx(a, rel=1e-5)
    assert json.loads((lora_fsdp / "train.json").read_text())["processes"] == 2
    x, y = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (lora_one, lora_fsdp))
    assert x.keys() == y.keys() and all(x[k].shape == y[k].shape for k in x)
    assert max(float((x[k] - y[k]).abs().max()) for k in x) < 1e-4
    ck = load_file(str(lora_fsdp / "checkpoints" / "model_000006.safetensors"))  # resume checkpoints hold full tensors too
    assert {n.replace(".default", "") for n in ck} == set(y) and all(ck[n].shape == y[n.replace(".default", "")].shape for n in ck)
    from brlm.infer.load import load_model

    lm = load_model(base, adapter=lora_fsdp / "adapter")
    assert lm.meta["adapter"].endswith("adapter")


def test_fsdp_resume_after_sigkill_is_exact(base, lora_fsdp, tmp_path):
    """A 2-process FSDP run killed (SIGKILL to torchrun and both workers) after its step-2 checkpoint,
    then `--resume` under torchrun: the sharded adapter and optimizer state are loaded back from the
    full checkpoint, and losses, validation and adapter equal the uninterrupted FSDP run's."""
    psutil = pytest.importorskip("psutil")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*TORCHRUN, "finetune", "sft", "--run-dir", str(killed), *_lora(base), *FSDP],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV2)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "meta_000002.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    # torchrun starts each worker in its own session: kill the workers too, not only torchrun's group.
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(tree[1:], timeout=30)
    assert len(tree) >= 3 and not (killed / "adapter").exists()
    resumed = _two(TORCHRUN, "finetune", "sft", "--run-dir", str(killed), "--resume")
    m = re.search(r"resume: continuing from the checkpoint at step (\d+)", resumed.stderr)
    assert m and 2 <= int(m.group(1)) < 6, resumed.stderr[-2000:]  # a mid-run checkpoint: steps left to train
    assert _losses(killed) == pytest.approx(_losses(lora_fsdp), rel=1e-6) and len(_losses(killed)) == 6
    va, vb = ([r["val_loss"] for r in read_metrics(r / "metrics.jsonl") if "val_loss" in r] for r in (lora_fsdp, killed))
    assert vb == pytest.approx(va, rel=1e-6) and len(va) == 3
    x, y = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (lora_fsdp, killed))
    assert x.keys() == y.keys() and max(float((x[k] - y[k]).abs().max()) for k in x) < 1e-5


def test_fsdp_full_finetune_two_processes_match_one_process(base, tmp_path):
    """--method full with FSDP2: every weight sharded; 2 processes give 1 process's losses and weights."""
    common = [*_lora(base), "--method", "full", "--set", "train.max_steps=4"]
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    run_cli("finetune", "sft", "--run", str(one), *common, *ONE, check=True)
    _two(TORCHRUN, "finetune", "sft", "--run-dir", str(fsdp), *common, *FSDP)
    a, c = _losses(one), _losses(fsdp)
    assert len(a) == 4 and c == pytest.approx(a, rel=1e-5)
    ta, tc = (json.loads((r / "train.json").read_text()) for r in (one, fsdp))
    assert tc["processes"] == 2 and tc["method"] == "full" and tc["trainable_params"] == tc["n_params"] == ta["n_params"]
    x, y = (load_file(str(r / "model" / "model.safetensors")) for r in (one, fsdp))
    assert x.keys() == y.keys() and max(float((x[k] - y[k]).abs().max()) for k in x) < 1e-4


def test_fsdp_dpo_two_processes_match_one_process(base, tmp_path):
    """DPO (LoRA, the reference = the sharded model with its adapter off) with FSDP2: 2 processes give
    1 process's losses and reward accuracies."""
    common = ["--base", str(base), "--scale", "tiny", *FAST, *LORA, "--set", "train.max_steps=4"]
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    run_cli("finetune", "dpo", "--run", str(one), *common, *ONE, check=True)
    _two(TORCHRUN, "finetune", "dpo", "--run-dir", str(fsdp), *common, *FSDP)
    a, c = _losses(one), _losses(fsdp)
    assert len(a) == 4 and c == pytest.approx(a, rel=1e-5)
    assert a[0] == pytest.approx(0.693147, abs=1e-4)  # step 1: policy = reference
    acc = [[r["reward_accuracy"] for r in read_metrics(x / "metrics.jsonl") if "reward_accuracy" in r] for x in (one, fsdp)]
    assert acc[1] == pytest.approx(acc[0], abs=1e-9) and len(acc[0]) == 4
    assert json.loads((fsdp / "train.json").read_text())["processes"] == 2


def test_fsdp_config_and_qlora_refusal():
    from brlm.config.posttrain import PostTrainConfig
    from brlm.errors import ConfigError
    from brlm.posttrain.trainer import check_parallel

    assert PostTrainConfig().parallel == "ddp"
    with pytest.raises(ConfigError, match=r"train.parallel='zero3': expected 'ddp' or 'fsdp'"):
        PostTrainConfig(parallel="zero3")
    assert check_parallel("lora", "fsdp", 2) and check_parallel("full", "fsdp", 4)
    assert not check_parallel("qlora", "fsdp", 1) and not check_parallel("qlora", "ddp", 2)
    assert not check_parallel("lora", "ddp", 2) and not check_parallel("lora", "fsdp", 1)
    with pytest.raises(ConfigError, match="qlora") as e:
        check_parallel("qlora", "fsdp", 2)
    assert "\n" not in str(e.value) and "bitsandbytes" in str(e.value)


def test_dpo_runs_and_prefers_chosen(base, tmp_path):
    run = tmp_path / "dpo"
    run_cli("finetune", "dpo", "--base", str(base), "--scale", "tiny", "--run", str(run), *FAST, "--set", "train.max_steps=8",
            "--set", "train.eval_interval=4", "--set", "sample.num_samples=1", check=True)
    ev = json.loads((run / "eval.json").read_text())
    assert ev["task"] == "dpo"
    a, b = ev["adapted"], ev["base"]
    assert a["mean_logp_margin"] > b["mean_logp_margin"]  # DPO widens chosen - rejected against the reference
    assert b["loss"] == pytest.approx(0.693147, abs=1e-5) and a["loss"] < b["loss"] and a["reward_accuracy"] > 0.5
    rows = read_metrics(run / "metrics.jsonl")
    assert any("reward_accuracy" in r for r in rows) and any("val_reward_accuracy" in r for r in rows)


def test_bad_inputs_are_one_line_exit_2(base, tmp_path):
    def fails(*args: str) -> str:
        proc = run_cli("finetune", *args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [x for x in proc.stderr.splitlines() if x.startswith("brlm finetune")]
        assert len(lines) == 1, proc.stderr[-2000:]
        return lines[0]

    runs = ["--runs-dir", str(tmp_path)]
    assert "finetune.base is empty" in fails("sft", "--scale", "tiny", *runs)
    missing = write_jsonl(tmp_path / "m.jsonl", [{"instruction": "Oi"}])
    assert "m.jsonl:1: missing field 'output'" in fails("sft", "--base", str(base), "--data", str(missing), *runs)
    assert "meta-llama/Llama-3.1-8B" in fails("cpt", "--scale", "paper", "--set", "train.device=cpu", *runs)
    msg = fails("sft", "--base", str(base), "--scale", "tiny", "--set", "train.memory_limit_gb=0.000001", *runs)
    assert "needs ~" in msg and "GB" in msg and "train.fit_check=false" in msg
    assert "lora.target_modules" in fails("sft", "--base", str(base), "--scale", "tiny", "--set", "lora.target_modules=wq", *runs)
