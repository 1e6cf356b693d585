"""Causal self-attention for training: PyTorch's fused kernel, or three plain ops where they are faster.

`F.scaled_dot_product_attention` on CPU runs a flash-style kernel that never holds the T x T
scores. For short contexts in bf16 it is slow: on an AMD EPYC Zen 5 (B 16, 4 heads, T 256, head
64, bf16 autocast) forward + backward take 22 ms, where a bf16 `q @ k.T` (919 GFLOP/s), a
softmax and a bf16 `p @ v` take 10.5 ms; in fp32 the fused kernel is often the faster one. The
plain form holds the probabilities for backward (B x H x T x T in the compute dtype per layer),
the memory the fused kernel saves. So the trainer measures both once per machine and shape
(choose_attention_plan, cached like the loss plan) and layers take the plain form only where it
was chosen:

    y = causal_attention(q, k, v, dropout_p)   # (B, H, T, hd); k, v may have fewer heads (GQA)

Only computations with gradients follow the plan: evaluation and decoding always take the fused
kernel, so a model scores the same in every process whatever each one measured.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from brlm.io.machine import available_bytes as _available_bytes
from brlm.io.machine import load_per_core as _load_per_core

GAIN = 0.9  # the plain form is taken at most at this share of the fused kernel's time
_plans: dict[tuple[int, int, str, str], str] = {}  # (T, head_dim, dtype, device) -> "fused" | "plain"


def _key(T: int, head_dim: int, dtype: torch.dtype, device: str) -> tuple[int, int, str, str]:
    return (T, head_dim, str(dtype).replace("torch.", ""), device)


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention as q @ k.T, softmax, @ v, all in q's dtype: the fused kernel's result to
    the rounding of the probabilities to q's dtype. k, v: (B, Hkv, T, hd), Hkv dividing H.

    A bf16 softmax on CPU sums and divides in fp32 and rounds once on the way out, so its output
    equals `softmax(scores.float()).to(bf16)` bit for bit; its backward reads the bf16
    probabilities. Going through an fp32 copy instead (as Hugging Face's eager attention does) costs
    four extra passes over B x H x T x T values and 4 more bytes per score kept for backward: on an
    AMD EPYC Zen 4, 6.9 against 2.7 ms per layer (B 16 x 4 heads, T 256), for gradients that
    differ by 0.3 % (bf16 rounding)."""
    T, hd = q.size(-2), q.size(-1)
    if k.size(1) != q.size(1):  # grouped-query attention: each kv head serves H / Hkv query heads
        k, v = (t.repeat_interleave(q.size(1) // k.size(1), dim=1) for t in (k, v))
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    # mask + (q @ k.T) / sqrt(hd) in one product: a separate scaling of q and addition of the mask
    # are two more passes (the second over B x H x T x T), 5 of 28 ms per layer in bf16 on a Zen 4.
    scores = torch.baddbmm(mask, q.flatten(0, 1), k.flatten(0, 1).transpose(-2, -1), alpha=1.0 / math.sqrt(hd))
    p = torch.softmax(scores.view(*q.shape[:-1], T), dim=-1)  # CPU autocast keeps softmax in the input's dtype
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    return p @ v


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal self-attention over (B, H, T, hd): the plain form where choose_attention_plan chose
    it for this shape and dtype and gradients are being computed, the fused kernel otherwise."""
    if (torch.is_grad_enabled() and q.requires_grad
            and _plans.get(_key(q.size(-2), q.size(-1), q.dtype, q.device.type)) == "plain"):
        return plain_attention(q, k, v, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                          enable_gqa=k.size(1) != q.size(1))


def _time_pair(slices: int, T: int, hd: int, dtype: torch.dtype) -> dict[str, float]:
    """ms per forward + backward of each form on random (1, slices, T, hd) (its own generator: the
    global RNG is not touched): warm-up, then the best of 3 interleaved rounds."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, slices, T, hd, generator=g).to(dtype).requires_grad_() for _ in range(3))
    dy = torch.randn(1, slices, T, hd, generator=g).to(dtype)
    forms = {"fused": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), "plain": lambda: plain_attention(q, k, v)}
    best = dict.fromkeys(forms, float("inf"))
    for form in forms.values():
        form().backward(dy)
    for _ in range(3):
        for name, form in forms.items():
            t = time.perf_counter()
            form().backward(dy)
            best[name] = min(best[name], (time.perf_counter() - t) * 1e3)
    return {k: round(t, 3) for k, t in best.items()}


def choose_attention_plan(batch: int, n_head: int, T: int, head_dim: int, n_layer: int, dtype: torch.dtype,
                          device: torch.device | str = "cpu", cache: bool = True) -> dict[str, Any]:
    """Measure (once per machine and shape, kept in cache_dir()/attention_plan.json) whether the
    plain form takes at most GAIN x the fused kernel's time for forward + backward, and make this
    process's causal_attention follow the answer. Timed on at most 64 (batch x head) slices: the
    choice does not depend on how many there are. CPU only; the plain form also needs its scores
    of every layer (n_layer x batch x n_head x T x T x 4 bytes, in fp32) to fit in an eighth of the
    available memory. Returns the record for train.json."""
    device = torch.device(device)
    key = _key(T, head_dim, dtype, device.type)
    rec: dict[str, Any] = {"form": "fused", "dtype": key[2]}
    _plans.pop(key, None)
    if device.type != "cpu":
        return {**rec, "reason": f"{device.type}: the fused kernel (not timed off the CPU)"}
    too_big = _scores_too_big(batch, n_head, T, n_layer)
    if too_big:
        return {**rec, "reason": too_big}
    store, mkey, slices = _store_key(batch, n_head, T, head_dim, key[2])
    entry = store.get(mkey) if cache else None
    if entry is None:
        ms = _time_pair(slices, T, head_dim, dtype)
        entry = {"form": "plain" if ms["plain"] <= GAIN * ms["fused"] else "fused", "ms": ms,
                 "slices_timed": slices, "load_per_core": round(_load_per_core(), 2)}
        if cache:
            store.put(mkey, entry)
        entry = {**entry, "cached": False}
    else:
        entry = {**entry, "cached": True}
    _plans[key] = entry["form"]
    return {**rec, **entry}


def _scores_too_big(batch: int, n_head: int, T: int, n_layer: int) -> str | None:
    """Why the plain form may not be taken (its scores of every layer would take more than an
    eighth of the available memory), or None."""
    scores = n_layer * batch * n_head * T * T * 4  # the probabilities in fp32; half that in bf16
    avail = _available_bytes()
    if avail is not None and scores > avail // 8:
        return f"the plain form's scores would take {scores / 2**20:.0f} MiB"
    return None


def _store_key(batch: int, n_head: int, T: int, head_dim: int, dtype_name: str) -> tuple[Any, str, int]:
    from brlm.io.machine import MachineCache, machine_key

    slices = max(1, min(batch * n_head, 64))
    key = machine_key(torch.get_num_threads(), "attention_plan", f"slices{slices} T{T} hd{head_dim} {dtype_name} baddbmm")
    return MachineCache("attention_plan.json"), key, slices


def measured_form(batch: int, n_head: int, T: int, head_dim: int, n_layer: int, dtype: torch.dtype) -> str | None:
    """The form a CPU training run of this shape takes on this machine, from what an earlier
    choose_attention_plan measured ("fused" or "plain"), without measuring; None when nothing was
    measured for this shape. What `brlm estimate memory --attention auto` counts."""
    if _scores_too_big(batch, n_head, T, n_layer):
        return "fused"
    store, key, _ = _store_key(batch, n_head, T, head_dim, _key(T, head_dim, dtype, "cpu")[2])
    entry = store.get(key)
    return entry.get("form") if isinstance(entry, dict) and entry.get("form") in ("fused", "plain") else None


def saved_bytes(n_head: int, n_embd: int, T: int, impl: str, dropout: float, compute_bytes: int = 4,
                kv_heads: int | None = None) -> float:
    """Bytes one layer's attention saves for backward per token beyond q, k, v and its output, by
    form, in a compute dtype of `compute_bytes` (4: fp32; 2: bf16 autocast). "flash": nothing (PyTorch's fused kernel keeps only its
    log-sum-exp). "math" (PyTorch's math path, which the fused call takes on CPU with dropout):
    the softmax output, with dropout also its mask, kept as a float tensor, and the dropped
    output. "plain" (plain_attention): the probabilities in the compute dtype (read by the
    softmax's and the product's backward alike), with dropout also the float mask and the dropped
    probabilities; with grouped-query attention (kv_heads < n_head) k and v repeated to every head
    in place of k and v. Checked against what autograd saves in
    tests/test_compute_memory.py."""
    keys = n_head * T
    if impl == "math":
        return float((3 if dropout > 0 else 1) * keys * compute_bytes)
    if impl == "plain":
        repeated = 2 * n_embd * (1 - kv_heads / n_head) if kv_heads is not None and kv_heads < n_head else 0
        return float(((3 if dropout > 0 else 1) * keys + repeated) * compute_bytes)
    return 0.0
