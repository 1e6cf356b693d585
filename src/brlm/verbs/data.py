"""`brlm data prepare`: read a corpus, clean it, drop exact duplicates, split train/val by content
hash, and write `<run>/data/{train,val}.jsonl` with a manifest of counts.

    brlm data prepare --source noticias.jsonl.gz --text-field text --run runs/meu
"""

from __future__ import annotations

from pathlib import Path

from brlm.runs.pipeline import stage_data, write_config
from brlm.runs.registry import RunPaths
from brlm.verbs.common import (
    add_config_args,
    add_run_arg,
    default_run_dir,
    maybe_list_keys,
    parser,
    resolve_config,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("data", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    prep = sub.add_parser("prepare", help="read, clean, deduplicate and split a corpus")
    prep.add_argument("--source", help="corpus: builtin:demo, a .jsonl/.jsonl.gz/.txt file or a folder (data.source)")
    prep.add_argument("--text-field", help="JSON field with the text (data.text_field)")
    prep.add_argument("--force", action="store_true", help="redo even if the output is up to date")
    add_run_arg(prep)
    add_config_args(prep)
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    extra = []
    if args.source:
        extra.append(f"data.source={args.source}")
    if args.text_field:
        extra.append(f"data.text_field={args.text_field}")
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir, extra)
    paths = RunPaths(run_dir or default_run_dir(cfg))
    write_config(cfg, paths)
    stage_data(cfg, paths, force=args.force)
    print(paths.data)
    return 0
