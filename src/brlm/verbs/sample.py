"""`brlm sample RUN`: generate text from a run's checkpoint for the standard prompts, one
`--prompt`, or a file of prompts (one per line). Temperature 0 is greedy decoding.

    brlm sample runs/demo --prompt "O Banco Central decidiu" --temperature 0.7 --top-p 0.9
    brlm sample runs/llama --adapter runs/cpt-tiny/adapter --prompt "A prefeitura anunciou"   # base + LoRA adapter
    brlm sample runs/llama/hf --adapter runs/sft-tiny --chat --prompt "Qual é a capital do Paraná?"

RUN is a brlm run or, with --adapter, also a Hugging Face folder (the base the adapter was trained
on; another base is refused). With --adapter the samples are printed, and written only with --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from brlm.stages.evaluate import read_prompts, stage_sample
from brlm.verbs.common import existing_run, parser, resolve_config


def chat_prompt(base: Path, question: str) -> str:
    """The question as a user turn ready for the answer: the chat template of a Hugging Face base,
    else brlm's PT-BR format (what `brlm export hf` writes as the template of a brlm run)."""
    from brlm.tokenizers.hf import ROLE_MARKERS

    if (base / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        if tok.chat_template:
            return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    return f"{ROLE_MARKERS['user']}\n{question}\n{ROLE_MARKERS['assistant']}\n"


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
    p.add_argument("--adapter", help="a PEFT adapter folder (or a post-training run) to apply to RUN")
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn of the tokenizer's chat template")
    p.add_argument("--out", help="write the samples JSON here (default: <run>/samples.json; with --adapter, not written)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE")
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    if args.chat and not args.adapter:
        p.error("--chat needs --adapter (a chat-tuned model)")
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
    if args.chat:
        prompts = [chat_prompt(paths.root, q) for q in (prompts or read_prompts(cfg.sample.prompts))]
    rows = stage_sample(cfg, paths, prompts=prompts, checkpoint=args.checkpoint, out=Path(args.out) if args.out else None,
                        adapter=args.adapter)["samples"]
    for row in rows:
        if row.get("warning"):
            sys.stdout.write(f"warning: {row['warning']}\n")
        sys.stdout.write(f"--- seed {row['seed']}\n{row['prompt']}{row['completion']}\n")
    return 0
