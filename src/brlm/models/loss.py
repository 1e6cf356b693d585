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

import torch
import torch.nn.functional as F

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
                        grad_scale: torch.Tensor | None, smoothing: float = 0.0) -> torch.Tensor:
    """Summed loss of one chunk of (at least fp32) `logits` (rows, V). With `grad_scale` (rows,), overwrites
    `logits` with grad_scale * (softmax - target distribution), the gradient of the loss."""
    safe = targets.clamp(min=0).unsqueeze(1)  # ignored rows point at 0; their weight is 0
    target_logit = logits.gather(1, safe).squeeze(1)
    if smoothing:
        # -sum_j q_j log p_j with q = (1-ε)·onehot + ε/V  =  lse - (1-ε)·z_target - ε·mean_j z_j
        target_logit = (1.0 - smoothing) * target_logit + smoothing * logits.mean(dim=1)
    if grad_scale is None:
        lse = torch.logsumexp(logits, dim=1)
    else:
        row_max = logits.amax(dim=1, keepdim=True)
        logits.sub_(row_max).exp_()
        row_sum = logits.sum(dim=1, keepdim=True)
        lse = row_max.squeeze(1) + row_sum.squeeze(1).log()
        logits.mul_(grad_scale.unsqueeze(1) / row_sum)  # softmax * scale
        logits.scatter_add_(1, safe, -(1.0 - smoothing) * grad_scale.unsqueeze(1))  # - (1-ε)·onehot * scale
        if smoothing:
            logits.sub_((smoothing / logits.size(1)) * grad_scale.unsqueeze(1))  # - ε/V * scale
    return ((lse - target_logit) * valid).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_rows, smoothing):  # type: ignore[override]
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
                logits = F.linear(h, w, b).to(acc)
                total += _chunk_softmax_loss(logits, targets[rows], valid[rows], scale[rows], smoothing)
                g = logits.to(cdt)  # now the gradient of the loss w.r.t. these logits
                if grad_hidden is not None:
                    grad_hidden[rows] = g @ w
                if grad_weight is not None:
                    if cdt == acc:
                        torch.addmm(grad_weight, g.t(), h, out=grad_weight)  # in place, seen by FlopCounterMode
                    else:
                        grad_weight += (g.t() @ h).to(acc)
                if grad_bias is not None:
                    grad_bias += logits.sum(dim=0)
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
                None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                         chunk_rows: int | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of `F.linear(hidden, weight, bias)` against `targets` (smoothed by
    `label_smoothing`), without ever holding all the logits. hidden: (..., C); weight: (V, C);
    targets: (...) int64."""
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
    rows = chunk_rows or default_chunk_rows(V, torch.finfo(_matmul_dtype(hidden)).bits // 8)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if needs_grad:
        return _LinearCrossEntropy.apply(hidden.contiguous(), weight, bias, targets, ignore_index, rows, float(label_smoothing))
    acc = torch.promote_types(hidden.dtype, torch.float32)
    valid = (targets != ignore_index).to(acc)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for start in range(0, hidden.size(0), rows):
        sl = slice(start, start + rows)
        total += _chunk_softmax_loss(F.linear(hidden[sl], weight, bias).to(acc), targets[sl], valid[sl], None,
                                     float(label_smoothing))
    return total / valid.sum().clamp(min=1.0)
