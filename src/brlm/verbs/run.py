"""`brlm run [PRESET]`: the whole from-scratch pipeline into one run folder.

    brlm run demo                       # runs/demo/report.md after a few minutes on a CPU
    brlm run demo --scale tiny          # seconds; what the tests run
    brlm run --config runs/demo/config.yaml --name demo-again   # repeat a run from its config
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from brlm.runs.pipeline import run_pipeline
from brlm.runs.registry import RunPaths
from brlm.verbs.common import add_config_args, maybe_list_keys, parser, resolve_config


def main(argv: list[str] | None = None) -> int:
    p = parser("run", __doc__)
    p.add_argument("preset", nargs="?", help="preset to run (default: demo)")
    add_config_args(p, preset_flag=False)
    p.add_argument("--name", help="run folder name under --runs-dir (default: the preset, plus the scale if not the default)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    if args.config and args.preset:
        p.error("give a preset or --config, not both")
    if not args.config:
        args.preset = args.preset or "demo"
    cfg = resolve_config(args)
    if args.name:
        name = args.name
    elif args.config:
        name = f"{Path(args.config).resolve().parent.name}-repeat"
    else:
        name = cfg.preset if args.scale is None else f"{cfg.preset}-{cfg.scale}"
    paths = RunPaths(Path(args.runs_dir) / name)
    report = run_pipeline(cfg, paths, command="brlm run " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(report)
    return 0
