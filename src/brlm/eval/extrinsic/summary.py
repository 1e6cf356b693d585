"""From details rows to the figures of `extrinsic.json`, and the tables every front end shows.

    result = summarize(rows, models=["base", "sft"], sets=["seed123", "seed456"], tasks=[...])
    header, body = results_table(result)            # model x task x metric: mean ± std, 95 % CI
    header, body = comparison_table(result)         # adapted - base: diff, CI, p-values, d_z
    markdown(result)                                # both, as Markdown

Figures, for each model, task and metric:
* `per_seed`: the mean over the items of each set (test-set seed);
* `mean`, `std`: mean and sample std (ddof = 1, as the seeds) of the per-seed means;
* `lo`, `hi`: a 95 % percentile-bootstrap CI of that mean, resampling items within each seed.
For each model after the first (the base), on the items both answered (pooled over seeds):
paired bootstrap CI of the mean difference, its two-sided p, the paired permutation (sign-flip)
p and Cohen's d_z (brlm.eval.extrinsic.stats).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from brlm.eval.extrinsic.stats import compare_paired, seeds_bootstrap_ci

# What each task is judged on; the first is its headline metric (the seeds' table).
TASK_METRICS = {"qa": ("f1", "em", "chrf"), "summarization": ("rouge_l", "chrf"), "rewriting": ("rouge_l", "chrf")}
METRIC_LABELS = {"em": "EM", "f1": "F1", "rouge_l": "ROUGE-L", "chrf": "chrF"}
TASK_LABELS = {"qa": "QA", "summarization": "sumarização", "rewriting": "reescrita"}


def _scores(rows: Sequence[dict[str, Any]]) -> dict:
    """model -> task -> set -> [(index, metrics)] in index order."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        out[r["model"]][r["task"]][r["set"]].append((int(r["index"]), r["metrics"]))
    for by_task in out.values():
        for by_set in by_task.values():
            for v in by_set.values():
                v.sort(key=lambda x: x[0])
    return out


def summarize(rows: Sequence[dict[str, Any]], models: Sequence[str], sets: Sequence[str], tasks: Sequence[str], *,
              seed: int = 0, n_resamples: int = 10_000) -> dict[str, Any]:
    """results[model][task][metric] and comparisons[adapted][task][metric] (adapted vs models[0])."""
    scores = _scores(rows)
    results: dict[str, Any] = {}
    for model in models:
        results[model] = {}
        for task in tasks:
            by_set = {s: scores[model][task][s] for s in sets if scores[model][task].get(s)}
            if not by_set:
                continue
            results[model][task] = {}
            for metric in TASK_METRICS[task]:
                per_seed = [[m[metric] for _, m in by_set[s]] for s in by_set]
                ci = seeds_bootstrap_ci(per_seed, n_resamples=n_resamples, seed=seed)
                results[model][task][metric] = {
                    "per_seed": {s: sum(v) / len(v) for s, v in zip(by_set, per_seed)},
                    **{k: ci[k] for k in ("mean", "std", "lo", "hi", "n_seeds", "n_items")},
                }
    comparisons: dict[str, Any] = {}
    base = models[0] if models else None
    for model in models[1:]:
        comparisons[model] = {"base": base}
        for task in tasks:
            a_items = {(s, i): m for s in sets for i, m in scores[base][task].get(s, [])}
            b_items = {(s, i): m for s in sets for i, m in scores[model][task].get(s, [])}
            common = [k for k in a_items if k in b_items]
            if len(common) < 2:
                continue
            comparisons[model][task] = {
                metric: compare_paired([a_items[k][metric] for k in common], [b_items[k][metric] for k in common],
                                       seed=seed, n_resamples=n_resamples)
                for metric in TASK_METRICS[task]
            }
    return {"results": results, "comparisons": comparisons}


def _f(x: Any, nd: int = 4) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def results_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["tarefa", "modelo", "métrica", "média ± dp (sementes)", "IC 95 % (itens)", "por semente", "itens"]
    body = []
    for model, by_task in result.get("results", {}).items():
        for task, by_metric in by_task.items():
            for metric, x in by_metric.items():
                seeds = " / ".join(f"{v:.4f}" for v in x.get("per_seed", {}).values())
                body.append([TASK_LABELS.get(task, task), model, METRIC_LABELS.get(metric, metric),
                             f"{_f(x.get('mean'))} ± {_f(x.get('std'))}", f"[{_f(x.get('lo'))}, {_f(x.get('hi'))}]",
                             seeds, str(x.get("n_items", "—"))])
    return header, body


def comparison_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["tarefa", "métrica", "base → adaptado", "diferença", "IC 95 % (pareado)", "p (bootstrap)",
              "p (permutação)", "d_z", "itens"]
    body = []
    for model, by_task in result.get("comparisons", {}).items():
        base = by_task.get("base")
        for task, by_metric in by_task.items():
            if task == "base":
                continue
            for metric, c in by_metric.items():
                body.append([TASK_LABELS.get(task, task), METRIC_LABELS.get(metric, metric),
                             f"{base} {_f(c.get('base'))} → {model} {_f(c.get('adapted'))}",
                             f"{c['diff']:+.4f}", f"[{c['lo']:+.4f}, {c['hi']:+.4f}]", f"{c['p_bootstrap']:.4g}",
                             f"{c['p_permutation']:.4g}", f"{c['cohen_dz']:.3f}", str(c["n"])])
    return header, body


def judge_table(judge: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Mean judge scores (0-5) with their item-bootstrap CI, per judge, model, task and criterion."""
    header = ["juiz", "modelo", "tarefa", "critério", "média (0–5)", "IC 95 %", "itens"]
    body = []
    for judge_model, by_model in (judge.get("scores") or {}).items():
        for model, by_task in by_model.items():
            for task, by_crit in by_task.items():
                for crit, x in by_crit.items():
                    body.append([judge_model, model, TASK_LABELS.get(task, task), crit, _f(x["mean"], 2),
                                 f"[{_f(x['lo'], 2)}, {_f(x['hi'], 2)}]", str(x["n"])])
    return header, body


def agreement_table(judge: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["critério", "concordância exata", "diferença absoluta média", "kappa ponderado (quadrático)", "itens"]
    ag = judge.get("agreement") or {}
    body = [[crit, _f(x["exact"], 3), _f(x["mean_abs_diff"], 3), _f(x["kappa_quadratic"], 3), str(x["n"])]
            for crit, x in (ag.get("criteria") or {}).items()]
    return header, body


def md_table(header: list[str], body: list[list[str]]) -> str:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in body])


def markdown(result: dict[str, Any]) -> str:
    """The results (and comparison, judge) tables as one Markdown document."""
    out = ["# Avaliação extrínseca", ""]
    notes = result.get("notes") or []
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    out += [md_table(*results_table(result)), ""]
    if any(k != "base" for v in result.get("comparisons", {}).values() for k in v):
        out += ["## Base × adaptado", "", md_table(*comparison_table(result)), ""]
    judge = result.get("judge")
    if judge and judge.get("scores"):
        out += ["## Juiz (LLM)", "", md_table(*judge_table(judge)), ""]
        if (judge.get("agreement") or {}).get("criteria"):
            out += ["### Concordância entre juízes", "", md_table(*agreement_table(judge)), ""]
    return "\n".join(out).rstrip() + "\n"
