"""Prices, cost.json of a run, the CPU peak cache."""

from __future__ import annotations

import json

import pytest

from brlm.compute.cost import estimate_compute, load_prices, run_cost
from brlm.compute.flops import flops_per_token
from brlm.config import load_config
from brlm.errors import BrlmError, ConfigError

TRAIN = {"n_params": 39296, "tokens_seen": 3600_000, "wall_time_s": 7200.0, "train_time_s": 3600.0,
         "tokens_per_s": 1000.0, "peak_rss_mb": 300.0, "device": "cpu", "threads": 2}


def cfg_with(*sets):
    return load_config(preset="demo", scale="tiny", overrides=["cost.peak_flops_per_s=1e10", *sets])


def test_seeds_prices_are_the_defaults():
    p = load_prices()
    assert {k: p[k]["price_usd_per_hour"] for k in ("rtx3080", "rtx3090", "rtx4090")} == {"rtx3080": 0.07, "rtx3090": 0.13, "rtx4090": 0.30}
    assert "P25" in p["rtx4090"]["source"] and p["cpu"]["price_usd_per_hour"] > 0


def test_run_cost_measured_on_cpu():
    cfg = cfg_with("cost.brl_per_usd=5")
    out = run_cost(TRAIN, cfg, 400)
    fpt = flops_per_token(cfg.model, 400)
    assert out["flops_per_token"] == fpt and out["total_flops"] == fpt * 3600_000
    assert out["mfu"] == pytest.approx(1000.0 * fpt / 1e10)
    assert out["achieved_flops_per_s"] == pytest.approx(fpt * 1000.0)
    assert out["estimated_cost_usd"] == pytest.approx(2 * 0.04)  # two hours of wall time at the CPU price
    assert out["estimated_cost_brl"] == pytest.approx(2 * 0.04 * 5)
    assert out["peak_rss_mb"] == 300.0 and "price_as" not in out


def test_price_overrides_price_as_and_user_file(tmp_path):
    out = run_cost(TRAIN, cfg_with("cost.price_usd_per_hour=1.5"), 400)
    assert out["estimated_cost_usd"] == pytest.approx(3.0)
    as4090 = run_cost(TRAIN, cfg_with("cost.price_as=rtx4090", "cost.assumed_mfu=0.5"), 400)
    seconds = as4090["total_flops"] / (82.6e12 * 0.5)  # the run trained in fp32: the 4090's fp32 peak
    assert as4090["price_as"] == "rtx4090" and as4090["price_usd_per_hour"] == 0.30
    assert as4090["estimated_cost_usd"] == pytest.approx(0.30 * seconds / 3600)
    user = tmp_path / "prices.yaml"
    user.write_text("devices:\n  cpu: {price_usd_per_hour: 0.5, source: mine}\n  h100: 2.0\n")
    out = run_cost(TRAIN, cfg_with(f"cost.price_file={user}"), 400)
    assert out["price_usd_per_hour"] == 0.5 and out["price_source"] == "mine"
    assert load_prices(user)["h100"]["price_usd_per_hour"] == 2.0
    no_price = run_cost(TRAIN, cfg_with("cost.price_as=h100"), 400)
    assert no_price["estimated_cost_usd"] is None and "set cost.price_usd_per_hour" in no_price["price_source"]
    with pytest.raises(BrlmError, match="cost.price_as"):
        run_cost(TRAIN, cfg_with("cost.price_as=tpu9"), 400)
    with pytest.raises(ConfigError, match="cost.brl_per_usd"):
        cfg_with("cost.brl_per_usd=-1")
    user.write_text("devices:\n  cpu: {price_usd_per_hour: caro}\n")
    with pytest.raises(BrlmError, match="price_usd_per_hour"):
        load_prices(user)


