"""`brlm export hf RUN`: a run's checkpoint and tokenizer as a Hugging Face folder that
`AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)` load offline:
model.safetensors, config.json, generation_config.json, tokenizer.json (fast tokenizer, same ids as
brlm), tokenizer_config.json (with a PT-BR chat template) and export.json (source run, checkpoint
step, SHA-256 of every file, brlm version).

gpt -> GPT2LMHeadModel, llama -> LlamaForCausalLM (Qwen3ForCausalLM with qk-norm), moe ->
MixtralForCausalLM (Qwen3MoeForCausalLM with qk-norm); rnn runs cannot be exported.
The folder is written beside DIR and renamed into place at the end: nothing half-written.

    brlm export hf runs/demo                              # -> runs/demo/hf
    brlm export hf runs/demo --out exported/demo-hf --checkpoint last
    brlm eval intrinsic runs/demo --hf exported/demo-hf   # same loss as the checkpoint

Needs `pip install 'brlm[hf]'` (transformers).

`brlm export gguf RUN`: a llama run as one GGUF file for llama.cpp and Ollama (f32, f16 or q8_0;
llama.cpp's tensor names, Q/K rows permuted for its RoPE, the SentencePiece vocabulary with scores
and token types, the PT-BR chat template). gpt, moe and rnn runs are refused.

    brlm export gguf runs/demo-llama                      # -> runs/demo-llama/model-f16.gguf
    brlm export gguf runs/demo-llama --dtype q8_0 --out demo-q8_0.gguf
    llama-cli -m demo-q8_0.gguf -p "O Brasil é"           # llama.cpp

Needs `pip install 'brlm[gguf]'` (gguf).
"""

from __future__ import annotations

from brlm.verbs.common import existing_run, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("export", __doc__)
    sub = p.add_subparsers(dest="format", required=True, parser_class=type(p))
    hf = sub.add_parser("hf", help="Hugging Face transformers folder (safetensors + fast tokenizer)")
    hf.add_argument("run", help="run folder")
    hf.add_argument("--out", metavar="DIR", help="output folder (default: <run>/hf); an earlier export there is replaced")
    hf.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    gg = sub.add_parser("gguf", help="GGUF file for llama.cpp / Ollama (llama runs)")
    gg.add_argument("run", help="run folder")
    gg.add_argument("--out", metavar="FILE", help="output file (default: <run>/model-<dtype>.gguf)")
    gg.add_argument("--checkpoint", default="best", help="'best', 'last' or a step number (default: best)")
    gg.add_argument("--dtype", choices=("f32", "f16", "q8_0"), default="f16", help="weight type (default: f16)")
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    if args.format == "gguf":
        from brlm.infer.export import export_gguf_run

        s = export_gguf_run(paths.root, args.out, checkpoint=args.checkpoint, dtype=args.dtype)
        print(f"exported step {s['step']} as GGUF {s['architecture']} {s['dtype']} ({s['bytes'] / 2**20:.2f} MiB): {s['out']}")
        return 0
    from brlm.infer.export import export_run

    manifest = export_run(paths.root, args.out, checkpoint=args.checkpoint)
    out = args.out or paths.root / "hf"
    print(f"exported {manifest['arch']} step {manifest['step']} as {manifest['hf_architecture']}: {out}")
    return 0
