"""Prices and cost: the price table shipped with brlm, a run's measured cost, a projected cost.

    from brlm.compute.cost import load_prices, run_cost, estimate_compute
    run_cost(train_summary, cfg, vocab_size)     # the contents of <run>/cost.json
    estimate_compute(7e9, 140e9, "rtx4090")      # FLOPs, GPU-hours and US$ for N params, D tokens

The table (`brlm/resources/prices.yaml`) holds the seeds' prices (Vast.ai P25: RTX 3080 US$0.07/h,
3090 US$0.13/h, 4090 US$0.30/h) and a CPU entry. A run overrides them with `cost.price_usd_per_hour`,
prices itself as another device with `cost.price_as=rtx4090`, or reads a user table from
`cost.price_file`. Cost = price per hour × hours; `cost.brl_per_usd` adds a figure in reais.

"What would this run have cost on a 4090": the run's training FLOPs are divided by the 4090's peak
times `cost.assumed_mfu`, and that time is priced — the measured wall time of a CPU run says nothing
about a GPU's.

FLOPs per token come from compute/flops.py, which asks each model family (brlm/models/) for its counts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brlm.compute.flops import flops_per_token, flops_per_token_6n, forward_flops_breakdown, mfu
from brlm.compute.peak import GPUS, cpu_model, cpu_peak_flops, gpu_spec, match_gpu
from brlm.config import RunConfig
from brlm.errors import BrlmError


def _read_table(text: str, origin: str) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise BrlmError(f"{origin}: not valid YAML") from None
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        raise BrlmError(f"{origin}: expected a mapping 'devices: {{name: {{price_usd_per_hour: …}}}}'")
    out = {}
    for name, entry in devices.items():
        price = entry.get("price_usd_per_hour") if isinstance(entry, dict) else entry
        if price is not None and (not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0):
            raise BrlmError(f"{origin}: devices.{name}.price_usd_per_hour={price!r}: expected a number >= 0 or null")
        source = entry.get("source", origin) if isinstance(entry, dict) else origin
        out[str(name).lower()] = {"price_usd_per_hour": price, "source": source}
    return out


def load_prices(price_file: str | Path = "") -> dict[str, dict[str, Any]]:
    """The built-in table, extended/overridden by a user YAML file of the same shape."""
    text = (resources.files("brlm") / "resources" / "prices.yaml").read_text(encoding="utf-8")
    table = _read_table(text, "brlm/resources/prices.yaml")
    if price_file:
        p = Path(price_file)
        try:
            user = p.read_text(encoding="utf-8")
        except OSError:
            raise BrlmError(f"cost.price_file={str(p)!r}: file not found or unreadable") from None
        table.update(_read_table(user, f"cost.price_file {p}"))
    return table


def device_key(device: str, device_name: str = "") -> str:
    """'cpu' -> 'cpu'; 'cuda:0' on an RTX 4090 -> 'rtx4090'; an unknown card -> its name."""
    if not device.startswith("cuda"):
        return "cpu"
    return match_gpu(device_name) or device_name or "cuda"


def _peak_column(dtype: str) -> str:
    return "bf16" if dtype in ("bf16", "fp16") else "fp32"


def peak_for(key: str, dtype: str = "fp32", threads: int = 0, at_least: float = 0.0) -> tuple[float | None, str]:
    """Peak FLOP/s of a device key and where the figure came from. On CPU a cached peak below
    `at_least` (an achieved FLOP/s) is measured again (see brlm.compute.peak.cpu_peak_flops)."""
    if key == "cpu":
        m = cpu_peak_flops(dtype if dtype in ("fp32", "bf16") else "fp32", threads, at_least=at_least)
        return m["peak_flops_per_s"], f"measured torch.mm on this CPU ({m['threads']} threads, {'cached' if m['cached'] else 'fresh'})"
    if key in GPUS:
        col = _peak_column(dtype)
        return GPUS[key][col], f"{GPUS[key]['title']} {col} dense peak (table)"
    return None, "device not in the peak table; set cost.peak_flops_per_s"


def price_of(key: str, prices: dict[str, dict[str, Any]]) -> tuple[float | None, str]:
    entry = prices.get(key)
    if entry is None:
        return None, f"no price for '{key}' in the table; set cost.price_usd_per_hour"
    if entry["price_usd_per_hour"] is None:
        return None, f"no price for '{key}' ({entry['source']}); set cost.price_usd_per_hour"
    return float(entry["price_usd_per_hour"]), str(entry["source"])


def check_cost_config(cfg: Any) -> None:
    """Fail before training, not after, on a price file or cost.price_as the table does not know."""
    prices = load_prices(cfg.cost.price_file)
    if cfg.cost.price_as:
        name = cfg.cost.price_as.lower().replace("-", "")
        if name not in prices and name not in GPUS:
            raise BrlmError(f"cost.price_as={cfg.cost.price_as!r}: unknown device; known: {', '.join(sorted(set(prices) | set(GPUS)))}")


def run_cost(train: dict[str, Any], cfg: RunConfig, vocab_size: int) -> dict[str, Any]:
    """cost.json from train.json and the config: FLOPs, MFU, peak memory, price, cost."""
    fpt = flops_per_token(cfg.model, vocab_size)
    head = {
        "arch": cfg.model.arch,
        "n_params": train.get("n_params"),
        "vocab_size": vocab_size,
        "flops_per_token": fpt,
        "flops_per_token_6n": flops_per_token_6n(cfg.model, vocab_size),
        "flops_convention": "matmuls only, 2 FLOPs per multiply-add, causal attention (mean context (T+1)/2), training = 3 x forward",
        "forward_flops_breakdown": forward_flops_breakdown(cfg.model, vocab_size),
    }
    return cost_ledger(train, cfg, fpt, head)


def cost_ledger(train: dict[str, Any], cfg: Any, fpt: float, head: dict[str, Any] | None = None,
                total_flops: float | None = None) -> dict[str, Any]:
    """The measured part of cost.json for any workflow: `train` (a train.json: device, dtype,
    threads, tokens_seen, train/wall time, peak memory), `cfg.cost`, the training FLOPs per token
    and optionally the run's total FLOPs (default fpt x tokens_seen; post-training adds DPO's
    reference forward passes). `head` are the workflow's own keys, listed first."""
    cc = cfg.cost
    device = str(train.get("device", "cpu"))
    dtype = str(train.get("dtype", "fp32"))
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)  # train.json before 2026-11-22
    threads = int(train.get("threads") or 0)
    if device.startswith("cuda"):
        try:
            import torch

            device_name = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else "cuda"
        except Exception:  # a different machine than the run's: keep what we know
            device_name = device
    else:
        device_name = cpu_model()
    key = device_key(device, device_name)

    tokens = int(train.get("tokens_seen", 0))
    total = fpt * tokens if total_flops is None else total_flops
    train_time = float(train.get("train_time_s") or 0.0)
    wall = float(train.get("wall_time_s") or 0.0)
    tok_s = float(train.get("tokens_per_s") or (tokens / train_time if train_time else 0.0))
    if cc.peak_flops_per_s > 0:
        peak, peak_source = cc.peak_flops_per_s, "cost.peak_flops_per_s"
    else:
        peak, peak_source = peak_for(key, dtype, threads, at_least=fpt * tok_s)
    if total_flops is None:
        run_mfu = mfu(tok_s, fpt, peak) if peak else None
    else:
        run_mfu = total / train_time / peak if peak and train_time else None

    out: dict[str, Any] = {
        **(head or {}),
        "total_flops": total,
        "achieved_flops_per_s": total / train_time if train_time else 0.0,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "mfu": run_mfu,
        "device": device,
        "device_name": device_name,
        "device_key": key,
        "dtype": dtype,
        "threads": threads,
        "wall_time_s": wall,
        "train_time_s": train_time,
        "tokens_seen": tokens,
        "tokens_per_s": tok_s,
    }
    for k, v in train.items():
        if k.startswith("peak_") and k.endswith("_mb"):
            out[k] = v

    # Price: the device used, or the one named by cost.price_as.
    check_cost_config(cfg)
    prices = load_prices(cc.price_file)
    priced = (cc.price_as.lower().replace("-", "") if cc.price_as else key)
    if cc.price_as:
        out["price_as"] = priced
    if cc.price_usd_per_hour > 0:
        price, source = cc.price_usd_per_hour, "cost.price_usd_per_hour"
    else:
        price, source = price_of(priced, prices)
    hours = wall / 3600
    basis = "measured training wall time"
    if priced != key:
        peak_as, _ = peak_for(priced, dtype, threads)
        if peak_as:
            hours = total / (peak_as * cc.assumed_mfu) / 3600
            basis = f"projected: total_flops / ({priced} peak x assumed MFU {cc.assumed_mfu})"
        else:
            basis = "measured training wall time (no peak for the priced device to project with)"
        out["projected_time_s"] = hours * 3600
    out.update(
        price_usd_per_hour=price,
        price_source=source,
        cost_basis=basis,
        hours=hours,
        estimated_cost_usd=price * hours if price is not None else None,
    )
    if cc.brl_per_usd > 0:
        out["brl_per_usd"] = cc.brl_per_usd
        out["estimated_cost_brl"] = out["estimated_cost_usd"] * cc.brl_per_usd if price is not None else None
    return out


