"""`brlm run [PRESET]`: the whole from-scratch pipeline into one run folder.

    brlm run demo                       # runs/demo/report.md after a few minutes on a CPU
    brlm run demo --scale tiny          # seconds; what the tests run
    brlm run demo --run runs/meu        # into this run folder (default: <runs-dir>/<name>)
    brlm run --resume --run runs/meu    # continue an interrupted run: training from its last good
                                        # checkpoint, then every later stage
    brlm run --config runs/demo/config.yaml --name demo-again   # repeat a run from its config
    brlm run gpt2-vs-moe --scale tiny   # a multi-run preset: one folder per variant + comparison.md
    brlm run ladder --scale small       # v1 ... v6 on one corpus, same byte budget: ladder.md + chart
    brlm run track2 --scale tiny        # from scratch vs adapt: base -> QLoRA CPT -> SFT -> DPO, one report

A preset with a `runs:` section (name -> overrides of the preset's config, optionally with their
own `scales:`, or `preset: NAME` to start from another preset) is a comparison: each variant runs
in its own process (so peak memory is its own) into <runs-dir>/<name>/<variant>/, then one table
(brlm.runs.compare) compares bits per byte and per character, loss, the seeds' guardrails,
tokens/s, memory, wall time and cost (comparison.md / .csv / .json, and a bar chart). A preset's
`corpus:` list picks the first source that exists (the ladder: Fake.br from ../shared/data, else
the demo corpus).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from brlm.config import RunConfig, preset_variants, read_preset, resolve
from brlm.errors import BrlmError, ConfigError
from brlm.io.files import read_json, write_json, write_text
from brlm.io.logging import Timer, format_seconds, info
from brlm.io.run_folder import RunPaths, live_status
from brlm.runs.compare import RUN_COLUMNS, comparison_table, summarize_run
from brlm.runs.plots import grouped_bars
from brlm.runs.report import render_report
from brlm.stages import config_workflow, preset_workflow, workflow_module
from brlm.verbs.common import add_config_args, maybe_list_keys, parser, resolve_config


def variant_config(preset: str, variant: str, scale: str | None, overrides: list[str]) -> RunConfig:
    """defaults < preset < its scale < the variant < the variant's scale < --set overrides."""
    return resolve(RunConfig, preset, scale, overrides=overrides, variant=variant)


def pick_corpus(preset: str, overrides: list[str]) -> tuple[list[str], str | None]:
    """The preset's `corpus:` candidates -> (overrides for the first that exists, its label).
    A `--set data.source=…` of the user wins and skips the list."""
    candidates = read_preset(preset).get("corpus") or []
    if not candidates or any(o.split("=", 1)[0].strip() == "data.source" for o in overrides):
        return [], None
    for c in candidates:
        source = str(c.get("source", ""))
        if source.startswith("builtin:") or Path(source).expanduser().exists():
            return [f"data.source={source}", *(c.get("set") or [])], str(c.get("label") or source)
    raise ConfigError(f"preset {preset}: none of its corpus sources exists ({', '.join(str(c.get('source')) for c in candidates)})")


def comparison(parent: Path, variants: list[str], title: str, note: str) -> str:
    """The one table of a multi-run preset, written as comparison.{md,csv,json} with a bar chart."""
    rows = [summarize_run(parent / v) for v in variants]
    md, csv_text, _warnings = comparison_table(rows, RUN_COLUMNS)
    chart = grouped_bars({r["run"]: {"bits/byte": r["bits_per_byte"], "bits/char": r["bits_per_char"]} for r in rows},
                         parent / "comparison.png", "bits (menor é melhor)", f"{title}: bits por byte e por caractere")
    image = f"\n![bits por byte]({chart.name})\n" if chart else ""
    write_json(parent / "comparison.json", rows)
    write_text(parent / "comparison.csv", csv_text)
    write_text(parent / "comparison.md", f"# {title}\n\n{md}\n{note}\n{image}")
    return md


