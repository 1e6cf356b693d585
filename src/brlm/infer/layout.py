"""Decode weight layout by measurement: which linear weights the engine keeps transposed.

A decode step multiplies a few rows (the batch) by every weight matrix. `F.linear(x, W)` with W
stored as PyTorch keeps it, (out, in) row-major, reaches a different CPU GEMM kernel than the same
product with W stored (in, out): on the Intel AMX machine of benchmarks/RESULTS.md, 8 rows times
an 8192 x 256 fp32 head take 0.59 ms the first way and 0.25 ms the second, while one row takes
about the same either way, and a 256 x 1024 projection is *slower* transposed. So the engine
measures, once per machine and shape, both layouts at its own batch size and keeps a transposed
copy (same values, column-major strides: `W.t().contiguous().t()`) only of the weights that are
at least 10 % faster that way.

    model, record = decode_layout(model, rows=8)            # a copy that shares every other tensor
    model, record = decode_layout(model, rows=8, mode="keep")  # the model as it is

The model passed in is never changed (a caller may go on training or saving it): relaid weights
live in a copy of the module tree that shares every other parameter and buffer with it, unless
`owned=True` (the engine's own bf16 copy), where they are relaid in place. Tied weights (embedding
and head) stay tied: they are one Parameter, relaid once. The extra memory is the relaid weights'
bytes; above a quarter of the memory available it keeps the model as it is. Decisions are cached in
`cache_dir()/decode_layout.json` per machine, threads and torch version (io.machine.MachineCache),
so later engines on the machine decide the same without measuring, unless the machine was busy.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.io.machine import MachineCache, cpu_bf16_support, machine_key

MODES = ("auto", "keep", "transposed")
GAIN = 0.9  # transposed is kept when it takes at most this share of the row-major time
_decided: dict[str, dict[str, Any]] = {}  # this process's decisions: the same within a process, busy or not


def _shape_key(shape: tuple[int, ...], dtype: torch.dtype, bias: bool, rows: int, device: torch.device) -> str:
    dt = str(dtype).replace("torch.", "")
    return f"{dt} {shape[0]}x{shape[1]} bias={int(bias)} rows={rows} {device.type}"


def _time(fn: Any, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def measure(w: torch.Tensor, bias: torch.Tensor | None, rows: int) -> dict[str, float]:
    """Seconds per F.linear of (rows, in) by w row-major and transposed: best of interleaved rounds."""
    x = torch.full((rows, w.shape[1]), 0.01, dtype=w.dtype, device=w.device)  # values do not matter; no RNG used
    wt = w.detach().t().contiguous().t()
    w = w.detach()
    b = bias.detach() if bias is not None else None
    # Enough calls per round for ~5 ms of work, whatever the size; 7 interleaved rounds.
    one = _time(lambda: F.linear(x, w, b), 3)
    reps = max(3, min(500, int(5e-3 / max(one, 1e-7))))
    best = {"row": float("inf"), "transposed": float("inf")}
    with torch.inference_mode():
        for _ in range(7):
            best["row"] = min(best["row"], _time(lambda: F.linear(x, w, b), reps))
            best["transposed"] = min(best["transposed"], _time(lambda: F.linear(x, wt, b), reps))
    return best


def shape_times(m: nn.Linear, rows: int, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Microseconds per F.linear of m's shape at `rows` rows in `dtype` (default: its own), both
    layouts, and whether transposed wins: from this process, else the machine's cache, else measured
    (and cached, unless the machine is busy: load above 1 per core)."""
    dtype = dtype or m.weight.dtype
    key = _shape_key(tuple(m.weight.shape), dtype, m.bias is not None, rows, m.weight.device)
    full = machine_key(torch.get_num_threads(), "decode_layout", key)
    cpu = m.weight.device.type == "cpu"
    cache = MachineCache("decode_layout.json")
    entry = _decided.get(full) or (cache.get(full) if cpu else None)
    if entry is None:
        w = m.weight.detach().to(dtype)
        b = m.bias.detach().to(dtype) if m.bias is not None else None
        t = measure(w, b, rows)
        entry = {"row_us": round(t["row"] * 1e6, 2), "transposed_us": round(t["transposed"] * 1e6, 2),
                 "transposed": t["transposed"] <= GAIN * t["row"]}
        if cpu and _load_per_core() <= 1.0:
            cache.put(full, entry)
    _decided[full] = entry
    return {"key": key, **entry}


