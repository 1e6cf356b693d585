"""`brlm sample RUN`: generate text from a run's checkpoint for the standard prompts, one
`--prompt`, or a file of prompts (one per line). Temperature 0 is greedy decoding.

    brlm sample runs/demo --prompt "O Banco Central decidiu" --temperature 0.7 --top-p 0.9
"""

from __future__ import annotations

import sys
from pathlib import Path

from brlm.stages.evaluate import read_prompts, stage_sample
from brlm.verbs.common import existing_run, parser, resolve_config


def main(argv: list[str] | None = None) -> int:
    p = parser("sample", __doc__)
    p.add_argument("run", help="run folder")
    p.add_argument("--prompt", action="append", help="a prompt; repeatable")
    p.add_argument("--prompts", help="a UTF-8 file with one prompt per line (default: the standard prompts)")
    p.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number")
    p.add_argument("--temperature", type=float, help="sample.temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, help="sample.top_k (0 = off)")
    p.add_argument("--top-p", type=float, help="sample.top_p (1 = off)")
    p.add_argument("--max-new-tokens", type=int, help="sample.max_new_tokens")
    p.add_argument("--seed", type=int, help="sample.seed")
    p.add_argument("--num-samples", type=int, help="sample.num_samples")
    p.add_argument("--repetition-penalty", type=float, help="sample.repetition_penalty (1 = off)")
    p.add_argument("--stop", action="append", help="stop string (repeatable; '\\n' for a newline); the completion ends before it")
    p.add_argument("--no-cache", action="store_true", help="decode without the KV cache (slower; for checking)")
    p.add_argument("--out", help="write the samples JSON here (default: <run>/samples.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE")
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    extra = [
        f"sample.{key}={getattr(args, key)}"
        for key in ("temperature", "top_k", "top_p", "max_new_tokens", "seed", "num_samples", "repetition_penalty")
        if getattr(args, key) is not None
    ]
    if args.stop:
        extra.append("sample.stop=" + "|".join(s.replace("\n", "\\n") for s in args.stop))
    if args.no_cache:
        extra.append("sample.use_cache=false")
    cfg = resolve_config(args, paths.root, extra)
    prompts = list(args.prompt or []) or (read_prompts(args.prompts) if args.prompts else None)
    rows = stage_sample(cfg, paths, prompts=prompts, checkpoint=args.checkpoint, out=Path(args.out) if args.out else None)["samples"]
    for row in rows:
        if row.get("warning"):
            sys.stdout.write(f"warning: {row['warning']}\n")
        sys.stdout.write(f"--- seed {row['seed']}\n{row['prompt']}{row['completion']}\n")
    return 0
