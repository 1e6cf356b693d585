"""extrinsic.json in `brlm report` (an "Avaliação extrínseca" section, text escaped) and in
`brlm compare`; the statistics of brlm.eval.extrinsic.summary on hand-made rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from brlm.eval.extrinsic.summary import markdown, summarize
from brlm.runs.report import render_report

from .conftest import run_cli

EVIL = "<script>alert(1)</script>|x"


def _rows(model: str, shift: float) -> list[dict]:
    rows = []
    for s, seed in enumerate(("seed1", "seed2")):
        for i in range(5):
            f1 = min(1.0, 0.1 * i + shift + 0.05 * s)
            rows.append({"model": model, "set": seed, "task": "qa", "index": i,
                         "metrics": {"em": float(f1 == 1.0), "f1": f1, "rouge_l": f1, "chrf": f1 / 2}})
    return rows


def _result() -> dict:
    result = summarize(_rows("base", 0.0) + _rows(EVIL, 0.3), ["base", EVIL], ["seed1", "seed2"], ["qa"], n_resamples=2000)
    return {**result, "notes": [f"formato do prompt: {EVIL}"], "counts": {EVIL: {"empty_outputs": 2, "truncated_prompts": 1}}}


def test_summary_figures_by_hand():
    r = _result()
    f1 = r["results"]["base"]["qa"]["f1"]
    assert f1["per_seed"] == pytest.approx({"seed1": 0.2, "seed2": 0.25})
    assert f1["mean"] == pytest.approx(0.225) and f1["std"] == pytest.approx(0.05 / 2 ** 0.5)  # ddof = 1
    c = r["comparisons"][EVIL]["qa"]["f1"]
    assert c["diff"] == pytest.approx(0.3) and c["n"] == 10 and c["lo"] == pytest.approx(0.3) == c["hi"]
    # ten items all +0.3, exact over the 2^10 sign flips: only all-plus and all-minus reach |mean| = 0.3
    assert c["p_permutation"] == pytest.approx(2 / 1024)
    assert "| QA | base | F1 | 0.2250 ± 0.0354 |" in markdown(r)


def test_report_shows_extrinsic_section_escaped(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "done"}))
    (run / "extrinsic.json").write_text(json.dumps(_result()))
    render_report(run)
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for text in ("Avaliação extrínseca", "Base × adaptado", "média ± dp (sementes)", "respostas vazias"):
        assert text in md and text in page, text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\|x" in md  # a | inside a Markdown cell is escaped
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (run `make browser`): the HTML was checked as text only")
    profile = tempfile.mkdtemp(prefix="brlm-chromium-")
    try:
        dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--dump-dom",
                              (run / "report.html").resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert "Avaliação extrínseca" in dom and "<script>alert" not in dom


def test_compare_shows_extrinsic_table(tmp_path):
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"status": "done"}))
        runs.append(run)
    (runs[1] / "extrinsic.json").write_text(json.dumps(_result()))
    proc = run_cli("compare", *map(str, runs), "--out", str(tmp_path / "cmp"), check=True)
    assert "Avaliação extrínseca" in proc.stdout and "| b | base | 0.2250 ± 0.0354 [" in proc.stdout
    assert "Avaliação extrínseca" in (tmp_path / "cmp" / "compare.md").read_text()
