"""The prompting workflow behind `brlm sample RUN --few-shot … --self-consistency N --options …`:
each query becomes a few-shot / restrictive prompt (brlm.infer.prompting), is sampled N times with
seeds sample.seed, sample.seed+1, …, and the extracted answers are voted on. Writes
`<run>/prompting.json` (or --out): per query the prompt, every sample with its answer, the
majority answer, the votes and the agreement ratio.

    from brlm.stages.prompting import stage_prompting
    result = stage_prompting(cfg, paths, ["O céu é azul?"], few_shot="ex.jsonl", n=5, options=["sim", "não"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from brlm.config import RunConfig
from brlm.infer.engine import generate
from brlm.infer.load import load_model
from brlm.infer.prompting import (
    ANSWER_STOPS,
    build_prompt,
    extract_answer,
    extract_option,
    option_constraint,
    read_examples,
    self_consistency,
)
from brlm.infer.sampling import cut_at_stop, make_sampler, make_stop, parse_stop_strings
from brlm.io.files import write_json
from brlm.io.logging import info
from brlm.io.machine import resolve_device
from brlm.io.run_folder import RunPaths


def _sampler(lm: Any, prompt_ids: list[int], cfg: RunConfig, stops: list[str], options: list[str] | None,
             device: torch.device) -> Callable[[int], str]:
    """seed -> the completion of `prompt_ids` (restricted to the options when there are some)."""
    sc, tok = cfg.sample, lm.tokenizer

    def sample(seed: int) -> str:
        sampler, stop = make_sampler(sc.temperature, sc.top_k, sc.top_p, sc.repetition_penalty), make_stop(tok, stops)
        if options:
            sampler, stop = option_constraint(sampler, tok, options)
        gen = torch.Generator(device=device).manual_seed(seed)
        ids, _ = generate(lm.model, prompt_ids, sc.max_new_tokens, sampler, generator=gen, eos_id=tok.eos_id,
                          device=device, use_cache=sc.use_cache, stop=stop)
        return cut_at_stop(tok.decode(ids), stops)

    return sample


def stage_prompting(cfg: RunConfig, paths: RunPaths, queries: list[str], few_shot: str | Path | None = None,
                    n: int = 1, options: list[str] | None = None, instruction: str = "", checkpoint: str = "best",
                    quantize: str | None = None, out: Path | None = None) -> dict[str, Any]:
    sc = cfg.sample
    device = resolve_device(cfg.train.device)
    lm = load_model(paths.root, checkpoint, device, quantize=quantize)
    tok = lm.tokenizer
    examples = read_examples(few_shot) if few_shot else []
    stops = ANSWER_STOPS + parse_stop_strings(sc.stop)
    if n > 1 and sc.temperature == 0:
        info("warning: --self-consistency with temperature 0 (greedy) gives the same answer every time")
    results = []
    for query in queries:
        prompt = build_prompt(examples, query, instruction, options)
        extract = (lambda text: extract_option(text, options)) if options else extract_answer
        voted = self_consistency(_sampler(lm, tok.encode(prompt), cfg, stops, options, device),
                                 [sc.seed + i for i in range(n)], extract)
        results.append({"query": query, "prompt": prompt, **voted})
    result = {"checkpoint": lm.meta.get("checkpoint"), "step": lm.meta.get("step"), "quantize": quantize,
              "few_shot": str(few_shot) if few_shot else None, "examples": len(examples), "options": options,
              "self_consistency": n, "temperature": sc.temperature, "top_k": sc.top_k, "top_p": sc.top_p,
              "results": results}
    write_json(out or paths.root / "prompting.json", result)
    return result