def run_variants(preset: str, args: Any, parent: Path) -> str:
    timer = Timer()
    variants = list(preset_variants(preset))
    corpus_overrides, corpus = pick_corpus(preset, args.overrides)
    overrides = corpus_overrides + list(args.overrides)
    configs = {v: variant_config(preset, v, args.scale, overrides) for v in variants}  # fail early on a bad override
    for v in variants:
        folder = parent / v
        if args.resume and (folder / "run.json").is_file() and live_status(read_json(folder / "run.json")) == "completed":
            info(f"== {preset}: variant {v} already completed ({folder})")
            continue
        info(f"== {preset}: variant {v} -> {folder}" + (f" (corpus: {corpus})" if corpus else ""))
        if args.resume and (folder / "config.yaml").is_file():
            cmd = [sys.executable, "-m", "brlm", "run", "--resume", "--run", str(folder)]
        else:
            cmd = [sys.executable, "-m", "brlm", "run", preset, "--variant", v, "--run", str(folder)]
            if args.scale:
                cmd += ["--scale", args.scale]
            for o in overrides:
                cmd += ["--set", o]
        proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise BrlmError(f"variant {v} of preset {preset} failed (exit code {proc.returncode}); see {folder / 'run.json'}"
                            f"; continue with `brlm run {preset} --resume --run {parent}`")
    title = f"{preset} ({args.scale or 'default scale'})" + (f" — {corpus}" if corpus else "")
    note = ("Bits per byte compares any two runs (nats over the text's UTF-8 bytes); loss and perplexity only runs "
            "with the same tokenizer. Byte fallback and short pieces are the seeds' guardrails on generated samples "
            "(limits 0.03 and 0.12); a char tokenizer has only short pieces, so its short-piece figure says nothing. "
            "tokens/s counts training steps only; peak memory is each run's own process.")
    if all(c.train.budget_bytes > 0 for c in configs.values()):
        note += (" Every rung saw the same bytes of training text (train.budget_bytes; steps = bytes / (bytes per token of "
                 "its train shard x tokens per step)), and each is scored on its own cleaned validation text "
                 "(v1-v3 and v6 lower-case it).")
    elif all(c.train.budget_tokens > 0 for c in configs.values()):
        note += (" Every rung saw the same number of training tokens (train.budget_tokens): a subword rung then saw "
                 "several times the text of a char rung.")
    note += f"\n\nWall time of the whole comparison: {format_seconds(timer.elapsed())} ({timer.elapsed():.0f} s)."
    return comparison(parent, variants, title, note)


def main(argv: list[str] | None = None) -> int:
    p = parser("run", __doc__)
    p.add_argument("preset", nargs="?", help="preset to run (default: demo)")
    add_config_args(p, preset_flag=False)
    p.add_argument("--run", "--run-dir", dest="run", metavar="DIR",
                   help="the run folder (a multi-run preset: the parent of its variants' folders); default <runs-dir>/<name>")
    p.add_argument("--name", help="run folder name under --runs-dir (default: the preset, plus the scale if not the default)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--variant", help="run only this variant of a multi-run preset (one with a 'runs:' section)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (--run DIR, or the preset's folder): training from its last good "
                        "checkpoint, then every stage still missing; uses the folder's config.yaml")
    args = p.parse_args(argv)
    if args.config and not args.preset:
        workflow_name = config_workflow(args.config)
    else:
        workflow_name = preset_workflow(args.preset or ("demo" if not args.config else None))
    workflow = workflow_module(workflow_name)
    if maybe_list_keys(args, workflow.ROOT):
        return 0
    if args.config and args.preset:
        p.error("give a preset or --config, not both")
    if args.run and args.name:
        p.error("give --run DIR or --name, not both")
    command = "brlm run " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.resume and not args.preset:
        return resume_run(args, p, command)
    if not args.config:
        args.preset = args.preset or "demo"
    if args.preset and not args.variant and workflow_name == "pretrain" and preset_variants(args.preset):
        name = args.name or (args.preset if args.scale is None else f"{args.preset}-{args.scale}")
        parent = Path(args.run) if args.run else Path(args.runs_dir) / name
        table = run_variants(args.preset, args, parent)
        print(table)
        print(f"\ncomparison: {parent / 'comparison.md'}")
        return 0
    if args.variant and (not args.preset or args.config):
        p.error("--variant needs a preset")
    if args.resume:
        return resume_run(args, p, command)
    cfg = resolve_config(args, root=workflow.ROOT)  # with --variant: that variant of the preset
    if args.name:
        name = args.name
    elif args.config:
        name = f"{Path(args.config).resolve().parent.name}-repeat"
    else:
        name = cfg.preset if args.scale is None else f"{cfg.preset}-{cfg.scale}"
    paths = RunPaths(Path(args.run) if args.run else Path(args.runs_dir) / name)
    if workflow.run_pipeline(cfg, paths, command=command):
        report = render_report(paths.root)  # rank 0 only: the other ranks under torchrun only train
        info(f"report: {report}")
        print(report)
    return 0


def resume_run(args: Any, p: Any, command: str) -> int:
    """`brlm run --resume`: the folder's own config, training continued, the missing stages run."""
    if args.config or args.overrides:
        p.error("--resume continues a run as its config.yaml says; drop --config / --set")
    if args.run:
        folder = Path(args.run)
    elif args.preset:
        folder = Path(args.runs_dir) / (args.name or (args.preset if args.scale is None else f"{args.preset}-{args.scale}"))
    else:
        p.error("--resume needs the run folder: --run DIR (or the preset it was started with)")
    paths = RunPaths(folder)
    if not paths.config.is_file():
        raise BrlmError(f"{folder}: no config.yaml here; nothing to resume (start it with `brlm run PRESET --run {folder}`)")
    workflow_name = config_workflow(paths.config)
    if workflow_name != "pretrain":
        raise BrlmError(f"{folder}: a {workflow_name} run; --resume continues pretraining runs "
                        "(a post-training phase resumes with `brlm finetune … --resume`)")
    from brlm.stages.pretrain import require_resumable

    require_resumable(paths)
    workflow = workflow_module(workflow_name)
    cfg = resolve(workflow.ROOT, config_file=paths.config)
    if workflow.run_pipeline(cfg, paths, command=command, resume=True):
        report = render_report(paths.root)
        info(f"report: {report}")
        print(report)
    return 0