def _load_per_core() -> float:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _available_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose(linears: list[nn.Linear], rows: int, mode: str) -> tuple[set[int], dict[str, Any]]:
    """ids of the weights to keep transposed, and per shape what was measured (or cached)."""
    if mode not in MODES:
        raise ValueError(f"layout={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "keep" or not linears:
        return set(), {}
    if mode == "transposed":
        return {id(m.weight) for m in linears}, {}
    if any(m.weight.device.type != "cpu" for m in linears):
        return set(), {}  # timed on the CPU only: a GPU's launches are asynchronous, its GEMMs another matter
    shapes: dict[str, dict[str, Any]] = {}
    chosen: set[int] = set()
    for m in linears:
        t = shape_times(m, rows)
        shapes[t.pop("key")] = t
        if t["transposed"]:
            chosen.add(id(m.weight))
    return chosen, shapes


def choose_decode_dtype(model: nn.Module, rows: int, support: dict[str, bool] | None = None) -> tuple[torch.dtype, dict[str, Any]]:
    """`dtype: auto` for decoding: bf16 weights only where the CPU has native bf16 (AMX or AVX-512
    BF16) *and* the model's linear layers, at `rows` rows in their faster layout, take at most 0.9×
    their fp32 time. Small models' matrix-vector products are often slower in bf16 (on the AMX
    machine of benchmarks/RESULTS.md the 5.3 M-parameter llama decodes at about half the fp32
    speed); large ones read half the bytes. Returns (dtype, record of the choice)."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return (torch.bfloat16 if ok else torch.float32,
                {"chosen": "bf16" if ok else "fp32", "reason": f"CUDA {'with' if ok else 'without'} bf16 support"})
    if dev.type != "cpu":
        return torch.float32, {"chosen": "fp32", "reason": f"{dev.type} weights: not measured, fp32"}
    support = cpu_bf16_support() if support is None else support
    if not any(support.values()):
        return torch.float32, {"chosen": "fp32", "reason": "no native bf16 on this CPU"}
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    if not linears:
        return torch.bfloat16, {"chosen": "bf16", "reason": "native bf16; no linear layers to measure"}
    total = {"fp32": 0.0, "bf16": 0.0}
    for m in linears:
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            t = shape_times(m, rows, dt)
            total[name] += min(t["row_us"], t["transposed_us"])
    ratio = total["bf16"] / max(total["fp32"], 1e-9)
    chosen = "bf16" if ratio <= GAIN else "fp32"
    return (torch.bfloat16 if chosen == "bf16" else torch.float32,
            {"chosen": chosen, "reason": f"linear layers at {rows} rows: bf16 takes {ratio:.2f}x the fp32 time "
                                         f"(bf16 needs <= {GAIN})", "fp32_us": round(total["fp32"], 1),
             "bf16_us": round(total["bf16"], 1)})


def decode_layout(model: nn.Module, rows: int, mode: str = "auto", owned: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """(the model to decode with, a record: mode, relaid weight names, their bytes, per-shape times).

    2-D weights of nn.Linear modules only (bitsandbytes / quantized linears are other classes and
    stay as they are)."""
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    chosen, shapes = choose(linears, rows, mode)
    record: dict[str, Any] = {"mode": mode, "rows": rows, "transposed": [], "bytes": 0, "shapes": shapes}
    if not chosen:
        return model, record
    nbytes = sum(p.numel() * p.element_size() for p in {id(m.weight): m.weight for m in linears if id(m.weight) in chosen}.values())
    avail = _available_bytes()
    if not owned and avail is not None and nbytes > avail // 4:
        record["skipped"] = f"a transposed copy needs {nbytes / 2**20:.0f} MiB, more than a quarter of the available memory"
        return model, record
    if owned:
        targets = [m for m in model.modules() if type(m) is nn.Linear and id(m.weight) in chosen]
    else:
        # Share every tensor but the chosen weights: deepcopy takes a memo entry as the copy itself.
        shared = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in chosen}
        model = copy.deepcopy(model, dict(shared))
        targets = [m for m in model.modules() if type(m) is nn.Linear and id(m.weight) not in shared]
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for mod in targets:
        if mod.weight.is_contiguous():  # a tied weight is relaid once
            with torch.no_grad():
                mod.weight.data = mod.weight.data.t().contiguous().t()
            record["transposed"].extend(names[id(mod.weight)])
    record["bytes"] = nbytes
    return model, record

