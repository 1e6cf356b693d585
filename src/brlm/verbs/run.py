"""`brlm run [PRESET]`: the whole from-scratch pipeline into one run folder.

    brlm run demo                       # runs/demo/report.md after a few minutes on a CPU
    brlm run demo --scale tiny          # seconds; what the tests run
    brlm run --config runs/demo/config.yaml --name demo-again   # repeat a run from its config
    brlm run gpt2-vs-moe --scale tiny   # a multi-run preset: one folder per variant + comparison.md
    brlm run track2 --scale tiny        # from scratch vs adapt: base -> QLoRA CPT -> SFT -> DPO, one report

A preset with a `runs:` section (name -> overrides of the preset's config, optionally with their
own `scales:`) is a comparison: each variant runs in its own process (so peak memory is its own)
into <runs-dir>/<name>/<variant>/, then a table compares validation loss, perplexity, bits per
byte, tokens/s, peak memory and wall time (comparison.md / comparison.json).
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from brlm.config import RunConfig, preset_variants, resolve
from brlm.errors import BrlmError
from brlm.io.files import read_json, write_json, write_text
from brlm.io.logging import info
from brlm.io.run_folder import RunPaths
from brlm.runs.report import render_report
from brlm.stages import config_workflow, preset_workflow, workflow_module
from brlm.verbs.common import add_config_args, maybe_list_keys, parser, resolve_config


def variant_config(preset: str, variant: str, scale: str | None, overrides: list[str]) -> RunConfig:
    """defaults < preset < its scale < the variant < the variant's scale < --set overrides."""
    return resolve(RunConfig, preset, scale, overrides=overrides, variant=variant)


def comparison_rows(parent: Path, variants: list[str]) -> list[dict[str, Any]]:
    rows = []
    for v in variants:
        paths = RunPaths(parent / v)
        tr = read_json(paths.train_summary)
        ev = read_json(paths.eval)
        rows.append({
            "run": v,
            "arch": tr["arch"],
            "params_m": tr["n_params"] / 1e6,
            "val_loss": ev["loss"],
            "perplexity": ev["perplexity"],
            "bits_per_byte": ev.get("bits_per_byte"),
            "tokens_per_s": tr["tokens_per_s"],
            "peak_memory_mb": tr.get("peak_cuda_allocated_mb", tr.get("peak_rss_mb")),
            "wall_time_s": tr["wall_time_s"],
        })
    return rows


def comparison_table(rows: list[dict[str, Any]]) -> str:
    head = "| run | arch | params (M) | val loss | ppl | bits/byte | tokens/s | peak mem (MB) | wall time (s) |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        bpb = r["bits_per_byte"]
        lines.append(
            f"| {r['run']} | {r['arch']} | {r['params_m']:.2f} | {r['val_loss']:.4f} | {r['perplexity']:.2f} | "
            f"{bpb:.4f} | {r['tokens_per_s']:,.0f} | {r['peak_memory_mb']:,.0f} | {r['wall_time_s']:.1f} |"
            if bpb is not None and not math.isnan(bpb) else
            f"| {r['run']} | {r['arch']} | {r['params_m']:.2f} | {r['val_loss']:.4f} | {r['perplexity']:.2f} | - | "
            f"{r['tokens_per_s']:,.0f} | {r['peak_memory_mb']:,.0f} | {r['wall_time_s']:.1f} |"
        )
    return "\n".join(lines)


def run_variants(preset: str, args: Any, parent: Path) -> str:
    variants = list(preset_variants(preset))
    for v in variants:
        variant_config(preset, v, args.scale, args.overrides)  # fail early on a bad override
    for v in variants:
        info(f"== {preset}: variant {v} -> {parent / v}")
        cmd = [sys.executable, "-m", "brlm", "run", preset, "--variant", v, "--runs-dir", str(parent), "--name", v]
        if args.scale:
            cmd += ["--scale", args.scale]
        for o in args.overrides:
            cmd += ["--set", o]
        proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise BrlmError(f"variant {v} of preset {preset} failed (exit code {proc.returncode}); see {parent / v / 'run.json'}")
    rows = comparison_rows(parent, variants)
    table = comparison_table(rows)
    write_json(parent / "comparison.json", rows)
    note = ("Perplexity compares only runs with the same tokenizer; bits per byte compares any two. "
            "tokens/s counts training steps only; peak memory is each run's own process.")
    write_text(parent / "comparison.md", f"# {preset} ({args.scale or 'default scale'})\n\n{table}\n\n{note}\n")
    return table


def main(argv: list[str] | None = None) -> int:
    p = parser("run", __doc__)
    p.add_argument("preset", nargs="?", help="preset to run (default: demo)")
    add_config_args(p, preset_flag=False)
    p.add_argument("--name", help="run folder name under --runs-dir (default: the preset, plus the scale if not the default)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--variant", help="run only this variant of a multi-run preset (one with a 'runs:' section)")
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
    if not args.config:
        args.preset = args.preset or "demo"
    if args.preset and not args.variant and workflow_name == "pretrain" and preset_variants(args.preset):
        name = args.name or (args.preset if args.scale is None else f"{args.preset}-{args.scale}")
        parent = Path(args.runs_dir) / name
        table = run_variants(args.preset, args, parent)
        print(table)
        print(f"\ncomparison: {parent / 'comparison.md'}")
        return 0
    if args.variant and (not args.preset or args.config):
        p.error("--variant needs a preset")
    cfg = resolve_config(args, root=workflow.ROOT)  # with --variant: that variant of the preset
    if args.name:
        name = args.name
    elif args.config:
        name = f"{Path(args.config).resolve().parent.name}-repeat"
    else:
        name = cfg.preset if args.scale is None else f"{cfg.preset}-{cfg.scale}"
    paths = RunPaths(Path(args.runs_dir) / name)
    if workflow.run_pipeline(cfg, paths, command="brlm run " + shlex.join(argv if argv is not None else sys.argv[1:])):
        report = render_report(paths.root)  # rank 0 only: the other ranks under torchrun only train
        info(f"report: {report}")
        print(report)
    return 0
