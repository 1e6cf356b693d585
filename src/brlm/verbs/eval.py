"""`brlm eval intrinsic RUN`: loss, perplexity, next-token accuracy, bits per byte and bits per
character of a run's checkpoint on a fixed, hashed set of validation windows (per document
category when the data has one); writes `<run>/eval.json`.
`brlm eval guardrails RUN`: byte-fallback and short-piece ratios, repetition and unseen words on
the standard prompts x several seeds, with pass/fail; writes `<run>/guardrails.json`.

    brlm eval intrinsic runs/demo --checkpoint last --set eval.max_windows=1000
    brlm eval intrinsic runs/demo --hf exported/demo-hf     # a Hugging Face model folder, offline
    brlm eval intrinsic runs/demo --adapter runs/cpt-tiny/adapter   # the run's model + a LoRA adapter
    brlm eval guardrails runs/demo --seeds 5 --max-short-piece 0.12
"""

from __future__ import annotations

import json
from pathlib import Path

from brlm.stages.evaluate import stage_eval, stage_guardrails
from brlm.verbs.common import existing_run, parser, resolve_config


def main(argv: list[str] | None = None) -> int:
    p = parser("eval", __doc__)
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    ev = sub.add_parser("intrinsic", help="intrinsic metrics on fixed validation windows")
    ev.add_argument("run", help="run folder")
    ev.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    ev.add_argument("--hf", metavar="DIR", help="score a Hugging Face model folder (offline) on the run's validation data instead")
    ev.add_argument("--adapter", metavar="DIR", help="apply this PEFT adapter (or post-training run) to the run's model, or to --hf")
    ev.add_argument("--out", help="output JSON (default: <run>/eval.json; with --hf, eval_hf.json; with --adapter, eval_adapter.json)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE", help="override eval settings")
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
                        adapter=args.adapter)
    print(json.dumps(result, indent=2))
    return 0
