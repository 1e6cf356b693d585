"""Greedy answers to many prompts, in batches: the one function the extrinsic evaluation decodes through.

    for i, g in generate_answers(lm, prompts, max_new_tokens=32, batch_size=8):
        print(i, g.text, g.truncated)

Prompts are grouped by token length (longest first) so a batch carries little padding; results
come back batch by batch as `(index into prompts, Generation)`, so a caller can write each one as
soon as it exists.

Batching must not change an answer. A batch is LEFT-padded and every row's answer is read from
the positions after the *whole padded prompt* (`out[:, input_ids.shape[1]:]`): every row's prompt
ends at the same column. The seeds cut each row at `attention_mask[i].sum()` instead, which in a
left-padded batch lands `n_pad` tokens early, so the end of the prompt leaked into every answer
(../shared/data/README.md). tests/test_extrinsic_generate.py checks that a batch of prompts of
different lengths gives exactly the unbatched answers, and that the seeds' slicing does not.

* Hugging Face models: `model.generate` with the attention mask (position ids follow the mask).
* brlm models: brlm's batched static-cache engine (`brlm.infer.engine.Engine.generate_batch`),
  one cache row per prompt with its own positions: no padding at all.

Context: when a model has a context limit, a long answer budget is capped at half the context
(`plan_lengths`) and prompts are cut from the LEFT to fit the rest; `Generation.truncated` counts
the tokens cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from brlm.errors import BrlmError
from brlm.infer.engine import context_limit
from brlm.infer.sampling import make_sampler


@dataclass
class Generation:
    text: str            # decoded continuation, special tokens dropped
    new_tokens: int      # tokens generated (eos not counted)
    prompt_tokens: int   # tokens the model saw, after truncation
    truncated: int       # tokens cut from the left of the prompt
    stopped: str         # 'eos' or 'max_new_tokens'


def plan_lengths(lm: Any, max_new_tokens: int) -> tuple[int | None, int]:
    """(prompt token budget or None for unlimited, new tokens) for this model.

    prompt + answer must fit the context: the answer gets at most half of it, the prompt the rest.
    """
    limit = context_limit(lm.model)
    if limit is None:
        return None, max_new_tokens
    new = max(1, min(max_new_tokens, limit // 2))
    return limit - new, new


def encode_prompt(lm: Any, prompt: str, budget: int | None) -> tuple[list[int], int]:
    """(ids cut from the left to `budget`, tokens cut)."""
    ids = lm.tokenizer.encode(prompt)
    if not ids:
        raise BrlmError("an empty prompt: the item has no instruction text")
    if budget is not None and len(ids) > budget:
        return ids[-budget:], len(ids) - budget
    return ids, 0


def _eos(lm: Any) -> int | None:
    eos = getattr(lm.tokenizer, "eos_id", None)
    return eos if isinstance(eos, int) and eos >= 0 else None


def _cut_at_eos(ids: list[int], eos: int | None) -> tuple[list[int], str]:
    if eos is not None and eos in ids:
        return ids[:ids.index(eos)], "eos"
    return ids, "max_new_tokens"


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, W), attention_mask (B, W)): every prompt right-aligned, padding on the left."""
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return ids, mask


def _hf_pad_id(lm: Any) -> int:
    tok = lm.tokenizer.tok
    for cand in (tok.pad_token_id, lm.model.model.generation_config.pad_token_id, tok.eos_token_id, 0):
        if isinstance(cand, int) and cand >= 0:
            return cand
    return 0


def hf_generate_padded(lm: Any, batch: Sequence[Sequence[int]], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(full output (B, W + new), input_ids (B, W), attention_mask (B, W)) of one greedy HF batch."""
    from transformers import GenerationConfig

    hf = lm.model.model
    pad, eos = _hf_pad_id(lm), _eos(lm)
    input_ids, mask = left_pad(batch, pad)
    device = next(hf.parameters()).device
    # A fresh config: greedy, whatever sampling settings the model folder ships with.
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                           eos_token_id=eos, bos_token_id=hf.generation_config.bos_token_id)
    with torch.inference_mode():
        out = hf.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=cfg)
    return out.cpu(), input_ids, mask


def _hf_batch(lm: Any, batch: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], str]]:
    out, input_ids, _ = hf_generate_padded(lm, batch, max_new_tokens)
    # Every row's prompt ends at column W (left padding): the answer is what follows it.
    return [_cut_at_eos(row, _eos(lm)) for row in out[:, input_ids.shape[1]:].tolist()]


def _brlm_batch(lm: Any, batch: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], str]]:
    # brlm's batched static-cache engine: one row per prompt, each with its own positions, so the
    # answers equal one-at-a-time greedy decoding (tests/test_extrinsic_generate.py).
    outs = lm.engine(len(batch)).generate_batch(batch, max_new_tokens, make_sampler(temperature=0.0), eos_id=_eos(lm))
    return [(ids, info["stopped"]) for ids, info in outs]


def generate_answers(lm: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8) -> Iterator[tuple[int, Generation]]:
    """Greedy continuations of `prompts`, yielded batch by batch as (index into prompts, Generation)."""
    if batch_size < 1:
        raise BrlmError(f"--batch-size {batch_size}: expected an integer >= 1")
    budget, new = plan_lengths(lm, max_new_tokens)
    encoded = [encode_prompt(lm, p, budget) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i][0]))  # stable: ties keep their order
    decode_batch = _hf_batch if lm.meta.get("kind") == "hf" else _brlm_batch
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        outs = decode_batch(lm, [encoded[i][0] for i in chunk], new)
        for i, (ids, stopped) in zip(chunk, outs):
            yield i, Generation(lm.tokenizer.decode(ids) if ids else "", len(ids), len(encoded[i][0]), encoded[i][1], stopped)
