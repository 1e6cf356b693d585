"""`brlm runs list` and `brlm compare`: the table, the CSV, the plots and the tokenizer warning."""

import csv
import io
import json
import shutil

import pytest

from brlm.runs.compare import comparison_table, summarize_run, tokenizer_warning

from .conftest import run_cli


@pytest.fixture(scope="module")
def two_runs(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    a, b = root / "a", root / "b"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    return root, a, b


def _retokenize(run, sha):
    ev = json.loads((run / "eval.json").read_text())
    ev["tokenizer_sha256"] = sha
    (run / "eval.json").write_text(json.dumps(ev))


def test_same_tokenizer_no_warning_and_csv_roundtrip(two_runs):
    _, a, b = two_runs
    rows = [summarize_run(a), summarize_run(b)]
    assert rows[0]["tokenizer_sha256"] and tokenizer_warning(rows) is None
    md, csv_text, warnings = comparison_table(rows)
    assert warnings == [] and "WARNING" not in md
    header = md.splitlines()[0]
    assert header.index("bits/byte") < header.index("ppl")  # bits per byte first
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert [r["run"] for r in parsed] == ["a", "b"]
    assert float(parsed[0]["bits_per_byte"]) == pytest.approx(rows[0]["bits_per_byte"])
    assert parsed[0]["guardrails_passed"] in ("True", "False")


def test_compare_cli_warns_on_different_tokenizers(two_runs, tmp_path):
    root, a, b = two_runs
    _retokenize(b, "f" * 64)
    out = tmp_path / "cmp"
    proc = run_cli("compare", str(a), str(b), "--out", str(out), check=True)
    assert "different (or unknown) tokenizers" in proc.stderr
    md = (out / "compare.md").read_text()
    assert "⚠️ WARNING" in md and "bits per byte" in md
    assert (out / "compare.csv").read_text().count("\n") == 3
    for png in ("compare_loss.png", "compare_throughput.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and png in md
    _retokenize(b, json.loads((a / "eval.json").read_text())["tokenizer_sha256"])


def test_runs_list(two_runs):
    root, a, _ = two_runs
    proc = run_cli("runs", "list", "--runs-dir", str(root), check=True)
    lines = proc.stdout.strip().splitlines()
    assert "best val bits/byte" in lines[0] and len(lines) == 4
    assert "| a | completed | demo (tiny) |" in proc.stdout
    rows = json.loads(run_cli("runs", "list", "--runs-dir", str(root), "--json", check=True).stdout)
    assert rows[0]["params"] == json.loads((a / "train.json").read_text())["n_params"]
    bad = run_cli("runs", "list", "--runs-dir", str(root / "missing"))
    assert bad.returncode == 2 and "folder not found" in bad.stderr
