"""Decoding speed: brlm's engine (brlm.infer.engine.Engine, eager and with its compiled decode step)
against Hugging Face `generate()` eager (dynamic cache) and with a static cache + torch.compile, on
the same weights (brlm's model exported by brlm.models.export_hf), greedy, batch 1 and batch 8
(aggregate new tokens/s), gpt and llama: vocab 8192, 4 layers, 4 heads, n_embd 256, context 256.

    .venv/bin/python benchmarks/bench_decode.py                    # refuses on a busy machine
    .venv/bin/python benchmarks/bench_decode.py --write            # and put the table in RESULTS.md
    .venv/bin/python benchmarks/bench_decode.py --new-tokens 8 --repeats 1 --archs gpt --force   # smoke test

Every decoder's greedy tokens are checked against brlm's unbatched eager decoding (batch-8 rows
against each prompt decoded alone); a mismatch is printed in the table. Decoders run in
interleaved rounds and each figure is its best round. Decode is also reported as a share of the
memory-bandwidth limit: weight bytes x decode steps/s / a copy bandwidth measured in this run
(STREAM 'Copy' convention). Needs `pip install 'brlm[hf]'` (transformers) for the HF rows.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from benchlib import check_load, copy_bandwidth, machine_kind, tag, write_table

from brlm.config import ModelConfig
from brlm.infer.engine import Engine, resolve_decode_dtype
from brlm.infer.sampling import make_sampler
from brlm.models.registry import build_model

VOCAB, LAYERS, HEADS, EMBD, CTX = 8192, 4, 4, 256, 256


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=LAYERS, n_head=HEADS, n_embd=EMBD, block_size=CTX, dropout=0.0,
                      bias=arch == "gpt", tie_embeddings=True)
    return build_model(cfg, VOCAB).eval()


def weight_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes one decode step reads: every unique weight once (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8


def hf_decoders(model: torch.nn.Module, prompts: torch.Tensor, n: int, dtype: torch.dtype,
                compile_: bool, B: int) -> dict[str, tuple[int, Callable[[], list[list[int]]]]]:
    try:
        import transformers
    except ImportError:
        print("transformers not installed (pip install 'brlm[hf]'): skipping the Hugging Face rows")
        return {}
    from brlm.models.export_hf import to_hf

    hf = to_hf(model, {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}).to(dtype).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0

    def run(batch: int, static: bool) -> Callable[[], list[list[int]]]:
        x = prompts[:batch]
        kw = {}
        if static:
            cc = transformers.CompileConfig(dynamic=False, mode="default")
            cc._compile_all_devices = True  # transformers compiles on CPU only when asked
            kw = {"cache_implementation": "static", "compile_config": cc}

        def go() -> list[list[int]]:
            with torch.inference_mode():
                out = hf.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)
            return out[:, x.size(1):].tolist()
        return go

    out = {"HF generate, eager": (1, run(1, False)), "HF generate, eager | batch": (B, run(B, False))}
    if compile_:
        out["HF static cache + compile"] = (1, run(1, True))
        out["HF static cache + compile | batch"] = (B, run(B, True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="gpt,llama")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8, help="rows of the batched figures")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both libraries (0 = torch's default)")
    ap.add_argument("--dtype", default="fp32", help="weights of both sides: fp32, bf16, or auto (bf16 where the CPU has native bf16)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face rows")
    ap.add_argument("--force", action="store_true", help="measure even on a busy machine (load > 0.5 per core)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md (this machine kind's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = check_load(args.force)
    dtype = resolve_decode_dtype(args.dtype)
    dname = "bf16" if dtype == torch.bfloat16 else "fp32"
    bw = copy_bandwidth()
    n, B = args.new_tokens, args.batch
    print(f"{torch.get_num_threads()} threads | {n} new tokens after {args.prompt_len}-token prompts | greedy | weights {dname} "
          f"| copy bandwidth {bw / 1e9:.1f} GB/s")
    greedy = make_sampler(0)
    rows = []
    for arch in args.archs.split(","):
        model = build(arch)
        g = torch.Generator().manual_seed(1)
        prompts = torch.randint(0, VOCAB, (B, args.prompt_len), generator=g)
        plist = prompts.tolist()
        engines = {"brlm engine, eager": (1, Engine(model, 1, dtype=dname)), "brlm engine, eager | batch": (B, Engine(model, B, dtype=dname))}
        if not args.no_compile:
            engines["brlm engine, compiled step"] = (1, Engine(model, 1, dtype=dname, compile=True))
            engines["brlm engine, compiled step | batch"] = (B, Engine(model, B, dtype=dname, compile=True))
        fns: dict[str, tuple[int, Callable[[], list[list[int]]]]] = {
            name: (b, (lambda e=e, b=b, p=plist: [ids for ids, _ in e.generate_batch(p[:b], n, greedy)]))
            for name, (b, e) in engines.items()
        }
        if not args.no_hf:
            fns.update(hf_decoders(model, prompts, n, dtype, not args.no_compile, B))
        # Reference: each prompt decoded alone by the eager engine.
        ref = [engines["brlm engine, eager"][1].generate_batch([p], n, greedy)[0][0] for p in plist]
        match = {}
        t0 = time.perf_counter()
        for name, (b, fn) in fns.items():  # warm-up (compilation) and the token check
            match[name] = fn() == ref[:b]
        print(f"{arch}: warm-up and token check {time.perf_counter() - t0:.0f} s", flush=True)
        best = {name: float("inf") for name in fns}
        for _ in range(args.repeats):
            for name, (_b, fn) in fns.items():
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
        wb = weight_bytes(model, dtype)
        rate = {name: fns[name][0] * n / t for name, t in best.items()}
        for name, r in rate.items():
            b = fns[name][0]
            share = wb * (r / b) / bw  # decode steps/s x weight bytes / copy bandwidth
            ref_e = rate.get("HF generate, eager" + (" | batch" if b > 1 else ""))
            ref_s = rate.get("HF static cache + compile" + (" | batch" if b > 1 else ""))
            rows.append((arch, name.split(" | ")[0], b, r, r / ref_e if ref_e else None, r / ref_s if ref_s else None,
                         share, match[name]))
        for b in (1, B):
            suffix = " | batch" if b > 1 else ""
            for ours in ("brlm engine, eager", "brlm engine, compiled step"):
                if ours + suffix not in rate:
                    continue
                for theirs in ("HF generate, eager", "HF static cache + compile"):
                    if theirs + suffix in rate:
                        print(f"{arch} batch {b}: {ours} / {theirs} = {rate[ours + suffix] / rate[theirs + suffix]:.2f}x {tag()}")
        for ours in ("brlm engine, eager", "brlm engine, compiled step"):
            if ours in rate and ours + " | batch" in rate:
                print(f"{arch}: {ours} batch {B} aggregate / batch 1 = {rate[ours + ' | batch'] / rate[ours]:.2f}x (goal >= 4) {tag()}")

    def x(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}x"

    table = ["| arch | decoder | batch | new tokens/s | vs HF eager | vs HF static + compile | share of bandwidth limit | tokens = unbatched |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, name, b, r, ve, vs, share, ok in rows:
        table.append(f"| {arch} | {name} | {b} | {r:,.1f} | {x(ve)} | {x(vs)} | {share:.0%} | {'yes' if ok else '**no**'} |")
    body = "\n".join(table)
    print()
    print(body)
    if args.write:
        notes = (f"\n\n`benchmarks/bench_decode.py --new-tokens {n} --prompt-len {args.prompt_len} --batch {B} "
                 f"--repeats {args.repeats} --dtype {args.dtype}`; {torch.get_num_threads()} threads, torch {torch.__version__}, "
                 f"load average {load:.2f} at the start, copy bandwidth {bw / 1e9:.1f} GB/s (read + write). "
                 f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
        write_table("Decoding (bench_decode.py)", f"weights {dname}", body + notes)
    print(f"\nmachine: {machine_kind()}")


if __name__ == "__main__":
    main()
