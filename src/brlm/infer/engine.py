"""The decoding engine: autoregressive generation for every model family, with the state a model
carries between steps when it offers one (`make_cache`, see brlm.models.cache): a KV cache for
attention models, the hidden state for recurrent ones. A model without `make_cache` is decoded
by running the whole (sliding) context each step.

    from brlm.infer.engine import generate
    from brlm.infer.sampling import make_sampler
    ids, info = generate(model, prompt_ids, 60, make_sampler(0.8, top_k=50), generator=g, eos_id=2)

Context handling is explicit, never silent:
* a prompt longer than the context is cut from the left and `info["warning"]` says so;
* when a cached attention model reaches the end of its context, the engine re-prefills the cache
  with the most recent `block_size // 2` tokens (`info["reprefills"]` counts them), so the cost of
  a re-prefill is paid once every block_size // 2 tokens instead of on every token.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn as nn

# f(logits (B, V), generator, history (B, t) or None) -> next ids (B, 1); see brlm.infer.sampling.
Sampler = Callable[..., torch.Tensor]
# f(new token ids so far) -> a reason to stop (e.g. "stop string '\n\n'") or None.
StopFn = Callable[[list[int]], "str | None"]


def context_limit(model: nn.Module) -> int | None:
    """Tokens the model can attend to (None: unlimited, as a recurrent model's carried state)."""
    return getattr(model, "block_size", None)


def truncate_prompt(prompt_ids: list[int], limit: int | None, info: dict[str, Any]) -> list[int]:
    """Keep room for at least one generated token; say so in `info` when the prompt is cut."""
    if not prompt_ids:
        raise ValueError("empty prompt: need at least one token")
    if limit is not None and len(prompt_ids) > limit - 1:
        keep = max(limit - 1, 1)
        info["warning"] = (
            f"prompt truncated from the left: kept the last {keep} of {len(prompt_ids)} tokens (block_size={limit})"
        )
        return prompt_ids[-keep:]
    return prompt_ids


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    stop: StopFn | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """Generate up to max_new_tokens after prompt_ids (batch 1). Returns (new ids, info)."""
    was_training = model.training
    model.eval()
    limit = context_limit(model)
    info: dict[str, Any] = {"prompt_tokens": len(prompt_ids)}
    prompt_ids = truncate_prompt(list(prompt_ids), limit, info)
    cached = use_cache and hasattr(model, "make_cache")
    info["cache"] = cached
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    new: list[int] = []
    reprefills = 0
    t0 = time.perf_counter()
    cache = None
    if cached:
        cache = model.make_cache(1, limit, device)
        logits, _ = model(idx, cache=cache)  # prefill: (1, T, V)
    for _ in range(max_new_tokens):
        if not cached:
            window = idx if limit is None else idx[:, -limit:]
            logits, _ = model(window)  # the whole context every step: (1, T, V)
        nxt = sampler(logits[:, -1, :], generator, idx)  # (1, 1)
        token = int(nxt.item())
        if eos_id is not None and token == eos_id:
            info["stopped"] = "eos"
            break
        new.append(token)
        idx = torch.cat([idx, nxt.to(idx.device)], dim=1)
        if stop is not None and (reason := stop(new)):
            info["stopped"] = reason
            break
        if cached and len(new) < max_new_tokens:
            max_len = getattr(cache, "max_len", None)
            if max_len is not None and cache.pos + 1 > max_len:
                # Context full: start over from the most recent half window (see module docstring).
                keep = max(max_len // 2, 1)
                cache = model.make_cache(1, limit, device)
                logits, _ = model(idx[:, -keep:], cache=cache)
                reprefills += 1
            else:
                logits, _ = model(nxt, cache=cache)  # one position: (1, 1, V)
    info.setdefault("stopped", "max_new_tokens")
    info["reprefills"] = reprefills
    info["seconds"] = time.perf_counter() - t0
    if was_training:
        model.train()
    return new, info
