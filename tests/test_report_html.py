"""report.md / report.html from a run folder alone, cost figures, and the HTML rendered by a real
headless Chromium (skipped with a reason when Chromium is not installed: `make browser`)."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from brlm.runs.report import render_report

from .conftest import run_cli

COST = {
    "flops_per_token": 1.5e6, "flops_per_token_6n": 1.2e6, "total_flops": 3.0e12, "achieved_flops_per_s": 2.0e10,
    "mfu": 0.0123, "peak_flops_per_s": 1.6e12, "device_name": "CPU de teste", "price_usd_per_hour": 0.1,
    "estimated_cost_usd": 0.0042, "estimated_cost_brl": 0.021, "price_as": "cpu-2core",
}


@pytest.fixture(scope="module")
def report_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("rep") / "tiny"
    shutil.copytree(tiny_run, run)
    return run


def test_report_html_is_self_contained_and_matches_md(report_run):
    (report_run / "cost.json").unlink(missing_ok=True)
    proc = run_cli("report", str(report_run), check=True)
    assert str(report_run / "report.html") in proc.stdout
    md = (report_run / "report.md").read_text()
    page = (report_run / "report.html").read_text()
    for text in ("Avaliação intrínseca", "Guardrails das amostras", "Amostras", "Custo", "Configuração", "bits por caractere"):
        assert text in md and text in page, text
    assert 'src="data:image/png;base64,' in page and "loss_curve.png" not in page  # embedded, no external file
    assert "<table>" in page and page.count("<tr>") >= 8
    assert "Sem `cost.json`" in md and "estimated" not in page


def test_report_shows_cost_figures_when_present(report_run):
    (report_run / "cost.json").write_text(json.dumps(COST))
    render_report(report_run)
    md = (report_run / "report.md").read_text()
    assert "CPU de teste" in md and "1.23%" in md and "3e+12" in md and "0.0210" in md and "Sem `cost.json`" not in md
    (report_run / "cost.json").unlink()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="brlm-chromium-")
    try:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_report_html_renders_in_headless_chromium(report_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (run `make browser`, i.e. apt-get install chromium)")
    render_report(report_run)
    url = (report_run / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    proc = _run_chromium(exe, f"--screenshot={shot}", "--window-size=1000,1400", url)
    assert shot.is_file(), proc.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))  # (H, W, 3 or 4) floats in [0, 1]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 900
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05 and (rgb < 0.5).mean() > 0.005  # text and lines on a white page, not a blank one
    dom = _run_chromium(exe, "--dump-dom", url).stdout
    assert "<table>" in dom and dom.count("<img") >= 1 and 'src="data:image/png;base64,' in dom
    assert "Avaliação intrínseca" in dom


def test_report_of_missing_folder_is_a_one_line_error(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "run folder not found" in proc.stderr


def test_report_renders_partial_run(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    md = Path(render_report(run)).read_text()
    assert "failed" in md and "boom" in md and (run / "report.html").is_file()
