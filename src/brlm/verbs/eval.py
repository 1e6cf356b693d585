"""`brlm eval intrinsic RUN`: loss, perplexity, next-token accuracy and bits per byte of a run's
checkpoint on a fixed, hashed set of validation windows; writes `<run>/eval.json`.

    brlm eval intrinsic runs/demo --checkpoint last --set eval.max_windows=1000
"""

from __future__ import annotations

import json

from brlm.runs.pipeline import stage_eval
from brlm.verbs.common import existing_run, parser, resolve_config


def main(argv: list[str] | None = None) -> int:
    p = parser("eval", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    ev = sub.add_parser("intrinsic", help="intrinsic metrics on fixed validation windows")
    ev.add_argument("run", help="run folder")
    ev.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE", help="override eval settings")
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    cfg = resolve_config(args, paths.root)
    result = stage_eval(cfg, paths, checkpoint=args.checkpoint)
    print(json.dumps(result, indent=2))
    return 0
