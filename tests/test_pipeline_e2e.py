"""End-to-end through the real CLI on the built-in demo corpus at the tiny scale (seconds)."""

import json

import yaml

from brlm.config import load_config
from brlm.io.logging import read_metrics

from .conftest import make_corpus_jsonl, run_cli


def test_tiny_run_produces_a_complete_folder(tiny_run):
    for name in ("config.yaml", "run.json", "metrics.jsonl", "train.json", "eval.json", "samples.json", "report.md", "loss_curve.png"):
        assert (tiny_run / name).is_file(), name
    record = json.loads((tiny_run / "run.json").read_text())
    assert record["status"] == "completed" and record["preset"] == "demo" and record["scale"] == "tiny"
    assert {"python", "torch", "cpu", "git_sha"} <= set(record["environment"])
    assert {"data", "tokenizer", "shards"} <= set(record["hashes"])
    summary = json.loads((tiny_run / "train.json").read_text())
    assert summary["best_val_loss"] < summary["initial_val_loss"]
    # What train.dtype chose, and why (with the probe's figures where it measured), in both files.
    assert record["train_dtype"] == summary["dtype_choice"] and record["train_dtype"]["chosen"] == summary["dtype"]
    ev = json.loads((tiny_run / "eval.json").read_text())
    assert {"loss", "perplexity", "accuracy", "bits_per_byte", "windows_sha256"} <= set(ev)
    samples = json.loads((tiny_run / "samples.json").read_text())
    prompts = load_config(preset="demo").sample.prompts
    assert prompts == "builtin:prompts"
    from brlm.stages.evaluate import read_prompts

    assert [s["prompt"] for s in samples] == read_prompts(prompts)
    report = (tiny_run / "report.md").read_text()
    assert "bits por byte" in report and "loss_curve.png" in report and "Amostras" in report
    rows = read_metrics(tiny_run / "metrics.jsonl")
    assert any("val_loss" in r for r in rows) and any("tokens_per_s" in r for r in rows)
    assert (tiny_run / "tokenizer" / "spm.model").is_file()
    assert list((tiny_run / "checkpoints").glob("model_*.safetensors"))


def test_config_yaml_repeats_the_run(tiny_run, tmp_path):
    run_cli("run", "--config", str(tiny_run / "config.yaml"), "--runs-dir", str(tmp_path), "--name", "again", check=True)
    again = tmp_path / "again"
    assert yaml.safe_load((again / "config.yaml").read_text()) == yaml.safe_load((tiny_run / "config.yaml").read_text())
    losses = lambda run: [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(run / "metrics.jsonl")]  # noqa: E731
    assert losses(again) == losses(tiny_run)
    assert json.loads((again / "eval.json").read_text())["loss"] == json.loads((tiny_run / "eval.json").read_text())["loss"]


def test_each_stage_alone(tmp_path):
    run = tmp_path / "r"
    common = ["--run", str(run), "--preset", "demo", "--scale", "tiny"]
    run_cli("data", "prepare", *common, check=True)
    assert (run / "data" / "train.jsonl").is_file()
    run_cli("tokenizer", "train", "--run", str(run), check=True)  # reads the run's config.yaml
    assert (run / "tokenizer" / "spm.model").is_file()
    run_cli("train", "--run", str(run), "--set", "train.max_steps=6", check=True)
    assert json.loads((run / "run.json").read_text())["status"] == "trained"  # one stage; eval and report still to come
    out = run_cli("eval", "intrinsic", str(run), "--checkpoint", "last", check=True)
    assert "| total |" in out.stdout and "bits/byte" in out.stdout  # a table for people
    assert json.loads((run / "eval.json").read_text())["step"] == 6
    out = run_cli("sample", str(run), "--prompt", "A prefeitura anunciou", "--temperature", "0", "--max-new-tokens", "5", check=True)
    assert "A prefeitura anunciou" in out.stdout
    samples = json.loads((run / "samples.json").read_text())
    assert len(samples) == 1 and samples[0]["temperature"] == 0.0
    run_cli("report", str(run), check=True)
    assert (run / "report.md").is_file()


def test_custom_jsonl_source(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=80)
    proc = run_cli(
        "run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "custom",
        "--set", f"data.source={src}", "--set", "data.min_doc_chars=50", "--set", "data.val_fraction=0.3",
        "--set", "tokenizer.vocab_size=400", "--set", "train.max_steps=4",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-2000:]
    # Progress lines may come first; the error itself is one line, the last one.
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


def test_error_missing_input_file(tmp_path):
    proc = run_cli("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--set", "data.source=/nao/existe.jsonl")
    _one_line_error(proc, "/nao/existe.jsonl: file not found", "data.source")
    record = json.loads((tmp_path / "demo-tiny" / "run.json").read_text())
    assert record["status"] == "failed" and "file not found" in record["error"]


def test_error_empty_corpus_after_cleaning(tmp_path):
    proc = run_cli("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--set", "data.min_doc_chars=1000000")
    _one_line_error(proc, "empty corpus after cleaning", "data.min_doc_chars=1000000")


def test_error_unknown_set_key(tmp_path):
    proc = run_cli("run", "demo", "--runs-dir", str(tmp_path), "--set", "model.n_layers=2")
    _one_line_error(proc, "unknown key 'model.n_layers'", "model.n_layer")
    assert not (tmp_path / "demo").exists()


def test_error_block_size_larger_than_data(tiny_run, tmp_path):
    proc = run_cli("run", "--config", str(tiny_run / "config.yaml"), "--runs-dir", str(tmp_path), "--name", "big",
                   "--set", "model.block_size=100000")
    _one_line_error(proc, "model.block_size=100000 is larger than the", "lower model.block_size")


def test_failed_rerun_keeps_earlier_artifacts(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    before = (run / "data" / "train.jsonl").read_bytes()
    proc = run_cli("data", "prepare", "--run", str(run), "--set", "data.min_doc_chars=1000000")
    assert proc.returncode == 2
    assert (run / "data" / "train.jsonl").read_bytes() == before
    assert not list(run.rglob("*.tmp"))


def test_bad_prompts_file(tiny_run, tmp_path):
    proc = run_cli("sample", str(tiny_run), "--prompts", str(tmp_path / "nada.txt"), "--out", str(tmp_path / "s.json"))
    _one_line_error(proc, "nada.txt: prompts file not found")


def test_every_model_family_through_the_whole_pipeline(tmp_path):
    """rnn (GRU and LSTM, preset v4) and llama go through data -> ... -> eval, samples,
    guardrails, cost and report via `brlm run`, like the gpt demo (moe: test_train_features)."""
    run_cli("run", "v4", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "v4",
            "--set", "train.max_steps=4", "--set", "guardrails.num_seeds=1", check=True)
    run_cli("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "llama",
            "--set", "model.arch=llama", "--set", "model.n_kv_head=1", "--set", "train.max_steps=4",
            "--set", "guardrails.num_seeds=1", check=True)
    folders = [p.parent for p in tmp_path.rglob("run.json")]
    archs = set()
    for run in folders:
        assert json.loads((run / "run.json").read_text())["status"] == "completed", run
        for name in ("eval.json", "samples.json", "guardrails.json", "cost.json", "report.md", "report.html"):
            assert (run / name).is_file(), f"{run.name}: {name}"
        archs.add(yaml.safe_load((run / "config.yaml").read_text())["model"]["arch"])
        assert json.loads((run / "eval.json").read_text())["bits_per_byte"] > 0
    assert archs == {"rnn", "llama"} and len(folders) == 3
