"""Samples for prompts x seeds: the rows `samples.json` and `guardrails.json` hold.

    rows = generate_samples(model, tok, ["O Banco Central"], cfg.sample, seeds=[1234, 1235])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from brlm.config import SampleConfig
from brlm.infer.engine import Engine, generate
from brlm.infer.sampling import cut_at_stop, make_sampler, make_stop, parse_stop_strings
from brlm.io.logging import info, progress


def generate_samples(
    model: nn.Module,
    tok: Any,
    prompts: list[str],
    sc: SampleConfig,
    seeds: list[int] | None = None,
    max_new_tokens: int | None = None,
    device: str | torch.device = "cpu",
    desc: str = "sample",
) -> list[dict[str, Any]]:
    """One row per (prompt, seed), with the generated ids so guardrails can read the pieces."""
    seeds = seeds if seeds is not None else [sc.seed + i for i in range(sc.num_samples)]
    max_new = max_new_tokens or sc.max_new_tokens
    sampler = make_sampler(sc.temperature, sc.top_k, sc.top_p, sc.repetition_penalty)
    stops = parse_stop_strings(sc.stop)
    stop = make_stop(tok, stops)
    rows = []
    jobs = [(p, s) for p in prompts for s in seeds]
    # One engine for every sample: its cache, compiled step and bf16 weights are made once.
    engine = Engine(model, 1, device=device, use_cache=sc.use_cache, compile=sc.compile, dtype=sc.dtype)
    for prompt, seed in progress(jobs, desc=desc, unit="sample", total=len(jobs)):
        gen = torch.Generator(device=device).manual_seed(seed)
        ids, gen_info = generate(model, tok.encode(prompt), max_new, sampler, generator=gen, eos_id=tok.eos_id,
                                 device=device, stop=stop, engine=engine)
        completion = cut_at_stop(tok.decode(ids), stops)
        seconds = gen_info.pop("seconds", 0.0)
        row = {
            "prompt": prompt,
            "completion": completion,
            "seed": seed,
            "new_tokens": len(ids),
            "ids": ids,
            "tokens_per_s": len(ids) / seconds if seconds > 0 else None,
            "temperature": sc.temperature,
            "top_k": sc.top_k,
            "top_p": sc.top_p,
            "repetition_penalty": sc.repetition_penalty,
            "dtype": engine.dtype_name,
            "compiled": bool(engine.compile),
            **gen_info,
        }
        rows.append(row)
    # One line for the whole batch, not one per sample (a tiny model's short context cuts most prompts).
    cut = [r for r in rows if "warning" in r]
    if cut:
        info(f"warning: {len(cut)} of {len(rows)} {desc} prompts were longer than the context and were cut from the "
             f"left (e.g. {cut[0]['warning']}); see 'warning' in each row")
    return rows
