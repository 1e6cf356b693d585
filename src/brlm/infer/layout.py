"""Decode weight layout by measurement: how the engine holds each linear weight it multiplies.

A decode step multiplies a few rows (the batch) by every weight matrix. The same product reaches
very different CPU kernels depending on how the weight is held, so the engine measures, once per
machine and shape, three forms at its own batch size and keeps each weight in the fastest:

* 'row': as PyTorch keeps it, (out, in) row-major: `F.linear`, which on CPU calls MKL's sgemm.
* 'transposed': a copy with column-major strides (`W.t().contiguous().t()`). On the Intel AMX
  machine of benchmarks/RESULTS.md, 8 rows times an 8192 x 256 fp32 head take 0.59 ms row-major
  and 0.25 ms this way; one row the same either way; a 256 x 1024 projection is *slower*.
* 'packed': a copy reordered once into oneDNN's blocked layout, multiplied by oneDNN
  (`torch.ops.mkldnn._linear_pointwise`, what inductor uses for frozen bf16 linears). On an AMD
  EPYC Zen 5, MKL's fp32 GEMMs run AVX2 code (217 GFLOP/s at 2048^3) where oneDNN runs AVX-512
  (485): 8 rows times the 8192 x 256 head take 391 us row-major and 98 us packed. Each call
  costs oneDNN ~15 us of fixed overhead, so small products stay with MKL.

A form other than 'row' is kept only when it takes at most 0.9x the row-major time.

    model, record = decode_layout(model, rows=8)            # a copy that shares every other tensor
    model, record = decode_layout(model, rows=8, mode="keep")  # the model as it is

The model passed in is never changed (a caller may go on training or saving it): relaid weights
live in a copy of the module tree that shares every other parameter and buffer with it, unless
`owned=True` (the engine's own bf16 copy), where they are relaid in place. Tied weights (embedding
and head) stay tied: they are one Parameter, relaid once; a packed head keeps the Parameter (the
embedding reads it) beside its packed copy. The extra memory is the relaid weights' bytes; above a
quarter of the memory available it keeps the model as it is. Decisions are cached in
`cache_dir()/decode_layout.json` per machine, threads and torch version (io.machine.MachineCache),
so later engines on the machine decide the same without measuring, unless the machine was busy.
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
import weakref
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.io.machine import MachineCache, cpu_bf16_support, machine_key
from brlm.io.machine import available_bytes as _available_bytes  # module names: tests replace them
from brlm.io.machine import load_per_core as _load_per_core

MODES = ("auto", "keep", "transposed", "packed")
FORMS = ("row", "transposed", "packed")
GAIN = 0.9  # a form other than row-major is kept when it takes at most this share of the row-major time
CACHE_VERSION = "v3"  # in the cache key: v1 decisions knew two forms, v2 timed a weight already in cache
_decided: dict[str, dict[str, Any]] = {}  # this process's decisions: the same within a process, busy or not


def _shape_key(shape: tuple[int, ...], dtype: torch.dtype, bias: bool, rows: int, device: torch.device) -> str:
    dt = str(dtype).replace("torch.", "")
    return f"{dt} {shape[0]}x{shape[1]} bias={int(bias)} rows={rows} {device.type}"


# -- the packed form: oneDNN's own layout, multiplied by oneDNN --------------------------------

_PACKED: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()
_keys = itertools.count()


def packing_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this PyTorch can pack a CPU linear weight of `dtype` for oneDNN (builds with MKLDNN:
    x86-64 Linux and Windows, macOS, aarch64). bf16 also needs the CPU's support: on an AVX2-only
    AMD EPYC Zen 3, packing a bf16 weight raises ('bf16 path needs the cpu support avx_ne_convert
    or avx512bw, avx512vl and avx512dq'), so bf16 weights there keep the row-major forms."""
    available = (dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
                 and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    if available and dtype == torch.bfloat16:
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        available = supported is not None and bool(supported())
    return available


@torch.library.custom_op("brlm::packed_linear", mutates_args=())
def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], key: int) -> torch.Tensor:
    """F.linear(x, weight, bias) by oneDNN with the packed copy of `weight` registered under `key`.
    The copy is found by key because a oneDNN-layout tensor cannot pass through a torch.compile
    graph and an int can; `weight` itself gives the compiled graph its shape."""
    return torch.ops.mkldnn._linear_pointwise(x, _PACKED[key], bias, "none", [], "")


