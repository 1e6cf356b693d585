"""`brlm report RUN`: write `<run>/report.md` (and loss_curve.png) from the run folder alone."""

from __future__ import annotations

from brlm.runs.report import render_report
from brlm.verbs.common import existing_run, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("report", __doc__)
    p.add_argument("run", help="run folder")
    args = p.parse_args(argv)
    print(render_report(existing_run(args.run).root))
    return 0
