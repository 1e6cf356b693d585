"""Device peaks for MFU: a table of GPU peaks, and a matmul peak measured once per machine on CPU.

    from brlm.compute.peak import gpu_spec, cpu_peak_flops
    gpu_spec("rtx4090")["bf16"]        # 165.2e12 FLOP/s
    cpu_peak_flops("fp32", threads=2)  # measured (seconds, once), then read from the user cache

GPU figures are the vendors' dense peaks (no 2:4 sparsity); bf16 is the tensor-core rate with fp32
accumulation (what training uses; GeForce cards run fp16-accumulate at twice that). fp32 is the
non-tensor-core rate (A100/H100 run tf32 tensor cores much faster; PyTorch uses them only with
`torch.backends.cuda.matmul.allow_tf32`). Sources: NVIDIA Ampere GA102 and Ada AD102 whitepapers
(appendix tables), A100 / H100 / H200 datasheets.

The CPU peak is what this machine's PyTorch actually reaches on a large square matmul (2·n³ FLOPs),
the best of a few repeats — an honest denominator for MFU on a CPU, where the vendor peak is rarely
reachable. The cache lives in `$BRLM_CACHE_DIR` or `$XDG_CACHE_HOME/brlm` (default
`~/.cache/brlm`), keyed by CPU model, core count, threads, dtype and torch version.
"""

from __future__ import annotations

import time
from typing import Any

from brlm.errors import BrlmError
from brlm.io.machine import MachineCache, cpu_model, machine_key

# name -> {title, vram_gb, fp32, bf16} with peaks in FLOP/s.
GPUS: dict[str, dict[str, Any]] = {
    "rtx3080": {"title": "NVIDIA GeForce RTX 3080", "vram_gb": 10, "fp32": 29.8e12, "bf16": 59.5e12},
    "rtx3090": {"title": "NVIDIA GeForce RTX 3090", "vram_gb": 24, "fp32": 35.6e12, "bf16": 71.0e12},
    "rtx4090": {"title": "NVIDIA GeForce RTX 4090", "vram_gb": 24, "fp32": 82.6e12, "bf16": 165.2e12},
    "a100": {"title": "NVIDIA A100 80GB SXM", "vram_gb": 80, "fp32": 19.5e12, "bf16": 312e12},
    "h100": {"title": "NVIDIA H100 80GB SXM", "vram_gb": 80, "fp32": 67e12, "bf16": 989e12},
    "h200": {"title": "NVIDIA H200 141GB SXM", "vram_gb": 141, "fp32": 67e12, "bf16": 989e12},
}


def gpu_spec(name: str) -> dict[str, Any]:
    key = name.lower().replace(" ", "").replace("-", "").replace("_", "")
    if key not in GPUS:
        raise BrlmError(f"GPU {name!r}: unknown; known: {', '.join(GPUS)}")
    return {"name": key, **GPUS[key]}


def match_gpu(device_name: str) -> str | None:
    """'NVIDIA GeForce RTX 4090' -> 'rtx4090'; None when the card is not in the table."""
    low = device_name.lower().replace(" ", "")
    for key in ("rtx3080", "rtx3090", "rtx4090", "a100", "h100", "h200"):
        if key in low:
            return key
    return None




def measure_matmul_peak(dtype: str = "fp32", threads: int = 0, n: int = 1024, seconds: float = 0.4) -> float:
    """Best FLOP/s of an n×n @ n×n matmul on CPU over ~`seconds` of repeats."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise BrlmError(f"dtype={dtype!r}: expected fp32 or bf16")
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(dt)
        b = torch.randn(n, n, generator=g).to(dt)
        torch.mm(a, b)  # warm-up: thread pool, packing buffers
        best = float("inf")
        t_end = time.perf_counter() + seconds
        reps = 0
        while reps < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
            reps += 1
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best


PEAK_CACHE = "cpu_peak.json"  # in brlm.io.machine.cache_dir()


def cpu_peak_flops(dtype: str = "fp32", threads: int = 0, refresh: bool = False, at_least: float = 0.0) -> dict[str, Any]:
    """The measured CPU matmul peak, from the per-machine cache when present.

    A peak is a maximum, and a busy machine only ever measures it too low; so the cache keeps the
    best measurement so far, and a cached figure below `at_least` (a rate the caller actually
    achieved, which no peak can be below) is measured again.
    """
    import torch

    threads = threads or torch.get_num_threads()
    cache = MachineCache(PEAK_CACHE)
    key = machine_key(threads, dtype)
    old = cache.get(key)
    if not refresh and old and old["peak_flops_per_s"] >= at_least:
        return {**old, "cached": True}
    flops = measure_matmul_peak(dtype, threads)
    if old:
        flops = max(flops, old["peak_flops_per_s"])
    entry = cache.put(key, {"peak_flops_per_s": flops, "dtype": dtype, "threads": threads, "cpu": cpu_model(),
                            "method": "torch.mm 1024x1024, best of repeats"})
    return {**entry, "cached": False}
