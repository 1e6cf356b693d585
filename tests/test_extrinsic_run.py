"""`brlm eval extrinsic run`: models answer the task sets, details are written as they go and a
rerun resumes without losing an item, `extrinsic.json` holds the statistics (per seed, across
seeds, base vs adapted), and bad inputs are one-line errors or recorded counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brlm.config.extrinsic import ExtrinsicConfig
from brlm.errors import BrlmError
from brlm.eval.extrinsic.details import DetailsFile
from brlm.infer.load import LoadedModel, load_model
from brlm.stages import extrinsic as stage

from .conftest import run_cli
from .extrinsic_models import make_brlm_run, make_hf_folder, make_sets, make_tokenizer_dir

FAST = dict(max_new_tokens_qa=6, max_new_tokens_long=10, n_resamples=200, batch_size=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    tok = make_tokenizer_dir(root / "tok")
    sets = make_sets(root / "sets", n=3)
    return {"root": root, "tok": tok, "sets": [str(s) for s in sets],
            "base": make_brlm_run(root / "base", tok, seed=0), "sft": make_brlm_run(root / "sft", tok, seed=1)}


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / stage.DETAILS).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_run_two_models_writes_figures_and_details(world, tmp_path):
    out = tmp_path / "out"
    cfg = ExtrinsicConfig(**FAST)
    result = stage.run_extrinsic([str(world["base"]), str(world["sft"])], world["sets"], out, cfg)
    rows = _rows(out)
    assert len(rows) == 2 * 2 * 3 * 3  # models x seeds x tasks x items
    assert {r["model"] for r in rows} == {"base", "sft"} and {r["set"] for r in rows} == {"seed1", "seed2"}
    r0 = rows[0]
    assert {"hash", "task", "model", "prompt", "raw_output", "answer", "reference", "metrics", "set", "index",
            "prompt_tokens", "truncated", "new_tokens", "stopped"} <= set(r0)
    assert r0["prompt"].startswith("Instrução:\n")  # brlm runs have no chat template: the plain format
    qa = result["results"]["base"]["qa"]["f1"]
    assert set(qa["per_seed"]) == {"seed1", "seed2"} and qa["n_seeds"] == 2 and qa["n_items"] == 6
    per = list(qa["per_seed"].values())
    assert qa["mean"] == pytest.approx(sum(per) / 2) and qa["lo"] <= qa["mean"] <= qa["hi"]
    assert qa["std"] == pytest.approx(float(torch.tensor(per, dtype=torch.float64).std()))  # ddof = 1
    c = result["comparisons"]["sft"]["summarization"]["rouge_l"]
    assert result["comparisons"]["sft"]["base"] == "base" and c["n"] == 6 and 0 < c["p_permutation"] <= 1
    assert c["diff"] == pytest.approx(c["adapted"] - c["base"])
    saved = json.loads((out / stage.RESULTS).read_text())
    assert saved["models"][0]["prompt_format"] == "plain" and saved["counts"]["base"]["items"] == 18
    md = (out / stage.TABLE).read_text()
    assert "Avaliação extrínseca" in md and "Base × adaptado" in md and "plain" in md


def test_interrupted_run_resumes_and_loses_no_item(world, tmp_path, monkeypatch):
    cfg = ExtrinsicConfig(**FAST)
    full = tmp_path / "full"
    stage.run_extrinsic([str(world["base"])], world["sets"][:1], full, cfg)
    expected = {(r["set"], r["task"], r["index"]): r["raw_output"] for r in _rows(full)}

    out = tmp_path / "cut"
    real_append, calls = DetailsFile.append, []

    def append_then_die(self, row):
        if len(calls) == 4:
            # killed while writing the 5th line: half of it reaches the file
            self._f.write(json.dumps(row)[:25])
            self._f.flush()
            raise KeyboardInterrupt
        calls.append(row)
        real_append(self, row)

    monkeypatch.setattr(DetailsFile, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        stage.run_extrinsic([str(world["base"])], world["sets"][:1], out, cfg)
    monkeypatch.setattr(DetailsFile, "append", real_append)
    assert not (out / stage.RESULTS).exists()

    result = stage.run_extrinsic([str(world["base"])], world["sets"][:1], out, cfg)
    rows = _rows(out)
    got = {(r["set"], r["task"], r["index"]): r["raw_output"] for r in rows}
    assert len(rows) == len(got) == 9 and got == expected  # every item once, none lost, none changed
    assert result["models"][0]["resumed"] == 4 and result["models"][0]["generated"] == 5
    again = stage.run_extrinsic([str(world["base"])], world["sets"][:1], out, cfg)
    assert again["models"][0]["generated"] == 0 and len(_rows(out)) == 9


def test_rerun_with_other_settings_is_refused(world, tmp_path):
    out = tmp_path / "o"
    stage.run_extrinsic([str(world["base"])], world["sets"][:1], out, ExtrinsicConfig(**{**FAST, "limit": 1}))
    with pytest.raises(BrlmError, match="other settings"):
        stage.run_extrinsic([str(world["base"])], world["sets"][:1], out,
                            ExtrinsicConfig(**{**FAST, "limit": 1, "max_new_tokens_qa": 7}))


class _Silent(torch.nn.Module):
    """A model whose every next token is eos: it answers nothing."""

    block_size = 64

    def __init__(self, eos: int, vocab: int):
        super().__init__()
        self.eos, self.vocab = eos, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None):
        logits = torch.zeros(*idx.shape, self.vocab)
        logits[..., self.eos] = 1.0
        return logits, None


def test_a_model_that_produces_nothing_is_a_count(world, tmp_path, monkeypatch):
    real = load_model(world["base"])
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: LoadedModel(_Silent(real.tokenizer.eos_id, 300), real.tokenizer,
                                                                           {"kind": "run", "checkpoint": "x"}))
    result = stage.run_extrinsic([str(world["base"])], world["sets"][:1], tmp_path / "o", ExtrinsicConfig(**FAST))
    assert result["counts"]["base"]["empty_outputs"] == 9 and result["counts"]["base"]["stopped_eos"] == 9
    assert result["results"]["base"]["qa"]["f1"]["mean"] == 0.0


def test_hf_model_uses_its_chat_template(world, tmp_path):
    hf = make_hf_folder(world["root"] / "hf", world["tok"], seed=3)
    out = tmp_path / "o"
    result = stage.run_extrinsic([str(hf)], world["sets"][:1], out, ExtrinsicConfig(**{**FAST, "limit": 2, "tasks": "qa"}))
    assert result["models"][0]["prompt_format"] == "chat"
    assert all(r["prompt"].startswith("<|usuario|>\n") and r["prompt"].endswith("<|assistente|>\n") for r in _rows(out))


def _write_set(folder: Path, task: str, lines: list[str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for t in ("qa", "summarization", "rewriting"):  # good files for the tasks not under test
        (folder / f"{t}.jsonl").write_text(json.dumps({"task": t, "instruction": "Pergunta?", "input": "",
                                                       "reference": "sim", "hash": f"{t}0"}) + "\n")
    (folder / f"{task}.jsonl").write_text("".join(line + "\n" for line in lines))
    return str(folder)


GOOD = {"task": "qa", "instruction": "Pergunta?", "input": "", "reference": "sim", "hash": "h0"}


@pytest.mark.parametrize("lines, expected", [
    ([json.dumps(GOOD), '{"task": "qa", "instruction": '], "qa.jsonl:2: not valid JSON"),
    ([json.dumps({k: v for k, v in GOOD.items() if k != "reference"})], "qa.jsonl:1: missing field 'reference'"),
    ([json.dumps({**GOOD, "reference": "  "})], "qa.jsonl:1: field 'reference' is empty"),
    ([json.dumps({**GOOD, "task": "tradução"})], "qa.jsonl:1: field 'task' is 'tradução'; expected one of"),
])
def test_bad_set_files_are_one_line_errors(world, tmp_path, lines, expected):
    sets = _write_set(tmp_path / "s", "qa", lines)
    proc = run_cli("eval", "extrinsic", "run", "--model", str(world["base"]), "--sets", sets, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--tasks", "qa,traducao"], "--tasks='qa,traducao': expected a comma-separated subset"),
    (["--batch-size", "0"], "--batch-size=0: expected an integer >= 1"),
    (["--judge-url", "http://127.0.0.1:9"], "--judge-model='': expected a model name"),
])
def test_bad_flags_are_one_line_errors(world, tmp_path, args, expected):
    proc = run_cli("eval", "extrinsic", "run", "--model", str(world["base"]), "--sets", *world["sets"],
                   "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_missing_model_and_broken_details_are_one_line_errors(world, tmp_path):
    proc = run_cli("eval", "extrinsic", "run", "--model", str(tmp_path / "nada"), "--sets", *world["sets"],
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "model not found" in proc.stderr
    out = tmp_path / "o2"
    out.mkdir()
    (out / stage.DETAILS).write_text('{"broken\n{"model": "base"}\n')
    proc = run_cli("eval", "extrinsic", "run", "--model", str(world["base"]), "--sets", *world["sets"], "--out", str(out))
    assert proc.returncode == 2 and f"{stage.DETAILS}:1: not valid JSON" in proc.stderr, proc.stderr


def test_cli_run_into_a_run_folder(world, tmp_path):
    import shutil

    run = tmp_path / "sft"
    shutil.copytree(world["sft"], run)
    proc = run_cli("eval", "extrinsic", "run", "--model", str(world["base"]), "--model", str(run), "--sets", world["sets"][0],
                   "--limit", "2", "--max-new-tokens-qa", "4", "--max-new-tokens-long", "4", "--n-resamples", "200")
    assert proc.returncode == 0, proc.stderr
    assert (run / "extrinsic.json").is_file() and (run / "extrinsic_details.jsonl").is_file()
    assert "| QA | base | F1 |" in proc.stdout and "prompt format plain" in proc.stderr


def test_killed_cli_run_resumes(world, tmp_path):
    """SIGKILL the real CLI mid-run, rerun the same command: every item exactly once, the rows
    written before the kill kept as they were."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sets = make_sets(tmp_path / "sets", seeds=("seedk",), n=6)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "brlm", "eval", "extrinsic", "run", "--model", str(world["base"]), "--sets", str(sets[0]),
           "--out", str(out), "--batch-size", "1", "--max-new-tokens-qa", "6", "--max-new-tokens-long", "10", "--n-resamples", "200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    details = out / stage.DETAILS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if details.is_file() and details.read_text(encoding="utf-8").count("\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    text = details.read_text(encoding="utf-8") if details.is_file() else ""
    before = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]  # whole lines only
    if proc.returncode != -signal.SIGKILL or len(before) >= 18:
        pytest.skip("the run finished before it could be killed")
    done = run_cli(*cmd[3:])
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    keys = [(r["task"], r["index"]) for r in rows]
    assert len(rows) == len(set(keys)) == 18
    assert rows[:len(before)] == before
