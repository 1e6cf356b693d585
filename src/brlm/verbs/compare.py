"""`brlm compare RUN RUN…`: the side-by-side table (bits/byte, bits/char, loss, ppl, accuracy,
tokens seen, tokens/s, wall time, FLOPs, estimated cost, guardrails) as Markdown and CSV, with a
warning when the runs use different tokenizers, plus overlaid loss and throughput plots.

    brlm compare runs/demo runs/v5 --out comparisons/demo-vs-v5
    -> compare.md, compare.csv, compare_loss.png, compare_throughput.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from brlm.io.files import write_text
from brlm.io.logging import read_metrics
from brlm.io.run_folder import RunPaths
from brlm.runs.compare import comparison_table, extrinsic_table, summarize_run
from brlm.runs.plots import overlay_loss_curves, overlay_throughput
from brlm.verbs.common import existing_run, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("compare", __doc__)
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", default="compare", help="folder for compare.md / .csv / plots (default: ./compare)")
    args = p.parse_args(argv)
    paths = [existing_run(r) for r in args.runs]
    rows = [summarize_run(x.root) for x in paths]
    md, csv_text, warnings = comparison_table(rows)
    extrinsic = extrinsic_table([x.root for x in paths])
    if extrinsic:
        md += "\n## Avaliação extrínseca (média ± dp entre sementes [IC 95 %])\n\n" + extrinsic
    out = Path(args.out)
    metrics = {r["run"]: read_metrics(RunPaths(Path(r["path"])).metrics) for r in rows}
    loss_png = overlay_loss_curves(metrics, out / "compare_loss.png")
    tput_png = overlay_throughput(metrics, out / "compare_throughput.png")
    images = "".join(f"\n![{p.stem}]({p.name})\n" for p in (loss_png, tput_png) if p)
    write_text(out / "compare.md", "# brlm — comparação\n\n" + md + images)
    write_text(out / "compare.csv", csv_text)
    for w in warnings:
        sys.stderr.write(w + "\n")
    print(md)
    print(f"written: {out / 'compare.md'}, {out / 'compare.csv'}" + "".join(f", {p}" for p in (loss_png, tput_png) if p))
    return 0
