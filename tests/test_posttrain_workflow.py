"""The post-training presets and workflows: the seeds' recipe in `paper`, every preset parsed with
its workflow's root config, `brlm run track2` end to end (over a given tiny base, so the test skips
pretraining) with the base-vs-adapted report."""

from __future__ import annotations

import json

import pytest

from brlm.config import list_presets, read_preset
from brlm.config.base import resolve
from brlm.config.posttrain import PosttrainConfig, Track2Config
from brlm.stages import preset_workflow, workflow_root
from tests.conftest import run_cli
from tests.posttrain_helpers import make_hf_base

SEEDS_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_parses_with_its_workflow_root(preset):
    root = workflow_root(preset_workflow(preset))
    for scale in ["default", *(read_preset(preset).get("scales") or {})]:
        cfg = resolve(root, preset, None if scale == "default" else scale)
        assert cfg.preset == preset
    assert {"cpt": PosttrainConfig, "sft": PosttrainConfig, "dpo": PosttrainConfig, "track2": Track2Config}.get(preset, root) is root


@pytest.mark.parametrize("task,base,lr,epochs", [("cpt", "meta-llama/Llama-3.1-8B", 2e-4, 3),
                                                 ("sft", "meta-llama/Llama-3.1-8B-Instruct", 1e-4, 2)])
def test_paper_scale_is_the_seeds_recipe(task, base, lr, epochs):
    c = resolve(PosttrainConfig, task, "paper")
    assert (c.finetune.task, c.finetune.base, c.finetune.method, c.finetune.seq_len) == (task, base, "qlora", 2048)
    assert (c.quant.quant_type, c.quant.double_quant, c.quant.compute_dtype) == ("nf4", True, "bf16")
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.bias, c.lora.target_modules) == (16, 32, 0.05, "none", SEEDS_TARGETS)
    t = c.train
    assert (t.batch_size, t.grad_accum, t.lr, t.epochs, t.weight_decay, t.schedule, t.warmup_steps) == (2, 8, lr, epochs, 0.01, "cosine", 100)
    assert (t.gradient_checkpointing, t.eval_interval, t.save_interval, t.keep_checkpoints, t.seed) == (True, 200, 500, 3, 42)
    if task == "cpt":
        assert (c.data.source, c.data.max_docs, c.data.val_fraction) == ("hf:nlpufg/brwac", 10000, 0.05)
    else:
        assert c.pairs.train.endswith("sft_10k_train.jsonl") and c.pairs.val.endswith("sft_10k_val.jsonl")


def test_post_training_config_holds_only_its_keys():
    keys = set(PosttrainConfig.sections())
    assert {"finetune", "lora", "quant", "pairs", "train"} <= keys and not {"model", "tokenizer", "guardrails"} & keys
    with pytest.raises(Exception, match="unknown key 'train.stride'"):
        resolve(PosttrainConfig, "sft", "tiny", overrides=["train.stride=4"])


def test_run_track2_end_to_end(tmp_path):
    """`brlm run track2` over a given base: CPT -> merge -> SFT -> merge -> DPO, one report."""
    base = make_hf_base(tmp_path / "base")
    fast = "train.max_steps=6; train.eval_interval=3; train.threads=1; finetune.seq_len=128; sample.max_new_tokens=4; eval.max_rows=16"
    proc = run_cli("run", "track2", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "t2",
                   "--set", f"track2.base={base}", "--set", f"track2.common_set={fast}",
                   "--set", "track2.cpt_set=data.max_docs=40", "--set", "track2.sft_set=pairs.max_train=80",
                   "--set", f"track2.cpt_source={tmp_path / 'absent.jsonl'}", "--set", f"track2.sft_train={tmp_path / 'absent.jsonl'}",
                   check=True)
    root = tmp_path / "t2"
    t2 = json.loads((root / "track2.json").read_text())
    assert t2["sources"]["cpt_fallback_used"] and t2["sources"]["cpt"] == "builtin:demo"
    assert t2["sources"]["sft"] == "builtin:instructions"
    assert set(t2["phases"]) == {"cpt", "sft", "dpo"}
    for phase in ("cpt", "sft"):
        assert (root / phase / "merged" / "model.safetensors").is_file()
        ev = t2["phases"][phase]["eval"]
        assert ev["adapted"]["perplexity"] < ev["base"]["perplexity"], phase
    assert json.loads((root / "sft" / "base.json").read_text())["folder"].endswith("cpt/merged")
    assert json.loads((root / "dpo" / "base.json").read_text())["folder"].endswith("sft/merged")
    report = (root / "report.md").read_text()
    assert "Base versus adaptado, fase a fase" in report and "ppl só respostas" in report and (root / "report.html").is_file()
    assert (root / "sft" / "report.md").is_file()
    assert "report.md" in proc.stdout or "report" in proc.stderr
    # Again: every phase is up to date and is not redone.
    again = run_cli("run", "--config", str(root / "config.yaml"), "--runs-dir", str(tmp_path), "--name", "t2", check=True)
    assert again.stderr.count("is up to date") == 3


def test_a_brlm_run_as_base_with_adapter_in_eval_and_sample(tiny_run, tmp_path):
    """A from-scratch brlm run (GPT-2 family: Conv1D projections, learned positions) as --base:
    exported once, LoRA CPT, then the same run scored and sampled with --adapter."""
    run = tmp_path / "cpt"
    args = ["--base", str(tiny_run), "--scale", "tiny", "--method", "lora", "--run", str(run), "--set", "train.max_steps=12",
            "--set", "train.warmup_steps=1",
            "--set", "train.eval_interval=6", "--set", "train.threads=1", "--set", "data.max_docs=20",
            "--set", "sample.max_new_tokens=4", "--set", "eval.max_rows=8"]
    too_long = run_cli("finetune", "cpt", *args)  # the tiny GPT has 32 learned positions; tiny CPT asks for 256
    assert too_long.returncode == 2 and "learned positions for 32 tokens" in too_long.stderr
    run_cli("finetune", "cpt", *args, "--set", "finetune.seq_len=32", check=True)
    assert (tiny_run / "hf" / "export.json").is_file()  # the run was exported once, beside its checkpoints
    ev = json.loads((run / "eval.json").read_text())
    assert ev["adapted"]["loss"] != ev["base"]["loss"]  # the plumbing; a 30k-parameter GPT barely moves in 12 steps
    assert json.loads((run / "train.json").read_text())["fused_loss"]  # GPT2Model's hidden states + the chunked loss
    out = tmp_path / "eval_adapter.json"
    run_cli("eval", "intrinsic", str(tiny_run), "--adapter", str(run / "adapter"), "--out", str(out), check=True)
    plain = json.loads((tiny_run / "eval.json").read_text())
    with_adapter = json.loads(out.read_text())
    assert "+adapter" in with_adapter["checkpoint"] and with_adapter["windows_sha256"] == plain["windows_sha256"]
    assert with_adapter["loss"] != plain["loss"]
    proc = run_cli("sample", str(tiny_run), "--adapter", str(run), "--prompt", "A prefeitura", "--max-new-tokens", "3", check=True)
    assert proc.stdout.startswith("--- seed")
