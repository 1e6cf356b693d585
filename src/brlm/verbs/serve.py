"""`brlm serve MODEL`: an OpenAI-compatible HTTP server with continuous batching, and a web chat
page at `/`. MODEL is a brlm run folder or a Hugging Face folder; `--adapter` merges a PEFT adapter.

    brlm serve runs/sft                                   # http://127.0.0.1:8000/ (page), /v1/... (API)
    brlm serve runs/sft --api-key segredo --max-batch 8   # or BRLM_API_KEY=segredo brlm serve runs/sft
    brlm serve pasta-hf --adapter runs/sft/adapter --quantize int8 --port 8080
    brlm serve runs/sft --compile --dtype auto            # compiled decode step, bf16 weights where native and measured faster

Needs the `serve` extra (pip install 'brlm[serve]'). Binds 127.0.0.1 unless --host says otherwise;
with a key, every route but /health and the page needs `Authorization: Bearer KEY`. SIGTERM or
Ctrl-C: stop taking connections, finish the requests in flight, exit.
"""

from __future__ import annotations

import os
from pathlib import Path

from brlm.errors import BrlmError
from brlm.verbs.common import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("serve", __doc__)
    p.add_argument("model", help="brlm run folder or Hugging Face model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: env BRLM_API_KEY, else none)")
    p.add_argument("--adapter", metavar="DIR", help="PEFT adapter folder to merge into the model")
    p.add_argument("--checkpoint", default="best", help="run checkpoint: 'best', 'last' or a step (default: best)")
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 linear layers (CPU)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--name", help="model id in /v1/models (default: the folder's name)")
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (default: 8)")
    p.add_argument("--max-queue", type=int, default=64, help="sequences waiting for a row before 429 (default: 64)")
    p.add_argument("--max-tokens", type=int, default=1024, help="server limit on max_tokens (default: 1024)")
    p.add_argument("--compile", action="store_true", help="capture the decode step with torch.compile (compiles at start)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="decode weights (default: fp32; auto: bf16 where the CPU has native bf16 and the model measures faster in it)")
    p.add_argument("--graceful-timeout", type=float, default=60.0,
                   help="seconds SIGTERM waits for requests in flight (default: 60)")
    args = p.parse_args(argv)
    for flag in ("port", "max_batch", "max_queue", "max_tokens"):
        if getattr(args, flag) < (0 if flag == "port" else 1):
            raise BrlmError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive number")

    try:
        import uvicorn

        from brlm.serve.app import create_app
    except ImportError as e:
        raise BrlmError(f"brlm serve needs FastAPI and uvicorn ({e.name} is missing): pip install 'brlm[serve]'") from None
    from brlm.infer.load import load_model
    from brlm.io.logging import info
    from brlm.io.machine import resolve_device

    device = resolve_device(args.device)
    lm = load_model(args.model, args.checkpoint, device, adapter=args.adapter, quantize=args.quantize)
    key = args.api_key or os.environ.get("BRLM_API_KEY") or None
    name = args.name or Path(args.model).resolve().name
    from brlm.infer.engine import Engine

    engine = Engine(lm.model, max_batch=args.max_batch, device=device, compile=args.compile, dtype=args.dtype)
    if args.compile:
        info("serve: compiling the decode step (once, before the first request)")
        engine.warm_up()
    app = create_app(lm, name=name, max_batch=args.max_batch, max_queue=args.max_queue, api_key=key,
                     max_tokens_limit=args.max_tokens, device=device, engine=engine)
    d = engine.describe()
    info(f"serve: {name} em http://{args.host}:{args.port}/ (API em /v1; max_batch={args.max_batch}, "
         f"max_queue={args.max_queue}, pesos {d['dtype']}{', passo compilado' if d['compiled'] else ''}"
         f"{', com chave' if key else ''})")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=args.graceful_timeout)
    uvicorn.Server(config).run()  # installs the SIGTERM / SIGINT handlers: graceful shutdown
    return 0
