"""Sampling as a chain of small logit filters (repetition penalty, temperature, top-k, top-p),
as mlx-lm's `make_sampler`, plus stop strings. Decoding itself lives in brlm.infer.engine.

    sampler = make_sampler(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1)
    ids, info = generate(model, prompt_ids, 60, sampler, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from typing import Any, Callable

import torch

# f(logits (B, V), generator, history (B, t) of ids so far or None) -> next ids (B, 1).
Sampler = Callable[..., torch.Tensor]


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


def repetition_penalty_filter(logits: torch.Tensor, history: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019, arXiv:1909.05858 §4.1): a token already in the context
    has its logit divided by `penalty` when positive and multiplied by it when negative."""
    if penalty == 1.0 or history is None or history.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, history)  # (B, t)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, history, seen)


def make_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0) -> Sampler:
    """Return f(logits (B, V), generator=None, history=None) -> next ids (B, 1).

    Temperature 0 means greedy (argmax after the repetition penalty)."""

    def sample(logits: torch.Tensor, generator: torch.Generator | None = None, history: torch.Tensor | None = None) -> torch.Tensor:
        logits = repetition_penalty_filter(logits.float(), history, repetition_penalty)
        if temperature == 0:
            return logits.argmax(-1, keepdim=True)
        logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return sample


def make_stop(tokenizer: Any, stop_strings: list[str]) -> Callable[[list[int]], str | None] | None:
    """A stop test for the engine: stop as soon as the decoded completion contains a stop string."""
    stops = [s for s in stop_strings if s]
    if not stops:
        return None

    def stop(new_ids: list[int]) -> str | None:
        text = tokenizer.decode(new_ids)
        for s in stops:
            if s in text:
                return f"stop string {s!r}"
        return None

    return stop


def cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """The completion up to (not including) the first stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def parse_stop_strings(spec: str) -> list[str]:
    """Config form: stop strings separated by '|', with '\\n' written as an escape."""
    return [s.replace("\\n", "\n").replace("\\t", "\t") for s in spec.split("|") if s] if spec else []
