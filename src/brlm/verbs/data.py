"""`brlm data prepare`: read a corpus, clean it (rules and presets, PII), drop exact and near
duplicates and excluded documents, split train/val/test by content hash, and write
`<run>/data/{train,val[,test]}.jsonl` with a manifest of per-rule counts.
`brlm data list` / `brlm data get NAME`: the catalogue of known corpora.

    brlm data prepare --source noticias.jsonl.gz --text-field text --clean natural --run runs/meu
    brlm data prepare --source tabela.csv --text-field corpo --set clean.pii=true --exclude teste.jsonl
    brlm data prepare --source hf:nlpufg/brwac --set data.max_docs=20000 --clean seed-v6
    brlm data get fakebr            # downloads, verifies, unpacks to ~/.cache/brlm/fakebr/news.jsonl
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from brlm.config import CLEAN_PRESETS
from brlm.io.run_folder import RunLock, RunPaths
from brlm.stages.pretrain import stage_data, write_config
from brlm.stages.workflow import persisted_config
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
    prep.add_argument("--source", help="corpus: builtin:demo, a .jsonl/.jsonl.gz/.csv/.txt file, a folder, or hf:NAME (data.source)")
    prep.add_argument("--text-field", help="JSON field / CSV column with the text (data.text_field)")
    prep.add_argument("--id-field", help="JSON field / CSV column with the document id (data.id_field)")
    prep.add_argument("--txt-mode", choices=["blocks", "lines"], help="a .txt document per blank-line block or per line (data.txt_mode)")
    prep.add_argument("--clean", choices=sorted(CLEAN_PRESETS), help="cleaning preset (clean.*); --set clean.x=y adjusts one rule")
    prep.add_argument("--exclude", action="append", default=[], metavar="FILE",
                      help="documents of FILE must not appear in any split (repeatable; data.exclude)")
    prep.add_argument("--force", action="store_true", help="redo even if the output is up to date")
    add_run_arg(prep)
    add_config_args(prep)
    sub.add_parser("list", help="list the corpora `brlm data get` knows")
    get = sub.add_parser("get", help="download a corpus of the catalogue into the cache")
    get.add_argument("name", help="catalogue name (see `brlm data list`)")
    get.add_argument("--cache-dir", help="where to put it (default: $BRLM_CACHE_DIR or ~/.cache/brlm)")
    get.add_argument("--url", help="download from this URL instead of the catalogue's (a mirror)")
    args = p.parse_args(argv)
    if args.action == "list":
        from brlm.data.catalogue import list_entries

        for line in list_entries():
            print(line)
        return 0
    if args.action == "get":
        from brlm.data.catalogue import get

        print(get(args.name, cache_dir=args.cache_dir, url=args.url))
        return 0
    if maybe_list_keys(args):
        return 0
    extra = []
    if args.source:
        extra.append(f"data.source={args.source}")
    if args.text_field:
        extra.append(f"data.text_field={args.text_field}")
    if args.id_field:
        extra.append(f"data.id_field={args.id_field}")
    if args.txt_mode:
        extra.append(f"data.txt_mode={args.txt_mode}")
    if args.exclude:
        extra.append(f"data.exclude={','.join(args.exclude)}")
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir, extra)  # --clean's values first, so --set clean.x=y wins
    paths = RunPaths(run_dir or default_run_dir(cfg))
    with RunLock(paths, "brlm data " + shlex.join(argv if argv is not None else sys.argv[1:])), \
            persisted_config(cfg, paths, write_config):  # a rejected value is not kept in config.yaml
        stage_data(cfg, paths, force=args.force)
    print(paths.data)
    return 0
