"""`brlm report RUN`: write `<run>/report.md` and a self-contained `<run>/report.html` (images
embedded) from the run folder alone: config, data and tokenizer figures, loss curves, the
intrinsic table, guardrails, cost figures (from cost.json when present) and samples per prompt.

    brlm report runs/demo
"""

from __future__ import annotations

from brlm.runs.report import render_report
from brlm.verbs.common import existing_run, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("report", __doc__)
    p.add_argument("run", help="run folder")
    args = p.parse_args(argv)
    md = render_report(existing_run(args.run).root)
    print(md)
    print(md.with_suffix(".html"))
    return 0
