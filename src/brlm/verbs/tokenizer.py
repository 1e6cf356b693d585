"""`brlm tokenizer train`: train a SentencePiece tokenizer (unigram or BPE, byte fallback) on the
training split of a run prepared with `brlm data prepare`, into `<run>/tokenizer/`.

    brlm tokenizer train --run runs/meu --set tokenizer.vocab_size=4000
"""

from __future__ import annotations

from pathlib import Path

from brlm.runs.pipeline import stage_tokenizer, write_config
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
    p = parser("tokenizer", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    tr = sub.add_parser("train", help="train a tokenizer on a run's training split")
    tr.add_argument("--force", action="store_true", help="retrain even if the tokenizer is up to date")
    add_run_arg(tr)
    add_config_args(tr)
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir)
    paths = RunPaths(run_dir or default_run_dir(cfg))
    write_config(cfg, paths)
    stage_tokenizer(cfg, paths, force=args.force)
    print(paths.tokenizer)
    return 0
