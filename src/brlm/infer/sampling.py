"""Sampling as a chain of small logit filters (temperature, top-k, top-p), as mlx-lm's
`make_sampler`, and plain autoregressive generation.

    sampler = make_sampler(temperature=0.8, top_k=50, top_p=0.95)
    ids, info = generate(model, prompt_ids, 60, sampler, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

Sampler = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row; the rest become -inf. k <= 0 keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the mass *before* it already reaches p; the top token always stays.
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def make_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampler:
    """Return f(logits (B, V), generator) -> next ids (B, 1). temperature 0 means greedy."""

    def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(-1, keepdim=True)
        logits = logits.float() / temperature
        logits = top_p_filter(top_k_filter(logits, top_k), top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return sample


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[list[int], dict]:
    """Generate up to max_new_tokens after prompt_ids. Returns (new ids, info).

    A prompt longer than the context is cut from the left and `info["warning"]` says so; the
    context window slides over the generated text the same way.
    """
    block = model.block_size
    info: dict = {"prompt_tokens": len(prompt_ids)}
    if len(prompt_ids) > block - 1:
        keep = block - 1
        info["warning"] = f"prompt truncated from the left: kept the last {keep} of {len(prompt_ids)} tokens (block_size={block})"
        prompt_ids = prompt_ids[-keep:]
    if not prompt_ids:
        raise ValueError("empty prompt: need at least one token")
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block:])
        nxt = sampler(logits[:, -1, :], generator)  # (1, 1)
        token = int(nxt.item())
        if eos_id is not None and token == eos_id:
            info["stopped"] = "eos"
            break
        new.append(token)
        idx = torch.cat([idx, nxt.to(idx.device)], dim=1)
    info.setdefault("stopped", "max_new_tokens")
    return new, info