def estimate_compute(
    n_params: float,
    tokens: float,
    gpu: str = "rtx4090",
    assumed_mfu: float = 0.35,
    dtype: str = "bf16",
    price_usd_per_hour: float = 0.0,
    price_file: str = "",
    brl_per_usd: float = 0.0,
    flops_per_token_value: float | None = None,
) -> dict[str, Any]:
    """C = 6·N·D (or a given FLOPs per token × D), time = C / (peak × MFU), cost = price × hours."""
    if n_params <= 0 or tokens <= 0:
        raise BrlmError(f"N={n_params:g}, D={tokens:g}: parameters and tokens must be > 0")
    if not 0 < assumed_mfu <= 1:
        raise BrlmError(f"--mfu={assumed_mfu}: expected a number in (0, 1]")
    key = gpu.lower().replace("-", "")
    if key == "cpu":
        peak, peak_source = peak_for("cpu", dtype)
    else:
        spec = gpu_spec(key)
        key = spec["name"]
        peak, peak_source = spec[_peak_column(dtype)], f"{spec['title']} {_peak_column(dtype)} dense peak (table)"
    fpt = flops_per_token_value if flops_per_token_value else 6.0 * n_params
    total = fpt * tokens
    seconds = total / (peak * assumed_mfu)
    if price_usd_per_hour > 0:
        price, source = price_usd_per_hour, "--price"
    else:
        price, source = price_of(key, load_prices(price_file))
    hours = seconds / 3600
    out = {
        "n_params": n_params,
        "tokens": tokens,
        "flops_per_token": fpt,
        "total_flops": total,
        "device": key,
        "dtype": dtype,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "assumed_mfu": assumed_mfu,
        "hours": hours,
        "price_usd_per_hour": price,
        "price_source": source,
        "estimated_cost_usd": price * hours if price is not None else None,
    }
    if brl_per_usd > 0 and price is not None:
        out["estimated_cost_brl"] = price * hours * brl_per_usd
    return out
