"""`brlm chat MODEL`: talk to a model in the terminal, in Portuguese, with the answer streamed as it
is generated. MODEL is a brlm run folder or a Hugging Face folder; `--adapter` merges a PEFT
(LoRA) adapter into it first.

    brlm chat runs/sft                                  # chat template of the model / of the export
    brlm chat runs/demo --mode continue                 # a base model: each line is continued
    brlm chat exported/base-hf --adapter runs/sft/adapter --quantize int8
    printf 'Olá!\\n/set temperature 0\\nQual é a capital?\\n' | brlm chat runs/sft   # through a pipe

Commands inside: /reset, /set KEY VALUE (temperature, top_p, top_k, max_tokens,
repetition_penalty, seed), /system TEXT, /save FILE, /help, /sair. Ctrl-C stops the current
answer; Ctrl-D (end of input) leaves. --mode auto (default) chats with chat-tuned models and
continues text for base models (brlm.infer.chat.detect_mode).
"""

from __future__ import annotations

from brlm.verbs.common import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("chat", __doc__)
    p.add_argument("model", help="brlm run folder or Hugging Face model folder")
    p.add_argument("--adapter", metavar="DIR", help="PEFT adapter folder to merge into the model")
    p.add_argument("--checkpoint", default="best", help="run checkpoint: 'best', 'last' or a step (default: best)")
    p.add_argument("--mode", choices=("auto", "chat", "continue"), default="auto",
                   help="chat template or plain continuation (default: auto)")
    p.add_argument("--system", help="system message (also /system inside)")
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 linear layers (CPU)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--compile", action="store_true", help="capture the decode step with torch.compile")
    p.add_argument("--dtype", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="decode weights (default: fp32; auto: bf16 where the CPU has native bf16 and the model measures faster in it)")
    for flag, kind in (("temperature", float), ("top-p", float), ("top-k", int), ("max-tokens", int),
                       ("repetition-penalty", float), ("seed", int)):
        p.add_argument(f"--{flag}", type=kind, help=f"initial {flag.replace('-', '_')} (also /set inside)")
    args = p.parse_args(argv)

    from brlm.infer.chat import ChatSession
    from brlm.infer.load import load_model
    from brlm.infer.repl import run_chat
    from brlm.io.machine import resolve_device

    device = resolve_device(args.device)
    lm = load_model(args.model, args.checkpoint, device, adapter=args.adapter, quantize=args.quantize)
    session = ChatSession(lm, mode=args.mode, system=args.system, device=device, compile=args.compile, dtype=args.dtype)
    for key in ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed"):
        if getattr(args, key) is not None:
            session.settings.set(key, str(getattr(args, key)))
    return run_chat(session)
