"""`brlm estimate memory|compute|fits`: tables, JSON, the seeds' figures, one-line errors."""

from __future__ import annotations

import json

import pytest

from brlm.cli import main


def run(capsys, *args):
    try:
        code = main(["estimate", *args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_memory_seeds_terms_table_and_json(capsys):
    code, out, _ = run(capsys, "memory", "7b", "--seeds-terms", "--device", "cpu")
    assert code == 0 and "112.000 GB" in out and "28.000 GB" in out and "56.000 GB" in out
    code, out, _ = run(capsys, "memory", "8b", "--method", "lora", "--dtype", "fp16", "--lora-params", "16e6", "--seeds-terms", "--device", "cpu", "--json")
    d = json.loads(out)
    assert round(d["total_gb"], 1) == 16.3 and d["trainable_params"] == 16_000_000
    code, out, _ = run(capsys, "memory", "70b", "--method", "qlora", "--lora-params", "50e6", "--optimizer", "none",
                       "--seeds-terms", "--overhead-gb", "8", "--device", "cpu", "--json")
    assert json.loads(out)["total_gb"] == pytest.approx(43.4)


def test_memory_known_architecture_counts_activations(capsys):
    code, out, _ = run(capsys, "memory", "llama-3.1-8b", "--method", "qlora", "--lora-rank", "64", "--lora-targets", "all",
                       "--seq-len", "1024", "--checkpointing", "--json")
    d = json.loads(out)
    assert d["trainable_params"] == 167_772_160
    assert d["terms"]["activations"] > 0 and d["terms"]["runtime"] == 0.5e9 and d["terms"]["quant_constants"] > 0


def test_compute_and_budget(capsys):
    code, out, _ = run(capsys, "compute", "--params", "124m", "--tokens", "2.5b", "--gpu", "rtx4090", "--mfu", "0.4", "--json")
    c = json.loads(out)["compute"]
    assert c["total_flops"] == pytest.approx(6 * 124e6 * 2.5e9)
    assert c["estimated_cost_usd"] == pytest.approx(c["total_flops"] / (165.2e12 * 0.4) / 3600 * 0.30)
    code, out, _ = run(capsys, "compute", "--budget-usd", "30", "--gpu", "rtx3090", "--json")
    d = json.loads(out)
    assert d["compute"]["estimated_cost_usd"] == pytest.approx(30.0)  # the optimum spends the budget
    assert d["budget"]["rule_20"]["tokens"] == pytest.approx(20 * d["budget"]["rule_20"]["n_params"])
    code, out, _ = run(capsys, "compute", "--budget-flops", "1e21")
    assert code == 0 and "Chinchilla" in out and "L_kaplan" in out
    code, out, _ = run(capsys, "compute", "--model", "demo:tiny", "--tokens", "1m", "--gpu", "cpu", "--dtype", "fp32", "--json")
    assert json.loads(out)["compute"]["flops_per_token"] != 6 * json.loads(out)["compute"]["n_params"]


def test_fits_suggests_settings(capsys):
    code, out, _ = run(capsys, "fits", "llama-3.1-8b", "--gpu", "rtx4090", "--seq-len", "2048", "--micro-batch", "4")
    assert code == 1 and "DOES NOT FIT" in out and "first change that fits: QLoRA" in out
    code, out, _ = run(capsys, "fits", "demo:tiny", "--memory-gb", "1", "--device", "cpu", "--json")
    d = json.loads(out)
    assert code == 0 and d["fits"] and d["options"][0]["settings"]["micro_batch"] == 8  # the preset's batch size


@pytest.mark.parametrize("args,needle", [
    (["memory", "llama-9"], "model 'llama-9'"),
    (["memory", "0b"], "must be > 0"),
    (["memory", "7b", "--dtype", "fp8"], "invalid choice"),
    (["memory", "7b", "--micro-batch", "0"], "--micro-batch"),
    (["compute", "--params", "-5", "--tokens", "1b"], "--params"),
    (["fits", "7b", "--gpu", "voodoo2"], "GPU 'voodoo2'"),
    (["memory", "7b", "--method", "lora"], "LoRA parameters need an architecture"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, needle):
    code, _, err = run(capsys, *args)
    assert code == 2 and err.strip().count("\n") == 0 and needle in err


def test_help(capsys):
    for sub in ("memory", "compute", "fits"):
        with pytest.raises(SystemExit) as e:
            main(["estimate", sub, "--help"])
        assert e.value.code == 0 and f"brlm estimate {sub}" in capsys.readouterr().out


def test_peak_lists_gpus_and_the_cached_cpu_figure(capsys, tmp_path, monkeypatch):
    from brlm.compute import peak

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda dtype, threads: {"fp32": 2e10, "bf16": 4e10}[dtype])
    code, out, _ = run(capsys, "peak", "--json")
    d = json.loads(out)
    assert code == 0 and d["cpu"]["fp32"]["peak_flops_per_s"] == 2e10 and d["gpus"]["h100"]["bf16"] == 989e12
    code, out, _ = run(capsys, "peak")
    assert "cached" in out and "rtx4090" in out
