"""Base versus adapted, on the run's validation rows, as the seeds reported them.

* CPT: raw-text loss, perplexity and bits per byte (every target token; special tokens count 0
  bytes, as brlm.eval.intrinsic does), which compares across tokenizers.
* SFT: response-only loss and perplexity (only the tokens the model learned to produce).
* DPO: the DPO loss and reward accuracy against the reference, and for base and adapted the share
  of pairs whose chosen response is more likely than the rejected one, with the mean log-ratio.

One model is loaded: the base (NF4 for QLoRA, as it was trained) with the adapter attached; the
base's figures come from the same weights with the adapter switched off.

    result = compare(loss_fn, peft_model, rows, tok, cfg, device)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from brlm.eval.intrinsic import bits_per_byte
from brlm.models.loss import IGNORE_INDEX
from brlm.posttrain.loss import CausalLMLoss
from brlm.posttrain.trainer import Rows, evaluate_rows


def spread(n: int, k: int) -> list[int]:
    """k row indices spread evenly over [0, n) (all when k is 0 or >= n)."""
    if not k or k >= n:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, k).round().astype(int)).tolist()


@torch.no_grad()
def token_figures(loss_fn: CausalLMLoss, rows: Rows, picks: list[int], pad: int, batch_size: int,
                  device: torch.device, token_bytes: np.ndarray) -> dict[str, Any]:
    """Summed nats, targets, bytes of those targets, next-token accuracy -> loss, ppl, bits per byte."""
    nats = correct = 0.0
    n = n_bytes = 0
    for s in range(0, len(picks), batch_size):
        b = rows.batch(picks[s:s + batch_size], pad).to(device)
        mask = b.targets != IGNORE_INDEX
        y = b.targets[mask]
        n += int(mask.sum())
        n_bytes += int(token_bytes[y.cpu().numpy()].sum())
        if loss_fn.fused:  # only the target rows go through the head, a chunk at a time
            _, head = loss_fn._parts
            h = loss_fn.hidden(b.input_ids, b.position_ids)[mask]  # (N, C)
            for i in range(0, h.size(0), 256):
                logits = torch.nn.functional.linear(h[i:i + 256], head.weight, head.bias).float()  # (<=256, V)
                nats += float(torch.nn.functional.cross_entropy(logits, y[i:i + 256], reduction="sum"))
                correct += float((logits.argmax(-1) == y[i:i + 256]).sum())
        else:
            logits = loss_fn.logits(b.input_ids, b.position_ids).float()[mask]
            nats += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(-1) == y).sum())
    loss = nats / max(n, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "bits_per_byte": bits_per_byte(nats, n_bytes),
            "accuracy": correct / max(n, 1), "targets": n, "bytes": n_bytes}


@torch.no_grad()
def preference_figures(loss_fn: CausalLMLoss, rows: Rows, picks: list[int], pad: int, batch_size: int,
                       device: torch.device) -> dict[str, Any]:
    """Share of pairs where log p(chosen) > log p(rejected), in total and per token (short rejected
    answers win the total by length alone), and the mean log-ratio."""
    wins = wins_per_token = 0
    ratio = 0.0
    for s in range(0, len(picks), batch_size):
        b = rows.batch(picks[s:s + batch_size], pad).to(device)
        k = b.input_ids.size(0) // 2
        logps = loss_fn.sequence_logps(b.input_ids, b.targets, b.position_ids).double()
        n = (b.targets != IGNORE_INDEX).sum(dim=1).double()
        d = logps[:k] - logps[k:]
        wins += int((d > 0).sum())
        wins_per_token += int((logps[:k] / n[:k] > logps[k:] / n[k:]).sum())
        ratio += float(d.sum())
    n_pairs = max(len(picks), 1)
    return {"preference_accuracy": wins / n_pairs, "preference_accuracy_per_token": wins_per_token / n_pairs,
            "mean_logp_margin": ratio / n_pairs, "pairs": len(picks)}


def compare(model: torch.nn.Module, rows: Rows, tok: Any, task: str, pad: int, batch_size: int, device: torch.device,
            max_rows: int = 0, fused: bool = True, beta: float = 0.1, adapted_only: bool = False,
            base_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """{'base': figures, 'adapted': figures}. `model` is a PEFT model (base = its adapter off) or,
    for full fine-tuning, the trained model with `base_model` beside it."""
    from brlm.models.hf import HFTokenizer

    picks = spread(len(rows), max_rows)
    token_bytes = HFTokenizer(tok).token_bytes()
    was = model.training
    model.eval()

    def figures(m: torch.nn.Module) -> dict[str, Any]:
        fn = CausalLMLoss(m, fused)
        if task == "dpo":
            return preference_figures(fn, rows, picks, pad, batch_size, device)
        return token_figures(fn, rows, picks, pad, batch_size, device, token_bytes)

    out: dict[str, Any] = {"task": task, "rows": len(picks)}
    try:
        out["adapted"] = figures(model)
        if task == "dpo":
            sub = Rows([rows.units[rows.rows[i][0]] for i in picks], 0, False, True)
            out["adapted"].update(evaluate_rows(CausalLMLoss(model, fused), sub, pad, batch_size, device,
                                                ref=(model, base_model), beta=beta))
        if not adapted_only:
            if base_model is not None:
                out["base"] = figures(base_model)
            else:
                with model.disable_adapter():
                    out["base"] = figures(model)
            if task == "dpo":  # the base is its own reference: every implicit reward is 0
                out["base"].update(loss=math.log(2), reward_accuracy=0.0, reward_margin=0.0)
    finally:
        model.train(was)
    return out
