"""Intrinsic evaluation on a fixed set of validation windows.

Loss is in nats per token; perplexity is exp(loss); accuracy is next-token argmax accuracy.
Bits per byte (as nanochat's loss_eval.py): sum the negative log-likelihood, in nats, of every
target token that stands for text, and divide by ln(2) times the UTF-8 bytes of those targets.
Special tokens (end-of-text) count zero bytes and are left out of that sum. Unlike perplexity,
bits per byte compares models with different tokenizers.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.data.loader import Windows


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / (math.log(2) * n_bytes) if n_bytes else float("nan")


def indices_hash(indices: np.ndarray, extra: str = "") -> str:
    return hashlib.sha256(extra.encode() + np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


@torch.no_grad()
def evaluate_windows(
    model: nn.Module,
    windows: Windows,
    indices: np.ndarray,
    token_bytes: np.ndarray | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    tb = torch.as_tensor(token_bytes, dtype=torch.int64, device=device) if token_bytes is not None else None
    nats = nats_text = 0.0
    n_tokens = n_correct = n_bytes = 0
    for start in range(0, len(indices), batch_size):
        x, y = windows.batch(indices[start : start + batch_size], device)
        logits, _ = model(x)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none")  # (B*T,)
        nats += nll.sum().item()
        n_tokens += y.numel()
        n_correct += (logits.argmax(-1) == y).sum().item()
        if tb is not None:
            b = tb[y.reshape(-1)]
            nats_text += (nll * (b > 0)).sum().item()
            n_bytes += int(b.sum().item())
    if was_training:
        model.train()
    loss = nats / max(n_tokens, 1)
    out = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": n_correct / max(n_tokens, 1),
        "tokens": n_tokens,
        "windows": int(len(indices)),
    }
    if tb is not None:
        out["bytes"] = n_bytes
        out["bits_per_byte"] = bits_per_byte(nats_text, n_bytes)
    return out