@packed_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], key: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class PackedLinear(nn.Module):
    """An nn.Linear for decoding only: the same Parameters (state, ties, shapes) plus a copy of the
    weight packed for oneDNN at `rows` rows (no autograd: the engine never trains)."""

    def __init__(self, linear: nn.Linear, rows: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.rows = rows
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)  # held here, found by key
        self.key = next(_keys)
        _PACKED[self.key] = self.packed

    @classmethod
    def of(cls, weight: nn.Parameter | torch.Tensor, bias: nn.Parameter | torch.Tensor | None, rows: int) -> "PackedLinear":
        """A PackedLinear over these tensors (made Parameters without grad where they are not
        Parameters yet), with no nn.Linear of its own allocated."""
        def param(t: torch.Tensor) -> nn.Parameter:
            return t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        lin.weight = param(weight)
        lin.bias = param(bias) if bias is not None else None
        return cls(lin, rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return packed_linear(x, self.weight, self.bias, self.key)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")  # eager: no custom-op dispatch

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"

    def __deepcopy__(self, memo: dict[int, Any]) -> "PackedLinear":
        """A copy packs its own (copied) weight: the packed tensor is not a Parameter."""
        bias = copy.deepcopy(self.bias, memo) if self.bias is not None else None
        new = PackedLinear.of(copy.deepcopy(self.weight, memo), bias, self.rows)
        new.train(self.training)
        memo[id(self)] = new
        return new


# -- measurement ---------------------------------------------------------------------------------


COLD_BYTES = 64 * 2**20  # weight copies a measurement cycles through: twice a large L3, so each product reads from memory
MAX_COPIES = 1024  # tiny weights: this many copies at most (they are cheap to read from anywhere)


def measure(w: torch.Tensor, bias: torch.Tensor | None, rows: int) -> dict[str, float]:
    """Seconds per product of (rows, in) by w in each form (FORMS; 'packed' only where oneDNN can
    pack w): best of interleaved rounds, each form through the call the engine would make.

    Each product reads a weight that is not in cache, as in decoding, where a step streams every
    weight of the model once: the forms are timed on enough copies of w (COLD_BYTES in all, at
    most MAX_COPIES), taken in turn, that none is still cached when its turn comes again. Timing
    one hot weight chose wrong: on an AMD EPYC Zen 4 (32 MB L3 shared with other tenants) hot products of 8 rows
    by 256 x 1024 took 78 us row-major against 72 packed, and the whole batch-8 gpt step, 4.8-6.7
    ms with the weights so chosen, took 3.8-4.5 ms with every weight packed."""
    x = torch.full((rows, w.shape[1]), 0.01, dtype=w.dtype, device=w.device)  # values do not matter; no RNG used
    w = w.detach()
    b = bias.detach() if bias is not None else None
    n = max(1, min(MAX_COPIES, COLD_BYTES // max(1, w.numel() * w.element_size())))
    ws = [w] if n == 1 else [w.clone() for _ in range(n)]  # a weight of COLD_BYTES or more is never cached
    calls = {"row": [functools.partial(F.linear, x, wi, b) for wi in ws],
             "transposed": [functools.partial(F.linear, x, wi.t().contiguous().t(), b) for wi in ws]}
    if w.device.type == "cpu" and packing_available(w.dtype):
        calls["packed"] = [functools.partial(PackedLinear.of(wi, b, rows), x) for wi in ws]

    def one_pass(fns: list[Any]) -> float:  # seconds per product over every copy once
        t = time.perf_counter()
        for fn in fns:
            fn()
        return (time.perf_counter() - t) / len(fns)

    best = dict.fromkeys(calls, float("inf"))
    with torch.inference_mode():
        for fns in calls.values():
            one_pass(fns)  # oneDNN creates its primitive on the first call; pages fault in
        for _ in range(5):
            for form, fns in calls.items():
                best[form] = min(best[form], one_pass(fns))
    return best


PACKED_ONE_ROW_GAIN = 0.75  # one row: the packed form only at this share of the fastest other form


def _fastest(times: dict[str, float], rows: int) -> str:
    """'row', or the fastest other form where it takes at most GAIN x the row-major time. For one
    row the packed form needs a clear lead (PACKED_ONE_ROW_GAIN x the best other form): a
    matrix-vector product is read at memory speed by the other forms, and oneDNN's fixed cost per
    call weighs more in a model than in a product timed alone. On an AMD EPYC Zen 4, packing
    llama's 256 x 704 down-projections, timed at 0.9x row-major, made batch-1 decoding slower (231
    against 262 tokens/s eager, 338 against 373 compiled)."""
    if rows == 1 and "packed" in times:
        others = min(t for f, t in times.items() if f != "packed")
        if times["packed"] > PACKED_ONE_ROW_GAIN * others:
            times = {f: t for f, t in times.items() if f != "packed"}
    form = min((f for f in FORMS if f in times), key=lambda f: times[f])
    return form if form == "row" or times[form] <= GAIN * times["row"] else "row"


def shape_times(m: nn.Linear, rows: int, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Microseconds per product of m's shape at `rows` rows in `dtype` (default: its own) in each
    form, and the form kept: from this process, else the machine's cache, else measured (and
    cached, unless the machine is busy: load above 1 per core)."""
    dtype = dtype or m.weight.dtype
    key = _shape_key(tuple(m.weight.shape), dtype, m.bias is not None, rows, m.weight.device)
    full = machine_key(torch.get_num_threads(), f"decode_layout {CACHE_VERSION}", key)
    cpu = m.weight.device.type == "cpu"
    cache = MachineCache("decode_layout.json")
    entry = _decided.get(full) or (cache.get(full) if cpu else None)
    if entry is None:
        w = m.weight.detach().to(dtype)
        b = m.bias.detach().to(dtype) if m.bias is not None else None
        t = measure(w, b, rows)
        entry = {**{f"{f}_us": round(t[f] * 1e6, 2) for f in FORMS if f in t}, "form": _fastest(t, rows)}
        if cpu and _load_per_core() <= 1.0:
            cache.put(full, entry)
    _decided[full] = entry
    return {"key": key, **entry}


def choose(linears: list[nn.Linear], rows: int, mode: str) -> tuple[dict[int, str], dict[str, Any]]:
    """{id(weight): 'transposed' or 'packed'} for the weights to relay, and per shape what was
    measured (or cached)."""
    if mode not in MODES:
        raise ValueError(f"layout={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "keep" or not linears:
        return {}, {}
    if mode == "packed" and not all(m.weight.device.type == "cpu" and packing_available(m.weight.dtype) for m in linears):
        raise ValueError("layout='packed': needs fp32 or bf16 CPU weights and a PyTorch built with oneDNN "
                         "(torch.backends.mkldnn.is_available())")
    if mode in ("transposed", "packed"):
        return {id(m.weight): mode for m in linears}, {}
    if any(m.weight.device.type != "cpu" for m in linears):
        return {}, {}  # timed on the CPU only: a GPU's launches are asynchronous, its GEMMs another matter
    shapes: dict[str, dict[str, Any]] = {}
    chosen: dict[int, str] = {}
    for m in linears:
        t = shape_times(m, rows)
        shapes[t.pop("key")] = t
        if t["form"] != "row":
            chosen[id(m.weight)] = t["form"]
    return chosen, shapes


def choose_decode_dtype(model: nn.Module, rows: int, support: dict[str, bool] | None = None) -> tuple[torch.dtype, dict[str, Any]]:
    """`dtype: auto` for decoding: bf16 weights only where the CPU has native bf16 (AMX or AVX-512
    BF16) *and* the model's linear layers, at `rows` rows each in its fastest form, take at most
    0.9x their fp32 time. Small models' matrix-vector products are often slower in bf16 (on the
    AMX machine of benchmarks/RESULTS.md the 5.3 M-parameter llama decodes at about half the fp32
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
            total[name] += t[f"{t['form']}_us"]
    ratio = total["bf16"] / max(total["fp32"], 1e-9)
    chosen = "bf16" if ratio <= GAIN else "fp32"
    return (torch.bfloat16 if chosen == "bf16" else torch.float32,
            {"chosen": chosen, "reason": f"linear layers at {rows} rows: bf16 takes {ratio:.2f}x the fp32 time "
                                         f"(bf16 needs <= {GAIN})", "fp32_us": round(total["fp32"], 1),
             "bf16_us": round(total["bf16"], 1)})


def decode_layout(model: nn.Module, rows: int, mode: str = "auto", owned: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """(the model to decode with, a record: mode, relaid weight names per form, their bytes,
    per-shape times).

    2-D weights of nn.Linear modules only (bitsandbytes / quantized linears are other classes and
    stay as they are)."""
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    chosen, shapes = choose(linears, rows, mode)
    record: dict[str, Any] = {"mode": mode, "rows": rows, "transposed": [], "packed": [], "bytes": 0, "shapes": shapes}
    if not chosen:
        return model, record
    nbytes = sum(p.numel() * p.element_size() for p in {id(m.weight): m.weight for m in linears if id(m.weight) in chosen}.values())
    avail = _available_bytes()
    if not owned and avail is not None and nbytes > avail // 4:
        record["skipped"] = f"a relaid copy needs {nbytes / 2**20:.0f} MiB, more than a quarter of the available memory"
        return model, record
    transposed = {k for k, form in chosen.items() if form == "transposed"}
    if not owned:
        # Share every tensor but the weights to transpose: deepcopy takes a memo entry as the copy itself.
        shared = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in transposed}
        model = copy.deepcopy(model, dict(shared))
        transposed = {id(m.weight) for m in model.modules() if type(m) is nn.Linear and id(m.weight) not in shared}
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for prefix, parent in list(model.named_modules()):
        for child_name, mod in list(parent.named_children()):
            if type(mod) is not nn.Linear:
                continue
            if id(mod.weight) in transposed and mod.weight.is_contiguous():  # a tied weight is relaid once
                with torch.no_grad():
                    mod.weight.data = mod.weight.data.t().contiguous().t()
                record["transposed"].extend(names[id(mod.weight)])
            elif chosen.get(id(mod.weight)) == "packed":
                setattr(parent, child_name, PackedLinear(mod, rows))
                record["packed"].append(f"{prefix + '.' if prefix else ''}{child_name}.weight")
    record["bytes"] = nbytes
    return model, record
