"""`brlm eval intrinsic RUN`: loss, perplexity, next-token accuracy, bits per byte and bits per
character of a run's checkpoint on a fixed, hashed set of validation windows (per document
category when the data has one); writes `<run>/eval.json` and prints a table (`--json`: one JSON
object with bits_per_byte, bits_per_char, loss, accuracy, tokens, bytes, for scripts).
With `--text FILE` it scores any text `brlm data prepare` reads (.txt/.jsonl/.jsonl.gz/.csv or a
folder), cleaned with the run's own cleaning config, on fixed windows -> `<run>/eval_text.json`.
`brlm eval extrinsic build|run|rescore`: task sets, models answering them, metrics from saved outputs (brlm/verbs/extrinsic.py).
`brlm eval guardrails RUN`: byte-fallback and short-piece ratios, repetition and unseen words on
the standard prompts x several seeds, with pass/fail; writes `<run>/guardrails.json`.

    brlm eval intrinsic runs/demo --checkpoint last --set eval.max_windows=1000
    brlm eval intrinsic runs/demo --hf exported/demo-hf     # a Hugging Face model folder, offline
    brlm eval intrinsic runs/demo --text outro_corpus.jsonl.gz --text-field text --json
    brlm eval intrinsic runs/demo --adapter runs/cpt-tiny/adapter   # the run's model + a LoRA adapter
    brlm eval guardrails runs/demo --seeds 5 --max-short-piece 0.12
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brlm.stages.evaluate import stage_eval, stage_guardrails
from brlm.verbs.common import existing_run, parser, resolve_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["extrinsic"]:  # its own parser: build / run / rescore (brlm/verbs/extrinsic.py)
        from brlm.verbs import extrinsic

        return extrinsic.main(argv[1:])
    p = parser("eval", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    ev = sub.add_parser("intrinsic", help="intrinsic metrics on fixed validation windows")
    ev.add_argument("run", help="run folder")
    ev.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    ev.add_argument("--hf", metavar="DIR", help="score a Hugging Face model folder (offline) on the run's validation data instead")
    ev.add_argument("--text", metavar="FILE", help="score this text instead of the run's validation split (any source "
                    "`brlm data prepare` reads), cleaned with the run's cleaning config")
    ev.add_argument("--text-field", default="text", help="JSON field / CSV column with the text of --text (default: text)")
    ev.add_argument("--json", action="store_true", help="print one JSON object (bits_per_byte, bits_per_char, loss, accuracy, "
                    "tokens, bytes) instead of the table")
    ev.add_argument("--adapter", metavar="DIR", help="apply this PEFT adapter (or post-training run) to the run's model, or to --hf")
    ev.add_argument("--out", help="output JSON (default: <run>/eval.json; --hf: eval_hf.json; --text: eval_text.json, "
                    "eval_hf_text.json; --adapter: eval_adapter*.json)")
    ev.add_argument("--quantize", choices=("int8",), help="score the dynamic-int8 model (CPU) -> <run>/eval_int8.json")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE", help="override eval settings")
    sub.add_parser("extrinsic", help="QA / summarization / rewriting: `brlm eval extrinsic --help` (build, run, rescore)", add_help=False)
    gr = sub.add_parser("guardrails", help="readability guardrails on generated samples (pass/fail)")
    gr.add_argument("run", help="run folder")
    gr.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    gr.add_argument("--seeds", type=int, help="guardrails.num_seeds: samples per prompt (default 5)")
    gr.add_argument("--max-byte-fallback", type=float, help="guardrails.max_byte_fallback threshold (default 0.03)")
    gr.add_argument("--max-short-piece", type=float, help="guardrails.max_short_piece threshold (default 0.12)")
    gr.add_argument("--max-new-tokens", type=int, help="guardrails.max_new_tokens (0 = sample.max_new_tokens)")
    gr.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override settings")
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    if args.action == "guardrails":
        flags = {"seeds": "num_seeds", "max_byte_fallback": "max_byte_fallback", "max_short_piece": "max_short_piece",
                 "max_new_tokens": "max_new_tokens"}
        extra = [f"guardrails.{key}={getattr(args, flag)}" for flag, key in flags.items() if getattr(args, flag) is not None]
        cfg = resolve_config(args, paths.root, extra)
        result = stage_guardrails(cfg, paths, checkpoint=args.checkpoint)
        print(json.dumps(result["aggregate"], indent=2))
        return 0
    cfg = resolve_config(args, paths.root)
    result = stage_eval(cfg, paths, checkpoint=args.checkpoint, hf=args.hf, out=Path(args.out) if args.out else None,
                        text=args.text, text_field=args.text_field, quantize=args.quantize,
                        adapter=args.adapter)
    if args.json:
        print(json.dumps({k: result.get(k) for k in MACHINE_KEYS}))
    else:
        print(intrinsic_table(result))
    return 0


MACHINE_KEYS = ("bits_per_byte", "bits_per_char", "loss", "accuracy", "perplexity", "tokens", "bytes", "windows", "file")


def intrinsic_table(result: dict) -> str:
    """The figures people read first, then one line per document category (if any)."""
    def f(x, fmt=".4f"):
        return "—" if x is None else format(x, fmt)

    head = "| | bits/byte | bits/char | loss (nats/token) | ppl | accuracy | tokens | bytes |\n|---|---|---|---|---|---|---|---|"
    rows = [("total", result)] + sorted((result.get("categories") or {}).items())
    lines = [head] + [f"| {name} | {f(r.get('bits_per_byte'))} | {f(r.get('bits_per_char'))} | {f(r.get('loss'))} | "
                      f"{f(r.get('perplexity'), '.2f')} | {f(r.get('accuracy'))} | {f(r.get('tokens'), ',')} | "
                      f"{f(r.get('bytes'), ',')} |" for name, r in rows]
    source = result.get("text_source") or "validation split"
    lines.append(f"\n{result.get('windows')} windows of {result.get('block_size')} tokens (stride {result.get('stride')}) "
                 f"from {source}; checkpoint {result.get('checkpoint')}; written to {result.get('file')}")
    return "\n".join(lines)
