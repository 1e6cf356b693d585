"""`brlm eval extrinsic build|run|rescore`: task sets for QA / summarization / rewriting, models
answering them (with statistics and an optional LLM judge), and metrics recomputed from saved outputs.

    brlm eval extrinsic build --from sft_10k_test.jsonl --exclude sft_10k_train.jsonl sft_10k_val.jsonl \
        --n 200 --seed 123 --out sets/seed123
    brlm eval extrinsic run --model runs/base --model runs/sft --sets sets/seed123 sets/seed456 \
        --limit 50 --batch-size 8 --out runs/sft        # -> extrinsic.json, extrinsic.md, extrinsic_details.jsonl
    brlm eval extrinsic run --model hf/llama --sets sets/seed123 --out out/ \
        --judge-url http://127.0.0.1:8000 --judge-model juiz-a --judge-model-2 juiz-b   # key: $BRLM_JUDGE_API_KEY
    brlm eval extrinsic rescore eval_details.jsonl                      # brlm's normaliser
    brlm eval extrinsic rescore seeds_details.jsonl --compat seeds      # the seeds' published scoring
    brlm eval extrinsic rescore seeds_details.jsonl --compat seeds --repair-leak --json

`run` resumes: rerun the same command after an interruption and only the missing items are generated.
The first --model is the base; every other one is compared with it (paired bootstrap and
permutation test on the same items). There is no --adapter yet: brlm.infer.load does not load
base + adapter; merge the adapter into a run or a Hugging Face folder and pass that.

`--json` prints {"<task>": {"<side>": {"em", "f1", "rouge_l", "n"}}} on stdout (sides `base` / `sft`
for the seeds' files, model names for brlm's), means over items in [0, 1]; counts go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from brlm.config.extrinsic import ExtrinsicConfig
from brlm.errors import BrlmError
from brlm.eval.extrinsic.rescore import Rescored, paired_scores, rescore_file
from brlm.eval.extrinsic.stats import compare_paired
from brlm.eval.extrinsic.tasks import build_sets, write_sets
from brlm.io.logging import info
from brlm.verbs.common import ArgumentParser

MAIN_METRIC = {"qa": "f1", "summarization": "rouge_l", "rewriting": "rouge_l"}


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="brlm eval extrinsic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    b = sub.add_parser("build", help="draw QA / summarization / rewriting sets from instruction JSONL")
    b.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="instruction JSONL (fields instruction, input, output), e.g. Canarim")
    b.add_argument("--exclude", nargs="*", default=[], metavar="FILE",
                   help="training JSONL files whose items must not appear in the sets")
    b.add_argument("--n", type=int, default=200, help="items per task (default 200)")
    b.add_argument("--seed", type=int, default=123, help="test-set seed: the shuffling order (default 123)")
    b.add_argument("--out", required=True, metavar="DIR", help="folder for <task>.jsonl and manifest.json")
    g = sub.add_parser("run", help="generate answers with one or more models, score them, summarise (extrinsic.json)")
    g.add_argument("--model", action="append", required=True, metavar="SRC",
                   help="a brlm run folder or a Hugging Face folder; repeat it: the first is the base, the others are compared with it")
    g.add_argument("--adapter", metavar="DIR",
                   help="a PEFT adapter (or post-training run) applied to the LAST --model: base vs base + adapter")
    g.add_argument("--sets", nargs="+", required=True, metavar="DIR",
                   help="set folders (one per test-set seed) with qa.jsonl, summarization.jsonl, rewriting.jsonl")
    g.add_argument("--out", metavar="DIR", help="folder for the results (default: the last --model, when it is a brlm run)")
    defaults = ExtrinsicConfig()
    for f in dataclasses.fields(ExtrinsicConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(getattr(defaults, f.name))
        g.add_argument(flag, dest=f.name, type=kind, default=getattr(defaults, f.name),
                       help=f"{f.metadata['help']} (default: {getattr(defaults, f.name)!r})")
    r = sub.add_parser("rescore", help="recompute metrics from a details JSONL (brlm's or the seeds')")
    r.add_argument("details", metavar="DETAILS.jsonl", help="per-item outputs")
    r.add_argument("--compat", choices=["seeds"], help="score exactly as the seeds did (their normaliser defect included)")
    r.add_argument("--repair-leak", action="store_true",
                   help="cut a leaked prompt tail + assistant header from the start of each output first")
    r.add_argument("--json", action="store_true", help="print only the {task: {side: metrics}} JSON object")
    r.add_argument("--seed", type=int, default=0, help="seed of the paired bootstrap / permutation test (default 0)")
    return p


def _build(args: argparse.Namespace) -> int:
    sets, manifest = build_sets(args.source, args.exclude, args.n, args.seed)
    manifest = write_sets(args.out, sets, manifest)
    got = ", ".join(f"{t} {k}" for t, k in manifest["n_per_task_obtained"].items())
    info(f"build: {got} items in {args.out}; scanned {manifest['scanned']} of {manifest['source']['rows']}, "
         f"excluded {manifest['excluded']} (in training files; {manifest['excluded_in_source']} in the whole source), "
         f"duplicates {manifest['duplicates']}, unclassified {manifest['unclassified']}")
    short = [t for t, k in manifest["n_per_task_obtained"].items() if k < args.n]
    if short:
        info(f"build: fewer than --n {args.n} items for {', '.join(short)}: the source has no more")
    return 0


def _report(r: Rescored, seed: int) -> str:
    lines = [f"{'task':<14} {'side':<24} {'n':>5} {'EM':>7} {'F1':>7} {'ROUGE-L':>8}"]
    for task, sides in r.table.items():
        for side, m in sides.items():
            lines.append(f"{task:<14} {side:<24} {m['n']:>5} {m['em']:>7.4f} {m['f1']:>7.4f} {m['rouge_l']:>8.4f}")
    for task, sides in r.table.items():
        names = list(sides)
        if len(names) != 2:
            continue
        metric = MAIN_METRIC[task]
        a, b = paired_scores(r, task, names[0], names[1], metric)
        if len(a) < 2:
            continue
        c = compare_paired(a, b, seed=seed)
        lines.append(f"{task}: {metric} {names[1]} - {names[0]} = {c['diff']:+.4f} "
                     f"[95% CI {c['lo']:+.4f}, {c['hi']:+.4f}], permutation p = {c['p_permutation']:.4g}, "
                     f"d_z = {c['cohen_dz']:.3f}, n = {c['n']}")
    return "\n".join(lines)


def _rescore(args: argparse.Namespace) -> int:
    r = rescore_file(args.details, compat=args.compat, repair=args.repair_leak)
    counts = ", ".join(f"{s} {n}" for s, n in r.outputs.items())
    info(f"rescore: {args.details}: {r.format} format, outputs {counts}; scoring {args.compat or 'brlm'}")
    if args.repair_leak:
        info("rescore: leaked prompts cut: " + ", ".join(f"{s} {r.repaired.get(s, 0)}/{n}" for s, n in r.outputs.items()))
    if any(r.empty.values()):
        info("rescore: empty outputs: " + ", ".join(f"{s} {n}" for s, n in r.empty.items()))
    if r.stored_mismatches is not None:
        total = sum(r.outputs.values())
        info(f"rescore: stored per-item metrics reproduced for {total - r.stored_mismatches}/{total} outputs")
    print(json.dumps(r.table, indent=2) if args.json else _report(r, args.seed))
    return 0


def _run(args: argparse.Namespace) -> int:
    from brlm.infer.load import is_run_folder
    from brlm.stages.extrinsic import RESULTS, TABLE, run_extrinsic

    cfg = ExtrinsicConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ExtrinsicConfig)})
    if args.out:
        out = Path(args.out)
    elif is_run_folder(args.model[-1]):
        out = Path(args.model[-1])
    else:
        raise BrlmError(f"--out: needed when the last --model ({args.model[-1]}) is not a brlm run folder")
    adapters = [None] * (len(args.model) - 1) + [args.adapter]
    run_extrinsic(args.model, args.sets, out, cfg, adapters)
    print((out / TABLE).read_text(encoding="utf-8"))
    print(f"written: {out / RESULTS}, {out / TABLE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return {"build": _build, "run": _run, "rescore": _rescore}[args.action](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrlmError as e:
        print(f"brlm eval extrinsic: error: {e}", file=sys.stderr)
        sys.exit(2)
