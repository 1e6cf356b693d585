"""Which dtype training runs in. `train.dtype: auto` decides by measurement:

* GPU: bf16 autocast where the card supports it (the tensor cores run it far faster than fp32);
* CPU without native bf16 (no AMX, no AVX-512 BF16): fp32, since bf16 matmuls are emulated there;
* CPU with native bf16: a short probe times forward + backward of the model itself (its shapes,
  512 tokens) in fp32 and under bf16 autocast, alternating, about a second; bf16 wins only when it
  is at least 5 % faster. On an AMX Xeon bf16 trains ~2x faster, on AMD Zen 4 (AVX-512 BF16, no
  AMX) ~1.6x (issue 13), but a model dominated by element-wise work may gain nothing.

The probe's figures are cached per machine and model shape in the brlm cache dir (as the matmul
peak of brlm.compute.peak), so a machine pays for it once per shape; figures taken with more than
one runnable job per core decide that run only and are not cached. The decision and the figures
go into train.json (`dtype_choice`) and run.json (`train_dtype`).

    amp_dtype, record = choose_dtype("auto", torch.device("cpu"), probe=lambda: cached_probe(cfg.model, 8192))
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import torch

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.io.machine import MachineCache, cpu_bf16_support, cpu_model, machine_key
from brlm.io.machine import load_per_core as _load_per_core

MIN_SPEEDUP = 1.05  # below this, bf16's rounding is not worth it (and the probe's noise is ~ this size)
PROBE_TOKENS = 512
PROBE_SECONDS = 1.0


def probe_speed(mc: ModelConfig, vocab_size: int, device: torch.device | str = "cpu",
                seconds: float | None = None, tokens: int = PROBE_TOKENS) -> dict[str, Any]:
    """Best seconds per forward + backward of a freshly built model of this shape on `tokens`
    random tokens, in fp32 and under bf16 autocast (alternating, so load hits both alike). Runs
    under a forked RNG: the caller's seeded trajectory is untouched."""
    from brlm.models.registry import build_model

    device = torch.device(device)
    seconds = PROBE_SECONDS if seconds is None else seconds
    with torch.random.fork_rng(devices=[]):
        model = build_model(mc, vocab_size).to(device).train()
        T = min(mc.block_size, tokens)
        x = torch.randint(0, vocab_size, (max(1, tokens // T), T), device=device)

        def step(bf16: bool) -> float:
            t0 = time.perf_counter()
            amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with amp:
                _, loss = model(x, x)
            loss.backward()
            for p in model.parameters():
                p.grad = None
            return time.perf_counter() - t0

        step(False), step(True)  # warm-up: allocator, oneDNN kernels for both dtypes
        best = {False: float("inf"), True: float("inf")}
        reps, t_end = 0, time.perf_counter() + seconds
        while reps < 3 or (time.perf_counter() < t_end and reps < 8):
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], step(bf16))
            reps += 1
    return {"fp32_s_per_step": best[False], "bf16_s_per_step": best[True], "speedup": best[False] / best[True],
            "tokens_per_step": x.numel(), "repeats": reps, "load_per_core": _load_per_core()}


def probe_key(mc: ModelConfig, vocab_size: int, threads: int) -> str:
    return machine_key(threads, f"{mc.arch} L{mc.n_layer} H{mc.n_head}/{mc.kv_heads} C{mc.n_embd} "
                                f"F{getattr(mc, 'ffn_hidden', 0)} T{mc.block_size} V{vocab_size}")


def cached_probe(mc: ModelConfig, vocab_size: int, refresh: bool = False) -> dict[str, Any]:
    """probe_speed on CPU, from the per-machine cache when this shape was measured before."""
    threads = torch.get_num_threads()
    cache = MachineCache("dtype_probe.json")
    key = probe_key(mc, vocab_size, threads)
    old = cache.get(key)
    if old and not refresh:
        return {**old, "cached": True}
    entry = {**probe_speed(mc, vocab_size), "threads": threads, "cpu": cpu_model()}
    if (entry["load_per_core"] or 0.0) > 1.0:
        return {**entry, "cached": False}  # a contended machine's figures decide this run only
    cache.put(key, entry)
    return {**entry, "cached": False}


def choose_dtype(name: str, device: torch.device, support: dict[str, bool] | None = None,
                 probe: Callable[[], dict[str, Any]] | None = None) -> tuple[torch.dtype | None, dict[str, Any]]:
    """(autocast dtype or None for plain fp32, the record of why). `support` is the CPU's native
    bf16 paths (default: read from the machine), `probe` returns probe_speed-like figures and is
    only called where the decision needs it (auto, CPU with native bf16)."""
    rec: dict[str, Any] = {"requested": name}

    def done(dtype: torch.dtype | None, reason: str) -> tuple[torch.dtype | None, dict[str, Any]]:
        return dtype, {**rec, "chosen": "bf16" if dtype is torch.bfloat16 else "fp32", "reason": reason}

    if name == "fp32":
        return done(None, "asked for")
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.dtype='bf16': this GPU has no bf16 support; use 'fp32'")
        return done(torch.bfloat16, "asked for")
    if name != "auto":
        raise ConfigError(f"train.dtype={name!r}: expected 'auto', 'fp32' or 'bf16'")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return done(torch.bfloat16 if ok else None, "GPU with bf16" if ok else "GPU without bf16")
    if device.type != "cpu":
        return done(None, f"no bf16 rule for device {device.type}")
    support = cpu_bf16_support() if support is None else support
    rec["cpu_bf16"] = support
    if not any(support.values()):
        return done(None, "CPU without native bf16 (no AMX, no AVX-512 BF16): bf16 matmuls would be emulated")
    if probe is None:
        return done(None, "CPU with native bf16, but no probe to confirm it pays")
    figures = probe()
    rec["probe"] = figures
    speedup = figures["speedup"]
    if speedup >= MIN_SPEEDUP:
        return done(torch.bfloat16, f"probe: bf16 autocast {speedup:.2f}x the fp32 step")
    return done(None, f"probe: bf16 autocast only {speedup:.2f}x the fp32 step (needs {MIN_SPEEDUP}x)")
