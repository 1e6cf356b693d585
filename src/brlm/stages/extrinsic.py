"""The extrinsic evaluation workflow: models answer the QA / summarization / rewriting sets, every
answer is scored and written as it goes, then the figures (and, with an endpoint, an LLM judge's
scores) go to `extrinsic.json` and `extrinsic.md` in the out folder.

    result = run_extrinsic(["runs/base", "runs/sft"], ["sets/seed123", "sets/seed456"], Path("runs/sft"), ExtrinsicConfig())

Out folder (a run folder when the results belong to a run, so `brlm report` shows them):
* `extrinsic_details.jsonl`: one row per model x set x task x item (brlm.eval.extrinsic.details),
  appended and flushed per item; a rerun skips the rows already there, so an interrupted run
  resumes where it stopped and loses no item;
* `extrinsic_judge_cache.jsonl`: the judge's scores by hash of (judge model, prompt, answer);
* `extrinsic.json`: settings, counts, per-model results, base-vs-adapted comparisons, judge;
* `extrinsic.md`: the same tables in Markdown.

The first model is the base; every other one is compared with it on the same items.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from brlm.config.extrinsic import ExtrinsicConfig
from brlm.errors import BrlmError
from brlm.eval.extrinsic.details import DetailsFile
from brlm.eval.extrinsic.generate import generate_answers, plan_lengths
from brlm.eval.extrinsic.judge import CRITERIA, JudgeCache, JudgeClient, agreement, judge_rows
from brlm.eval.extrinsic.prompts import prompt_format, render_prompt
from brlm.eval.extrinsic.rescore import detail_row
from brlm.eval.extrinsic.stats import bootstrap_ci, compare_paired
from brlm.eval.extrinsic.summary import markdown, summarize
from brlm.eval.extrinsic.tasks import Item, read_sets
from brlm.infer.load import load_model
from brlm.io.files import stage_key, write_json, write_text
from brlm.io.logging import info

DETAILS = "extrinsic_details.jsonl"
JUDGE_CACHE = "extrinsic_judge_cache.jsonl"
RESULTS = "extrinsic.json"
TABLE = "extrinsic.md"


def model_names(sources: Sequence[str]) -> list[str]:
    """Folder names, made unique with a suffix (two runs both called 'sft' stay apart)."""
    names: list[str] = []
    for s in sources:
        base = Path(s).resolve().name or str(s)
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_set_folders(folders: Sequence[str], tasks: Sequence[str], limit: int) -> dict[str, dict[str, list[Item]]]:
    """set name (its folder's name) -> task -> items (the first `limit` of each file when limit > 0)."""
    out: dict[str, dict[str, list[Item]]] = {}
    for folder in folders:
        p = Path(folder)
        if not p.is_dir():
            raise BrlmError(f"--sets {folder}: not a folder (expected one with qa.jsonl, summarization.jsonl, rewriting.jsonl)")
        name = p.resolve().name
        if name in out:
            raise BrlmError(f"--sets {folder}: two set folders named '{name}'; give each test-set seed its own folder name")
        sets = read_sets(p, tasks)
        out[name] = {t: (v[:limit] if limit else v) for t, v in sets.items()}
    return out


def _generate_model(name: str, source: str, sets: dict[str, dict[str, list[Item]]], cfg: ExtrinsicConfig,
                    details: DetailsFile, adapter: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    lm = load_model(source, cfg.checkpoint, cfg.device, adapter=adapter)
    fmt = prompt_format(lm, cfg.prompt_format)
    plans = {t: plan_lengths(lm, cfg.max_new_tokens(t)) for t in cfg.task_list}
    settings = {"source": str(Path(source).resolve()), "checkpoint": lm.meta.get("checkpoint"), "step": lm.meta.get("step"),
                "prompt_format": fmt, "system": cfg.system, "plans": plans, "decoding": "greedy"}
    gen_key = stage_key(**settings)[:16]
    details.check_settings(name, gen_key, f"prompt format {fmt}, answer lengths {plans}, checkpoint {settings['checkpoint']}")
    capped = {t: new for t, (_, new) in plans.items() if new < cfg.max_new_tokens(t)}
    info(f"extrinsic: {name}: {lm.meta.get('kind')} model, prompt format {fmt}"
         + (" (the tokenizer's chat template)" if fmt == "chat" and lm.meta.get("kind") == "hf" else
            " (brlm's chat markers)" if fmt == "chat" else " (plain Portuguese instruction format)")
         + (f"; answers capped at half the context: {capped}" if capped else ""))
    generated = resumed = 0
    gen_seconds = 0.0
    for set_name, by_task in sets.items():
        for task, items in by_task.items():
            pending = [(i, it) for i, it in enumerate(items) if not details.done((name, set_name, task, i), it.hash)]
            resumed += len(items) - len(pending)
            if not pending:
                continue
            prompts = [render_prompt(lm, it, fmt, cfg.system) for _, it in pending]
            g0 = time.perf_counter()
            for j, g in generate_answers(lm, prompts, cfg.max_new_tokens(task), cfg.batch_size):
                index, item = pending[j]
                row = detail_row(item, name, prompts[j], g.text)
                row.update({"set": set_name, "index": index, "gen_key": gen_key, "prompt_tokens": g.prompt_tokens,
                            "truncated": g.truncated, "new_tokens": g.new_tokens, "stopped": g.stopped})
                details.append(row)
                generated += 1
            gen_seconds += time.perf_counter() - g0
            info(f"extrinsic: {name} {set_name}/{task}: {len(pending)} generated, {len(items) - len(pending)} already done")
    del lm
    gc.collect()
    return {"name": name, **settings, "gen_key": gen_key, "generated": generated, "resumed": resumed,
            "generation_seconds": round(gen_seconds, 3), "items_per_s": round(generated / gen_seconds, 3) if gen_seconds else None,
            "seconds": round(time.perf_counter() - t0, 3)}


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"items": len(rows),
            "empty_outputs": sum(1 for r in rows if not str(r.get("raw_output", "")).strip()),
            "truncated_prompts": sum(1 for r in rows if r.get("truncated", 0) > 0),
            "truncated_tokens": sum(int(r.get("truncated", 0)) for r in rows),
            "stopped_eos": sum(1 for r in rows if r.get("stopped") == "eos"),
            "stopped_max_new_tokens": sum(1 for r in rows if r.get("stopped") == "max_new_tokens")}


def _judge(rows: list[dict[str, Any]], sets: dict[str, dict[str, list[Item]]], models: list[str], cfg: ExtrinsicConfig,
           out: Path) -> dict[str, Any]:
    chosen = [r for r in rows if not cfg.judge_limit or r["index"] < cfg.judge_limit]

    def item_text(row: dict[str, Any]) -> tuple[str, str]:
        it = sets[row["set"]][row["task"]][row["index"]]
        return it.instruction, it.input

    api_key = os.environ.get(cfg.judge_key_env) or None
    cache = JudgeCache(out / JUDGE_CACHE)
    judges = [m for m in (cfg.judge_model, cfg.judge_model_2) if m]
    per_judge, counts = {}, {}
    for jm in judges:
        client = JudgeClient(cfg.judge_url, jm, api_key=api_key, timeout=cfg.judge_timeout, retries=cfg.judge_retries)
        per_judge[jm], counts[jm] = judge_rows(client, chosen, item_text, cache)
        c = counts[jm]
        info(f"extrinsic: judge {jm}: {c['judged']} judged, {c['cached']} from cache, {c['failed']} failed "
             f"(timeouts {c['timeout']}, invalid JSON {c['invalid_json']}, HTTP errors {c['http_error']}, "
             f"connection errors {c['connection_error']})" + (f"; {c['gave_up']}" if c["gave_up"] else ""))
    scores: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    for jm, got in per_judge.items():
        scores[jm] = {}
        by: dict[tuple[str, str], list[tuple[tuple, dict[str, int]]]] = {}
        for key, s in got.items():
            by.setdefault((key[0], key[2]), []).append(((key[1], key[3]), s))
        for (model, task), pairs in sorted(by.items()):
            crit = {c: bootstrap_ci([s[c] for _, s in pairs], n_resamples=cfg.n_resamples, seed=cfg.stats_seed) for c in CRITERIA}
            crit["média"] = bootstrap_ci([sum(s.values()) / len(CRITERIA) for _, s in pairs], n_resamples=cfg.n_resamples,
                                         seed=cfg.stats_seed)
            scores[jm].setdefault(model, {})[task] = crit
        comparisons[jm] = {}
        for model in models[1:]:
            for task in cfg.task_list:
                a = dict(by.get((models[0], task), []))
                b = dict(by.get((model, task), []))
                common = [k for k in a if k in b]
                if len(common) >= 2:
                    comparisons[jm].setdefault(model, {})[task] = compare_paired(
                        [sum(a[k].values()) / len(CRITERIA) for k in common], [sum(b[k].values()) / len(CRITERIA) for k in common],
                        seed=cfg.stats_seed, n_resamples=cfg.n_resamples)
    result = {"url": cfg.judge_url, "models": judges, "criteria": list(CRITERIA), "scale": "0-5", "counts": counts,
              "scores": scores, "comparisons": comparisons, "items_per_model": {m: sum(1 for r in chosen if r["model"] == m) for m in models}}
    if len(judges) == 2:
        result["agreement"] = {"judges": judges, **agreement(per_judge[judges[0]], per_judge[judges[1]]),
                               "measures": "exact agreement rate, mean absolute difference, quadratic-weighted Cohen's kappa (0-5)"}
    return result


def run_extrinsic(models: Sequence[str], set_dirs: Sequence[str], out: Path, cfg: ExtrinsicConfig,
                  adapters: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Every model answers every set; `adapters[i]` (a PEFT adapter or post-training run) is applied to models[i]."""
    if not models:
        raise BrlmError("--model: give at least one model (a brlm run folder or a Hugging Face folder)")
    if not set_dirs:
        raise BrlmError("--sets: give at least one set folder")
    sets = load_set_folders(set_dirs, cfg.task_list, cfg.limit)
    adapters = list(adapters) if adapters is not None else [None] * len(models)
    names = model_names([a if a else m for m, a in zip(models, adapters)])
    out.mkdir(parents=True, exist_ok=True)
    model_info = []
    with DetailsFile(out / DETAILS) as details:
        if details.torn_lines:
            info(f"extrinsic: {out / DETAILS}: dropped a half-written last line (an interrupted run); that item is redone")
        for name, source, adapter in zip(names, models, adapters):
            model_info.append(_generate_model(name, source, sets, cfg, details, adapter))
        keys = {(m["name"], m["gen_key"]) for m in model_info}
        rows = [r for r in details.rows if (r["model"], r["gen_key"]) in keys and r["set"] in sets
                and r["task"] in sets[r["set"]] and r["index"] < len(sets[r["set"]][r["task"]])]
    counts = {n: _counts([r for r in rows if r["model"] == n]) for n in names}
    for n, c in counts.items():
        if c["empty_outputs"]:
            info(f"extrinsic: warning: {n} produced no text for {c['empty_outputs']} of {c['items']} items (scored 0)")
        if c["truncated_prompts"]:
            info(f"extrinsic: {n}: {c['truncated_prompts']} prompts cut from the left ({c['truncated_tokens']} tokens)")
    summary = summarize(rows, names, list(sets), cfg.task_list, seed=cfg.stats_seed, n_resamples=cfg.n_resamples)
    fmts = ", ".join(f"{m['name']}: {m['prompt_format']}" for m in model_info)
    notes = [f"formato do prompt: {fmts} (chat = o template de chat do tokenizador; plain = instrução em português)",
             f"decodificação gulosa; conjuntos: {', '.join(sets)}; itens por tarefa e conjunto: "
             + ", ".join(f"{t} {len(sets[next(iter(sets))][t])}" for t in cfg.task_list),
             "média ± dp: desvio padrão amostral (ddof = 1) das médias por semente; IC 95 %: bootstrap sobre itens"]
    result: dict[str, Any] = {
        "kind": "brlm.extrinsic", "config": asdict(cfg), "models": model_info, "base": names[0],
        "sets": {s: {"path": str(Path(d).resolve()), "items": {t: len(v) for t, v in sets[s].items()}}
                 for s, d in zip(sets, set_dirs)},
        "counts": counts, **summary, "notes": notes,
    }
    if cfg.judge_url:
        result["judge"] = _judge(rows, sets, names, cfg, out)
    write_json(out / RESULTS, result)
    write_text(out / TABLE, markdown(result))
    return result
