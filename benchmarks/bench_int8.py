"""int8 against fp32 on CPU: decode tokens/s (batch 1, KV cache, greedy, eos ignored so every
round makes the same number of tokens) and bits per byte on the run's fixed validation windows
(the windows `brlm eval intrinsic` uses), for a run's checkpoint loaded as is and with
`--quantize int8` (brlm.infer.quantize: dynamic int8 nn.Linear, per-channel weights).

    .venv/bin/python benchmarks/bench_int8.py runs/demo [--new-tokens 200] [--repeats 5] [--threads N]
    .venv/bin/python benchmarks/bench_int8.py runs/demo --random-llama 8,512 --vocab 8000   # + a bigger random llama (speed only)

The two models decode in interleaved rounds (fp32, int8, fp32, …) and each figure is its best
round, so a machine that gets busy for a while penalises both alike. The evaluation writes
nothing into the run folder (its JSON goes to a temporary folder). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from benchlib import check_load, tag, write_table

from brlm.config import ModelConfig, resolve
from brlm.config.pretrain import RunConfig
from brlm.infer.engine import generate
from brlm.infer.load import load_model
from brlm.infer.quantize import linear_weight_bytes, quantize_model
from brlm.infer.sampling import make_sampler
from brlm.io.run_folder import RunPaths
from brlm.models.registry import build_model


def decode_rates(models: dict[str, torch.nn.Module], prompt: list[int], n: int, repeats: int) -> dict[str, float]:
    greedy = make_sampler(0)
    for m in models.values():
        generate(m, prompt, 8, greedy)  # warm-up
    best = {k: float("inf") for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            ids, _ = generate(m, prompt, n, greedy)  # eos_id None: exactly n tokens
            best[k] = min(best[k], time.perf_counter() - t0)
            assert len(ids) == n
    return {k: n / t for k, t in best.items()}


def eval_bpb(run: Path, quantize: str | None, max_windows: int | None) -> dict:
    from brlm.stages.evaluate import stage_eval

    cfg = resolve(RunConfig, config_file=run / "config.yaml",
                  overrides=[f"eval.max_windows={max_windows}"] if max_windows else [])
    with tempfile.TemporaryDirectory() as tmp:
        return stage_eval(cfg, RunPaths(run), out=Path(tmp) / "eval.json", quantize=quantize)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a brlm run folder with shards (for bits per byte)")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--max-windows", type=int, default=0, help="eval.max_windows (0 = the run's setting)")
    ap.add_argument("--random-llama", metavar="LAYERS,EMBD", help="also time a random llama of this size (speed only)")
    ap.add_argument("--vocab", type=int, default=8000, help="vocabulary of the random llama")
    ap.add_argument("--force", action="store_true", help="measure even on a busy machine (load > 0.5 per core)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md (this machine kind's)")
    args = ap.parse_args()
    load = check_load(args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, engine {torch.backends.quantized.engine}; "
          f"{args.new_tokens} new tokens, batch 1, greedy, best of {args.repeats} interleaved rounds")

    fp32 = load_model(run).model
    int8 = load_model(run, quantize="int8").model
    prompt = load_model(run).tokenizer.encode("O Banco Central decidiu manter a taxa de juros")
    rows = []
    rates = decode_rates({"fp32": fp32, "int8": int8}, prompt, args.new_tokens, args.repeats)
    evals = {q or "fp32": eval_bpb(run, q, args.max_windows) for q in (None, "int8")}
    for name, model in (("fp32", fp32), ("int8", int8)):
        ev = evals[name]
        rows.append((f"{run.name} ({fp32.cfg.arch}, {fp32.num_params() / 1e6:.2f} M)", name, rates[name],
                     linear_weight_bytes(model) / 2**20, ev["bits_per_byte"], ev["loss"], ev["tokens_per_s"]))

    if args.random_llama:
        layers, embd = (int(x) for x in args.random_llama.split(","))
        cfg = ModelConfig(arch="llama", n_layer=layers, n_embd=embd, n_head=max(embd // 64, 1), block_size=256, dropout=0.0)
        torch.manual_seed(0)
        big = build_model(cfg, args.vocab).eval()
        big8 = quantize_model(copy.deepcopy(big))
        r = decode_rates({"fp32": big, "int8": big8}, list(range(1, 9)), args.new_tokens, args.repeats)
        label = f"random llama {layers}x{embd}, vocab {args.vocab} ({big.num_params() / 1e6:.1f} M)"
        rows.append((label, "fp32", r["fp32"], linear_weight_bytes(big) / 2**20, None, None, None))
        rows.append((label, "int8", r["int8"], linear_weight_bytes(big8) / 2**20, None, None, None))

    def fmt(v, spec):
        return format(v, spec) if v is not None else "—"

    lines = ["| model | weights | decode tokens/s | linear weights (MiB) | bits/byte | loss | eval tokens/s |",
             "|---|---|---|---|---|---|---|"]
    for label, name, rate, mib, bpb, loss, ev_rate in rows:
        lines.append(f"| {label} | {name} | {rate:,.0f} | {mib:.2f} | {fmt(bpb, '.4f')} | {fmt(loss, '.4f')} | {fmt(ev_rate, ',.0f')} |")
    f, q = evals["fp32"], evals["int8"]
    lines.append(f"\nint8 vs fp32 on {run.name}: decode x{rates['int8'] / rates['fp32']:.2f}, bits/byte "
                 f"{q['bits_per_byte'] - f['bits_per_byte']:+.4f} ({100 * (q['bits_per_byte'] / f['bits_per_byte'] - 1):+.2f} %) "
                 f"on {f['windows']} windows (same windows: {f['windows_sha256'] == q['windows_sha256']})")
    if args.random_llama:
        lines.append(f"int8 vs fp32 on the {label}: decode x{r['int8'] / r['fp32']:.2f}")
    lines.append(f"\n{torch.get_num_threads()} threads, quantized engine {torch.backends.quantized.engine}, "
                 f"{args.new_tokens} new tokens, batch 1, greedy, best of {args.repeats} interleaved rounds; load average "
                 f"{load:.2f} at start. {tag()}")
    table = "\n".join(lines)
    print("\n" + table)
    if args.write:
        write_table("int8 against fp32 on CPU (bench_int8.py, issue 14)", "decode and bits per byte", table)


if __name__ == "__main__":
    main()
