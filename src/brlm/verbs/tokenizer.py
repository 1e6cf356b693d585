"""`brlm tokenizer train|report|compare`.

train: a SentencePiece (unigram/BPE, byte fallback) or char-level tokenizer on the training split
of a run prepared with `brlm data prepare`, into `<run>/tokenizer/`; it stores the data's cleaning
config (hash and text), and tokenizing data cleaned differently is an error unless
--allow-misaligned (recorded in the run's config.yaml and shards manifest).
report: quality figures of one tokenizer on some text. compare: the same, side by side, for
brlm tokenizers, run folders and foreign SentencePiece .model files.

    brlm tokenizer train --run runs/meu --set tokenizer.vocab_size=4000
    brlm tokenizer train --run runs/meu --set tokenizer.kind=char --set tokenizer.min_frequency=3
    brlm tokenizer report --run runs/meu
    brlm tokenizer compare runs/meu ../shared/data/reference/tokenizers/v6_unigram_16k/spm.model --text noticias.jsonl
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from brlm.errors import BrlmError
from brlm.io.files import write_json
from brlm.io.run_folder import RunLock, RunPaths
from brlm.stages.pretrain import stage_tokenizer, write_config
from brlm.stages.workflow import persisted_config
from brlm.verbs.common import (
    add_config_args,
    add_run_arg,
    default_run_dir,
    maybe_list_keys,
    parser,
    resolve_config,
)


def _texts(args: argparse.Namespace, run: Path | None):
    from itertools import islice

    from brlm.data.prepare import iter_split_texts
    from brlm.data.sources import read_documents

    if args.text:
        it = (d.text for d in read_documents(args.text, args.text_field, "blocks"))
    elif run is not None and (run / "data" / "val.jsonl").is_file():
        it = iter_split_texts(run / "data", "val")
    else:
        raise BrlmError("no text to measure: pass --text FILE (.txt/.jsonl/.csv) or --run with a prepared data split")
    return list(islice(it, args.max_docs) if args.max_docs else it)


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", help="text to measure on: a .txt/.jsonl/.jsonl.gz/.csv file or folder (default: the run's val split)")
    p.add_argument("--text-field", default="text", help="JSON field / CSV column with the text (default: text)")
    p.add_argument("--max-docs", type=int, default=0, help="measure on at most this many documents (0 = all)")
    p.add_argument("--out", help="also write the figures to this JSON file")


def main(argv: list[str] | None = None) -> int:
    p = parser("tokenizer", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    tr = sub.add_parser("train", help="train a tokenizer on a run's training split")
    tr.add_argument("--force", action="store_true", help="retrain even if the tokenizer is up to date")
    tr.add_argument("--allow-misaligned", action="store_true",
                    help="let this run use a tokenizer whose cleaning differs from the data's (recorded; tokenizer.allow_misaligned)")
    add_run_arg(tr)
    add_config_args(tr)
    rep = sub.add_parser("report", help="quality figures of a tokenizer on some text")
    rep.add_argument("--tokenizer", help="a run folder, tokenizer folder or .model file (default: --run's tokenizer)")
    add_run_arg(rep)
    _measure_args(rep)
    cmp_ = sub.add_parser("compare", help="quality figures of several tokenizers side by side")
    cmp_.add_argument("tokenizers", nargs="+", help="run folders, tokenizer folders or SentencePiece .model files")
    add_run_arg(cmp_)
    _measure_args(cmp_)
    args = p.parse_args(argv)

    if args.action in ("report", "compare"):
        from brlm.tokenizers.report import format_table, load_any, tokenizer_stats

        run = Path(args.run) if args.run else None
        specs = args.tokenizers if args.action == "compare" else [args.tokenizer or (run and str(run)) or ""]
        if not specs[0]:
            raise BrlmError("brlm tokenizer report: pass --tokenizer PATH or --run RUN")
        if run is None and args.action == "report" and args.tokenizer:
            maybe_run = Path(args.tokenizer)
            run = maybe_run if (maybe_run / "data").is_dir() else None
        texts = _texts(args, run)
        results = {}
        for spec in specs:
            label, tok = load_any(spec)
            while label in results:
                label += "'"
            results[label] = tokenizer_stats(tok, texts)
        print(format_table(results))
        out = args.out
        if not out and args.action == "report" and run is not None and (run / "tokenizer").is_dir():
            out = run / "tokenizer" / "report.json"  # the run folder keeps its figures
        if out:
            write_json(out, {"texts": len(texts), "results": results})
        return 0

    if maybe_list_keys(args):
        return 0
    extra = ["tokenizer.allow_misaligned=true"] if args.allow_misaligned else []
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir, extra)
    paths = RunPaths(run_dir or default_run_dir(cfg))
    with RunLock(paths, "brlm tokenizer " + shlex.join(argv if argv is not None else sys.argv[1:])), \
            persisted_config(cfg, paths, write_config):  # a rejected value is not kept in config.yaml
        stage_tokenizer(cfg, paths, force=args.force)
    print(paths.tokenizer)
    return 0