def test_estimate_compute_6nd():
    out = estimate_compute(7e9, 140e9, "rtx4090", assumed_mfu=0.4)
    assert out["total_flops"] == 6 * 7e9 * 140e9
    assert out["hours"] == pytest.approx(6 * 7e9 * 140e9 / (165.2e12 * 0.4) / 3600)
    assert out["estimated_cost_usd"] == pytest.approx(out["hours"] * 0.30)
    with pytest.raises(BrlmError):
        estimate_compute(-1, 10, "rtx4090")
    with pytest.raises(BrlmError, match="unknown"):
        estimate_compute(1e6, 1e6, "voodoo2")


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    from brlm.compute import peak

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda dtype, threads: calls.append(dtype) or 5e9)
    first = peak.cpu_peak_flops("fp32", threads=1)
    again = peak.cpu_peak_flops("fp32", threads=1)
    assert calls == ["fp32"] and not first["cached"] and again["cached"] and again["peak_flops_per_s"] == 5e9
    assert json.loads((tmp_path / "cpu_peak.json").read_text())


def test_real_matmul_measurement_is_plausible():
    from brlm.compute.peak import measure_matmul_peak

    flops = measure_matmul_peak("fp32", threads=1, n=256, seconds=0.05)
    assert 1e8 < flops < 1e13


def test_tiny_run_records_cost_json(tiny_run):
    cost = json.loads((tiny_run / "cost.json").read_text())
    train = json.loads((tiny_run / "train.json").read_text())
    for key in ("flops_per_token", "flops_per_token_6n", "total_flops", "achieved_flops_per_s", "mfu", "peak_flops_per_s",
                "device_name", "price_usd_per_hour", "estimated_cost_usd", "wall_time_s", "tokens_seen", "tokens_per_s", "peak_rss_mb"):
        assert key in cost, key
    assert cost["total_flops"] == cost["flops_per_token"] * train["tokens_seen"]
    assert 0 < cost["mfu"] < 1
    assert cost["estimated_cost_usd"] == pytest.approx(cost["price_usd_per_hour"] * train["wall_time_s"] / 3600)


def test_bad_price_as_fails_before_training(tmp_path):
    from .conftest import run_cli

    proc = run_cli("run", "demo", "--scale", "tiny", "--runs-dir", str(tmp_path), "--name", "x", "--set", "cost.price_as=tpu9")
    assert proc.returncode == 2 and "cost.price_as" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "x" / "train.json").exists()


def test_run_cost_on_a_gpu_uses_the_table(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    train = {**TRAIN, "device": "cuda:0", "dtype": "bf16", "peak_cuda_allocated_mb": 900.0, "peak_cuda_reserved_mb": 1024.0}
    out = run_cost(train, load_config(preset="demo", scale="tiny"), 400)
    assert out["device_key"] == "rtx4090" and out["peak_flops_per_s"] == 165.2e12
    assert out["price_usd_per_hour"] == 0.30 and out["estimated_cost_usd"] == pytest.approx(0.60)
    assert out["peak_cuda_allocated_mb"] == 900.0 and out["peak_cuda_reserved_mb"] == 1024.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    unknown = run_cost(train, load_config(preset="demo", scale="tiny"), 400)
    assert unknown["mfu"] is None and unknown["estimated_cost_usd"] is None


def test_run_cost_reads_torch_dtype_names_of_older_runs(monkeypatch):
    """train.json before 2026-11-22 said 'bfloat16': that is the bf16 column, not fp32."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    cfg = load_config(preset="demo", scale="tiny")
    old = run_cost({**TRAIN, "device": "cuda:0", "dtype": "bfloat16"}, cfg, 400)
    new = run_cost({**TRAIN, "device": "cuda:0", "dtype": "bf16"}, cfg, 400)
    fp32 = run_cost({**TRAIN, "device": "cuda:0", "dtype": "float32"}, cfg, 400)
    assert old["peak_flops_per_s"] == new["peak_flops_per_s"] == 165.2e12
    assert fp32["peak_flops_per_s"] < new["peak_flops_per_s"]
