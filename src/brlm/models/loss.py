"""The language-model head and its cross-entropy in one pass, a chunk of rows at a time.

The usual `F.cross_entropy(hidden @ W.T, targets)` materialises the (B*T, V) logits, a log-softmax
of the same size, and in backward a same-size gradient plus its zero fill. With V = 8192 and
4096 tokens that is 134 MB per tensor, and on a CPU each one is a fresh allocation whose pages
fault in one by one. On the 5.3 M-parameter benchmark model those element-wise passes over the
logits took 30 % of a training step (benchmarks/RESULTS.md).

`linear_cross_entropy` computes logits for `chunk_rows` rows at a time, turns them into the
loss and, when a gradient is needed, straight into d(loss)/d(logits) = (softmax - onehot) / n in
place, then into the gradients of the hidden states and of the head weight (and bias). Those are
kept and scaled by the incoming gradient in backward. The same idea is Liger-Kernel's
FusedLinearCrossEntropy and torchtune's chunked loss. The matmul FLOPs do not change; what goes
away is the (B*T, V) memory and the passes over it.

    loss = linear_cross_entropy(hidden, lm_head.weight, targets)   # hidden (..., C), targets (...)

Targets equal to `ignore_index` (-100, as in `F.cross_entropy`) count neither in the loss nor in
its mean. With `label_smoothing` ε the target distribution is (1 - ε)·onehot + ε/V, as in
`F.cross_entropy(..., label_smoothing=ε)`: the loss adds ε·(logsumexp - mean logit) per row and
the gradient subtracts ε/V from every class. The result matches `F.cross_entropy(F.linear(hidden,
weight, bias), targets, label_smoothing=ε)` and its gradients to float rounding
(tests/test_models_loss.py).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from brlm.io.machine import load_per_core as _load_per_core

IGNORE_INDEX = -100
CHUNK_BYTES = 4 * 2**20  # logits per chunk in the matmuls' dtype: 4 MB (128 fp32 / 256 bf16 rows at V = 8192)


def default_chunk_rows(vocab_size: int, itemsize: int = 4) -> int:
    """Rows per chunk: CHUNK_BYTES of logits in the matmuls' dtype (`itemsize` bytes). In fp32,
    128 to 512 rows cost the same at V = 8192 on the AMX machine; in bf16 the three head matmuls
    of a 128-row chunk ran at ~600 GFLOP/s against ~1,000-1,400 at 256 rows, and the whole loss
    (forward + backward, 4096 x 8192) took 117-120 ms in 128-row chunks against 87-108 ms in 256."""
    return max(16, CHUNK_BYTES // (itemsize * vocab_size))


def _matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's where it is on (as nn.Linear would), else hidden's."""
    dev = hidden.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype


