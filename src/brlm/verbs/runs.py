"""`brlm runs list`: the run folders under --runs-dir with status, preset, parameters, best
validation bits per byte, tokens seen and wall time.

    brlm runs list --runs-dir runs
"""

from __future__ import annotations

import json

from brlm.runs.compare import find_runs, runs_list_table, summarize_run
from brlm.verbs.common import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("runs", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    ls = sub.add_parser("list", help="list run folders")
    ls.add_argument("--runs-dir", default="runs", help="where run folders are (default: runs)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args(argv)
    rows = [summarize_run(r) for r in find_runs(args.runs_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no runs under {args.runs_dir} (a run folder holds run.json)")
    else:
        print(runs_list_table(rows))
    return 0
