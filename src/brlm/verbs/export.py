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
    args = p.parse_args(argv)
    paths = existing_run(args.run)
    from brlm.stages.export import export_run

    manifest = export_run(paths.root, args.out, checkpoint=args.checkpoint)
    out = args.out or paths.root / "hf"
    print(f"exported {manifest['arch']} step {manifest['step']} as {manifest['hf_architecture']}: {out}")
    return 0