def _chunk_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                        grad_scale: torch.Tensor | None, smoothing: float = 0.0, dim: int = 1) -> torch.Tensor:
    """Summed loss of one chunk of (at least fp32) `logits`: (rows, V) with dim=1, or (V, rows) with
    dim=0 (the "col" layout). With `grad_scale` (rows,), overwrites `logits` with
    grad_scale * (softmax - target distribution), the gradient of the loss."""
    safe = targets.clamp(min=0).unsqueeze(dim)  # ignored rows point at 0; their weight is 0
    target_logit = logits.gather(dim, safe).squeeze(dim)
    if smoothing:
        # -sum_j q_j log p_j with q = (1-ε)·onehot + ε/V  =  lse - (1-ε)·z_target - ε·mean_j z_j
        target_logit = (1.0 - smoothing) * target_logit + smoothing * logits.mean(dim=dim)
    if grad_scale is None:
        lse = torch.logsumexp(logits, dim=dim)
    else:
        row_max = logits.amax(dim=dim, keepdim=True)
        logits.sub_(row_max).exp_()
        row_sum = logits.sum(dim=dim, keepdim=True)
        lse = row_max.squeeze(dim) + row_sum.squeeze(dim).log()
        scale = grad_scale.unsqueeze(dim)
        logits.mul_(scale / row_sum)  # softmax * scale
        logits.scatter_add_(dim, safe, -(1.0 - smoothing) * scale)  # - (1-ε)·onehot * scale
        if smoothing:
            logits.sub_((smoothing / logits.size(dim)) * scale)  # - ε/V * scale
    return ((lse - target_logit) * valid).sum()


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, col: bool) -> torch.Tensor:
    """h (rows, C) times the head: (rows, V) logits, or with `col` their transpose (V, rows), the
    same GEMM with its operands exchanged (on an AVX2 Zen 3 about 1.3-1.5x faster at 128-512 rows)."""
    if not col:
        return F.linear(h, w, b)
    return torch.addmm(b.unsqueeze(1), w, h.t()) if b is not None else w @ h.t()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_rows, smoothing, col):  # type: ignore[override]
        dev = hidden.device.type
        cdt = _matmul_dtype(hidden)  # softmax stays fp32 at least
        acc = torch.promote_types(cdt, torch.float32)  # softmax and sums: fp32 at least
        valid = (targets != ignore_index).to(acc)
        n_valid = valid.sum().clamp(min=1.0)
        scale = valid / n_valid  # each valid row's share of the mean
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias, dtype=acc) if bias is not None and ctx.needs_input_grad[2] else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        with torch.autocast(dev, enabled=False):
            w = weight.to(cdt)
            b = bias.to(cdt) if bias is not None else None
            for start in range(0, hidden.size(0), chunk_rows):
                rows = slice(start, start + chunk_rows)
                h = hidden[rows].to(cdt)
                logits = _chunk_logits(h, w, b, col).to(acc)  # (rows, V), or (V, rows) with col
                total += _chunk_softmax_loss(logits, targets[rows], valid[rows], scale[rows], smoothing, 0 if col else 1)
                g = logits.to(cdt)  # now the gradient of the loss w.r.t. these logits
                g_rows = g.t() if col else g  # (rows, V)
                if grad_hidden is not None:
                    grad_hidden[rows] = g_rows @ w
                if grad_weight is not None:
                    if cdt == acc and torch.compiler.is_compiling():
                        # Inductor turns out= into a fresh result plus a copy back: 8 MB per chunk at V = 8192.
                        grad_weight = torch.addmm(grad_weight, g_rows.t(), h)
                    elif cdt == acc:
                        torch.addmm(grad_weight, g_rows.t(), h, out=grad_weight)  # in place, seen by FlopCounterMode
                    else:
                        grad_weight += (g_rows.t() @ h).to(acc)
                if grad_bias is not None:
                    grad_bias += logits.sum(dim=1 if col else 0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total / n_valid

    @staticmethod
    @torch.autograd.function.once_differentiable  # the gradients were computed in forward
    def backward(ctx, grad_loss):  # type: ignore[override]
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes

        def scaled(g: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
            if g is None:
                return None
            return (g * grad_loss.float()).to(dtype or g.dtype)  # fp32 scale: 1/k is not rounded to bf16

        return (scaled(grad_hidden, None), scaled(grad_weight, w_dtype), scaled(grad_bias, b_dtype),
                None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                         chunk_rows: int | None = None, label_smoothing: float = 0.0,
                         layout: str | None = None) -> torch.Tensor:
    """Mean cross-entropy of `F.linear(hidden, weight, bias)` against `targets` (smoothed by
    `label_smoothing`), without ever holding all the logits. hidden: (..., C); weight: (V, C);
    targets: (...) int64. `layout` 'row' or 'col' and `chunk_rows` default to what
    choose_loss_plan decided for this shape in this process (else 'row', 4 MB chunks)."""
    if layout not in (None, "row", "col"):
        raise ValueError(f"layout={layout!r}: expected 'row' or 'col'")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: expected a number in [0, 1)")
    C, V = hidden.size(-1), weight.size(0)
    hidden, targets = hidden.reshape(-1, C), targets.reshape(-1)
    if hidden.size(0) != targets.size(0):
        raise ValueError(f"hidden has {hidden.size(0)} rows but targets has {targets.size(0)}")
    if not torch.compiler.is_compiling():
        # F.cross_entropy's check: the chunks would otherwise read a wrong target as class 0.
        bad = ((targets < 0) & (targets != ignore_index)) | (targets >= V)
        if bool(bad.any()):
            raise IndexError(f"target {int(targets[bad][0])} is out of bounds for a vocabulary of {V} "
                             f"(ignore_index={ignore_index})")
    cdt = _matmul_dtype(hidden)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    # The planned layout serves training only: a loss without gradients (evaluation) sums in the same
    # order in every process, whatever this one decided.
    col, planned_rows = (plan_for(V, C, cdt, hidden.device.type, bias is not None) if needs_grad else (False, None)) \
        if layout is None else (layout == "col", None)
    rows = chunk_rows or planned_rows or default_chunk_rows(V, torch.finfo(cdt).bits // 8)
    if needs_grad:
        return _LinearCrossEntropy.apply(hidden.contiguous(), weight, bias, targets, ignore_index, rows,
                                         float(label_smoothing), col)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    valid = (targets != ignore_index).to(acc)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for start in range(0, hidden.size(0), rows):
        sl = slice(start, start + rows)
        total += _chunk_softmax_loss(_chunk_logits(hidden[sl], weight, bias, col).to(acc), targets[sl], valid[sl], None,
                                     float(label_smoothing), 0 if col else 1)
    return total / valid.sum().clamp(min=1.0)


# -- which layout and chunk size, by measurement -------------------------------------------------

PLAN_GAIN = 0.95  # another plan is taken only when the whole loss takes at most this share of the default's time
PROBE_FLOPS = 2e10  # above this per probe call (a big vocabulary times a wide model) the default is kept unmeasured
_plans: dict[tuple[int, int, str, str, bool], tuple[bool, int]] = {}  # this process's decisions: (col, rows)


def _plan_key(V: int, C: int, dtype: torch.dtype, device_type: str, bias: bool) -> tuple[int, int, str, str, bool]:
    return V, C, str(dtype).replace("torch.", ""), device_type, bias


def plan_for(V: int, C: int, dtype: torch.dtype, device_type: str, bias: bool) -> tuple[bool, int | None]:
    """(col layout?, chunk rows or None for the default) decided for this shape by choose_loss_plan
    in this process; the row layout with default chunks where nothing was decided."""
    return _plans.get(_plan_key(V, C, dtype, device_type, bias), (False, None))


def _time_plan(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
               col: bool, rows: int) -> float:
    t0 = time.perf_counter()
    loss = linear_cross_entropy(hidden, weight, targets, bias=bias, chunk_rows=rows, layout="col" if col else "row")
    loss.backward()
    return time.perf_counter() - t0


def choose_loss_plan(weight: torch.Tensor, bias: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                     rows: int | None = None, cache: bool = True) -> dict[str, Any]:
    """Decide, for this process, how the fused loss multiplies a head of `weight`'s shape in
    training, with its matmuls in `dtype` (default: the weight's), for calls of up to `rows` rows (a
    step's batch x block): logits (rows, V) or their transpose (V, rows), in chunks of the default
    4 MB or twice that. Which is faster depends on the CPU's GEMM kernels: on an AVX2 Zen 3,
    `W @ h.T` ran 1.3-1.5x faster than `h @ W.T` at 128-512 rows, and 256-row chunks beat 128.

    It times the whole loss (forward + backward, 2 chunks of the larger size or `rows` if fewer,
    random values, forked RNG) in each plan, interleaved, best of 3 rounds, and takes another plan
    than the default only at <= PLAN_GAIN of its time. CPU only (a GPU keeps the default). The
    first decision per machine and shape is kept in cache_dir()/loss_plan.json, even from a busy
    machine, so that every later run here sums its loss in the same order (a resumed run stays
    bit-exact). Returns the record for train.json."""
    from brlm.io.machine import MachineCache, machine_key

    V, C = weight.shape
    dtype = dtype or weight.dtype
    dev = weight.device
    key = _plan_key(V, C, dtype, dev.type, bias is not None)
    base_rows = default_chunk_rows(V, torch.finfo(dtype).bits // 8)
    record: dict[str, Any] = {"layout": "row", "chunk_rows": base_rows}
    n = min(4 * base_rows, rows or 4 * base_rows)
    if dev.type != "cpu":
        _plans.pop(key, None)
        return {**record, "reason": f"{dev.type}: not measured, default"}
    if 6 * n * C * V > PROBE_FLOPS:
        _plans.pop(key, None)
        return {**record, "reason": f"head {V}x{C}: too big to time quickly, default"}
    mkey = machine_key(torch.get_num_threads(), "loss_plan", f"V{V} C{C} {key[2]} bias={int(bias is not None)} rows={n}")
    store = MachineCache("loss_plan.json")
    entry = store.get(mkey) if cache else None
    if entry is None:
        sizes = [base_rows, 2 * base_rows] if n > base_rows else [base_rows]  # one chunk either way: layout only
        plans = [(col, r) for col in (False, True) for r in sizes]
        best = [float("inf")] * len(plans)
        with torch.random.fork_rng(devices=[]), torch.autocast("cpu", dtype=dtype, enabled=dtype != weight.dtype):
            w = weight.detach().clone().requires_grad_(True)
            b = bias.detach().clone().requires_grad_(True) if bias is not None else None
            h = (torch.randn(n, C) * C ** -0.5).requires_grad_(True)
            t = torch.randint(0, V, (n,))
            for c, r in plans:  # warm-up: allocator, kernels
                _time_plan(h, w, b, t, c, r)
            for _ in range(3):
                for i, (c, r) in enumerate(plans):
                    best[i] = min(best[i], _time_plan(h, w, b, t, c, r))
        i = min(range(len(plans)), key=best.__getitem__)
        if best[i] > PLAN_GAIN * best[0]:
            i = 0
        entry = {"layout": "col" if plans[i][0] else "row", "chunk_rows": plans[i][1],
                 "ms": {f"{'col' if c else 'row'}/{r}": round(x * 1e3, 2) for (c, r), x in zip(plans, best)},
                 "rows_timed": n, "load_per_core": round(_load_per_core(), 2)}
        if cache:  # kept even from a busy machine: every later run here then sums its loss in the same order
            store.put(mkey, entry)
        entry = {**entry, "cached": False}
    else:
        entry = {**entry, "cached": True}
    _plans[key] = (entry["layout"] == "col", entry["chunk_rows"])
    return entry


