"""The decoding engine: autoregressive generation for every model family, with the state a model
carries between steps when it offers one (`make_cache`, see brlm.models.cache): a KV cache for
attention models, the hidden state for recurrent ones. A model without `make_cache` is decoded
by running the whole (sliding) context each step.

    from brlm.infer.engine import generate, stream_generate
    from brlm.infer.sampling import make_sampler
    ids, info = generate(model, prompt_ids, 60, make_sampler(0.8, top_k=50), generator=g, eos_id=2)
    for token in stream_generate(model, prompt_ids, 60, sampler):   # one id at a time, as sampled
        print(tok.decode([token]), end="", flush=True)

Context handling is explicit, never silent:
* a prompt longer than the context is cut from the left and `info["warning"]` says so;
* when a cached attention model reaches the end of its context, the engine re-prefills the cache
  with the most recent `block_size // 2` tokens (`info["reprefills"]` counts them), so the cost of
  a re-prefill is paid once every block_size // 2 tokens instead of on every token.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

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


def stream_generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    stop: StopFn | None = None,
) -> Iterator[int]:
    """Yield each new token id as soon as it is sampled (batch 1); the generator's return value is
    the info dict (`stopped`, `reprefills`, `seconds`, `warning`, …). Chat, the server, samples and
    guardrails all decode through here; `generate` collects it."""
    was_training = model.training
    model.eval()
    info: dict[str, Any] = {"prompt_tokens": len(prompt_ids)}
    decoder = _Decoder(model, truncate_prompt(list(prompt_ids), context_limit(model), info), sampler, generator,
                       device, use_cache and hasattr(model, "make_cache"))
    info["cache"] = decoder.cached
    new: list[int] = []
    t0 = time.perf_counter()
    try:
        for _ in range(max_new_tokens):
            token = decoder.next_token()
            if eos_id is not None and token == eos_id:
                info["stopped"] = "eos"
                break
            new.append(token)
            yield token  # outside inference mode: the caller's code runs with its own grad mode
            if stop is not None and (reason := stop(new)):
                info["stopped"] = reason
                break
            if len(new) < max_new_tokens:
                decoder.advance()
    finally:
        if was_training:
            model.train()
    info.setdefault("stopped", "max_new_tokens")
    info["reprefills"] = decoder.reprefills
    info["seconds"] = time.perf_counter() - t0
    return info


class _Decoder:
    """The state of one sequence between tokens: its ids, its cache and the last logits."""

    def __init__(self, model: nn.Module, prompt_ids: list[int], sampler: Sampler, generator: torch.Generator | None,
                 device: str | torch.device, cached: bool):
        self.model, self.sampler, self.generator, self.device, self.cached = model, sampler, generator, device, cached
        self.limit = context_limit(model)
        self.reprefills = 0
        self._prefill(prompt_ids)

    @torch.inference_mode()
    def _prefill(self, prompt_ids: list[int]) -> None:
        self.idx = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)  # (1, T)
        self.cache = None
        if self.cached:
            self.cache = self.model.make_cache(1, self.limit, self.device)
            self.logits, _ = self.model(self.idx, cache=self.cache)  # prefill: (1, T, V)

    @torch.inference_mode()
    def next_token(self) -> int:
        if not self.cached:
            window = self.idx if self.limit is None else self.idx[:, -self.limit:]
            self.logits, _ = self.model(window)  # the whole context every step: (1, T, V)
        self.nxt = self.sampler(self.logits[:, -1, :], self.generator, self.idx)  # (1, 1)
        self.idx = torch.cat([self.idx, self.nxt.to(self.idx.device)], dim=1)
        return int(self.nxt.item())

    @torch.inference_mode()
    def advance(self) -> None:
        """Feed the token just sampled to a cached model (uncached models rerun the window instead)."""
        if not self.cached:
            return
        max_len = getattr(self.cache, "max_len", None)
        if max_len is not None and self.cache.pos + 1 > max_len:
            # Context full: start over from the most recent half window (see module docstring).
            keep = max(max_len // 2, 1)
            self.cache = self.model.make_cache(1, self.limit, self.device)
            self.logits, _ = self.model(self.idx[:, -keep:], cache=self.cache)
            self.reprefills += 1
        else:
            self.logits, _ = self.model(self.nxt, cache=self.cache)  # one position: (1, 1, V)


def generate(model: nn.Module, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler,
             **options: Any) -> tuple[list[int], dict[str, Any]]:
    """Generate up to max_new_tokens after prompt_ids (batch 1). Returns (new ids, info).
    `options` are stream_generate's (generator, eos_id, device, use_cache, stop)."""
    stream = stream_generate(model, prompt_ids, max_new_tokens, sampler, **options)
    new: list[int] = []
    while True:
        try:
            new.append(next(stream))
        except StopIteration as done:
            return new, done.value
