"""`brlm sample RUN`: generate text from a run's checkpoint for the standard prompts, one
`--prompt`, or a file of prompts (one per line). Temperature 0 is greedy decoding.

    brlm sample runs/demo --prompt "O Banco Central decidiu" --temperature 0.7 --top-p 0.9
    brlm sample runs/llama --adapter runs/cpt-tiny/adapter --prompt "A prefeitura anunciou"   # base + LoRA adapter
    brlm sample runs/llama/hf --adapter runs/sft-tiny --chat --prompt "Qual é a capital do Paraná?"

RUN is a brlm run or, with --adapter, also a Hugging Face folder (the base the adapter was trained
on; another base is refused). With --adapter the samples are printed, and written only with --out.

    brlm sample runs/demo --quantize int8                 # dynamic int8 linears (CPU)
    brlm sample runs/demo --compile --dtype auto          # compiled decode step, bf16 weights where native and measured faster

Prompting (brlm.infer.prompting; writes <run>/prompting.json): each --prompt is a query put in a
few-shot template built from a JSONL of examples, optionally restricted to options, and sampled
N times (seeds sample.seed, +1, …) with the answers voted on:

    brlm sample runs/demo --prompt "O céu é azul?" --few-shot ex.jsonl --self-consistency 5 --options "sim,não"
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
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 linear layers for CPU inference")
    p.add_argument("--compile", action="store_true", help="sample.compile: capture the decode step with torch.compile")
    p.add_argument("--dtype", choices=("fp32", "bf16", "auto"), help="sample.dtype: decode weights (auto: bf16 where the CPU has native bf16 and the model's layers measure faster in it)")
    g = p.add_argument_group("prompting (writes <run>/prompting.json)")
    g.add_argument("--few-shot", metavar="JSONL", help="examples, one per line: input/output or instruction/input/output")
    g.add_argument("--self-consistency", metavar="N", type=int, help="sample N answers per query and take the majority")
    g.add_argument("--options", help="comma-separated answers the model may give, e.g. 'sim,não' (restrictive template)")
    g.add_argument("--instruction", default="", help="instruction line for the queries (few-shot template)")
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
    if args.compile:
        extra.append("sample.compile=true")
    if args.dtype:
        extra.append(f"sample.dtype={args.dtype}")
    cfg = resolve_config(args, paths.root, extra)
    prompts = list(args.prompt or []) or (read_prompts(args.prompts) if args.prompts else None)
    if args.chat:
        prompts = [chat_prompt(paths.root, q) for q in (prompts or read_prompts(cfg.sample.prompts))]
    if args.few_shot or args.self_consistency or args.options:
        return _prompting(args, cfg, paths, prompts)
    rows = stage_sample(cfg, paths, prompts=prompts, checkpoint=args.checkpoint, out=Path(args.out) if args.out else None,
                        quantize=args.quantize, adapter=args.adapter)["samples"]
    for row in rows:
        if row.get("warning"):
            sys.stdout.write(f"warning: {row['warning']}\n")
        sys.stdout.write(f"--- seed {row['seed']}\n{row['prompt']}{row['completion']}\n")
    return 0


def _prompting(args, cfg, paths, prompts: list[str] | None) -> int:
    from brlm.errors import BrlmError
    from brlm.infer.prompting import parse_options
    from brlm.stages.prompting import stage_prompting

    if not prompts:
        raise BrlmError("--few-shot / --self-consistency / --options need the queries: --prompt TEXT or --prompts FILE")
    n = args.self_consistency or 1
    if n < 1:
        raise BrlmError(f"--self-consistency {n}: expected an integer >= 1")
    options = parse_options(args.options) if args.options else None
    result = stage_prompting(cfg, paths, prompts, few_shot=args.few_shot, n=n, options=options,
                             instruction=args.instruction, checkpoint=args.checkpoint, quantize=args.quantize,
                             out=Path(args.out) if args.out else None)
    for row in result["results"]:
        sys.stdout.write(f"--- {row['query']}\n")
        for s in row["samples"]:
            sys.stdout.write(f"  seed {s['seed']}: {s['completion'].strip()!r} -> {s['answer']}\n")
        sys.stdout.write(f"resposta: {row['answer']} (concordância {row['agreement']:.2f}: "
                         f"{', '.join(f'{k}={v}' for k, v in row['votes'].items()) or 'nenhuma resposta'})\n")
    return 0
