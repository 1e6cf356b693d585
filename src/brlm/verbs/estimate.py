"""`brlm estimate memory|compute|fits`: will it fit and what will it cost, before a run.

    brlm estimate memory llama-3.1-8b --method lora --lora-rank 64 --dtype bf16 --seq-len 2048
    brlm estimate memory 7b --seeds-terms                   # the seeds' 28 + 28 + 56 = 112 GB
    brlm estimate compute --params 124m --tokens 2.5b --gpu rtx4090 --mfu 0.4
    brlm estimate compute --budget-usd 50 --gpu rtx4090     # Chinchilla-optimal N, D + Kaplan's loss
    brlm estimate fits llama-3.1-8b --gpu rtx4090 --seq-len 2048 --micro-batch 4
    brlm estimate fits demo --memory-gb 8                   # a brlm preset on an 8 GB CPU box
    brlm estimate peak --refresh                            # re-measure this CPU's matmul peak (MFU)

MODEL is a known architecture (llama-3.1-8b, llama-2-7b, llama-3.1-70b, mistral-7b, gpt2, …), a brlm
preset (demo, demo:tiny) or a size (7b, 125m). Formulas and assumptions: README, section "Custo".
Add --json for machine-readable output. `fits` exits 0 when the requested settings fit, 1 if not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from brlm.compute import memory as mem
from brlm.compute.cost import estimate_compute
from brlm.compute.flops import flops_per_token
from brlm.compute.peak import GPUS, gpu_spec
from brlm.compute.scaling import for_budget, kaplan_loss
from brlm.errors import BrlmError
from brlm.verbs.common import parser


def _memory_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("model", help="known architecture (llama-3.1-8b, …), brlm preset (demo, demo:tiny) or size (7b)")
    p.add_argument("--method", default="full", choices=mem.METHODS, help="full fine-tuning, LoRA, QLoRA or inference (KV cache)")
    p.add_argument("--dtype", default=None, choices=tuple(mem.DTYPE_BYTES), help="weights/activations dtype (default: fp32 for full, bf16 otherwise)")
    p.add_argument("--optimizer", default="adamw", choices=tuple(mem.OPTIMIZER_BYTES), help="optimizer states: adamw 8 B, adam8bit 2 B, sgd 0 B per trainable param")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--lora-targets", default="qv", help="LoRA targets: qv, attn, all or a list like q,k,v,o,gate,up,down")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout (> 0 saves each target's dropped input and mask)")
    p.add_argument("--lora-params", type=float, default=None, help="trainable LoRA parameters, instead of counting them from the architecture")
    p.add_argument("--no-double-quant", action="store_true", help="QLoRA without double quantisation of the NF4 constants")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's context, 2048 for a bare size)")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward/backward pass (default: a preset's train.batch_size, else 1)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (recompute activations in backward)")
    p.add_argument("--attention", default="auto", choices=("auto", "flash", "math", "plain"),
                   help="fused attention (no T×T matrix saved), math attention, brlm's plain form (q·kᵀ, softmax, ·v), "
                        "or auto (on CPU: the form training measured on this machine, else math with dropout)")
    p.add_argument("--device", default=None, choices=("cuda", "cpu"),
                   help="cuda adds the CUDA context (0.5 GB); cpu adds glibc's allocator allowance (default: cuda; for fits, cuda with --gpu, else cpu)")
    p.add_argument("--overhead-gb", type=float, default=0.0, help="a flat extra (the seeds add 8 GB to 70B QLoRA)")
    p.add_argument("--seeds-terms", action="store_true", help="count only what the seeds counted: weights, adapters, gradients, optimizer")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _estimate(args: argparse.Namespace, model: mem.ModelSpec, **changes: Any) -> mem.MemoryEstimate:
    method = changes.get("method", args.method)
    dtype = args.dtype or ("fp32" if method == "full" else "bf16")
    kw = dict(
        method=method, dtype=dtype, optimizer=args.optimizer, lora_rank=args.lora_rank, lora_targets=args.lora_targets,
        lora_dropout=args.lora_dropout, lora_params_override=int(args.lora_params) if args.lora_params is not None else None,
        double_quant=not args.no_double_quant, seq_len=args.seq_len, micro_batch=args.micro_batch,
        checkpointing=args.checkpointing, attention_impl=args.attention, device=args.device,
        terms=mem.SEEDS_TERMS if args.seeds_terms else mem.ALL_TERMS, overhead_gb=args.overhead_gb,
    )
    kw.update({k: v for k, v in changes.items() if k != "method"})
    if args.lora_params is not None and args.lora_params < 0:
        raise BrlmError(f"--lora-params={args.lora_params:g}: expected a number >= 0")
    return mem.estimate_memory(model, **kw)


def _gb(x: float) -> str:
    return f"{x / mem.GB:,.3f} GB"


def _print_memory(est: mem.MemoryEstimate) -> None:
    s = est.settings
    print(f"model {est.model}: {est.n_params:,} parameters, {est.trainable_params:,} trainable ({est.method})")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    shown = {k: v for k, v in est.terms.items() if v} or est.terms  # zero terms only in --json
    width = max(len(k) for k in shown)
    for k, v in shown.items():
        print(f"  {k:<{width}}  {_gb(v):>14}")
    print(f"  {'total':<{width}}  {_gb(est.total_bytes):>14}")
    for note in est.assumptions:
        print(f"  * {note}")


def cmd_memory(argv: list[str]) -> int:
    p = parser("estimate memory", "Memory to train (or run) a model: weights, gradients, optimizer, activations, KV cache.")
    _memory_args(p)
    args = p.parse_args(argv)
    args.device = args.device or "cuda"
    model = mem.resolve_model(args.model)
    args.micro_batch = model.micro_batch if args.micro_batch is None else args.micro_batch
    est = _estimate(args, model)
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
    else:
        _print_memory(est)
    return 0


def _number(text: str, flag: str) -> float:
    try:
        value = float(mem.parse_size(text))
    except BrlmError:
        raise BrlmError(f"{flag} {text!r}: expected a positive number such as 2.5b, 300m or 1e21") from None
    return value


def cmd_compute(argv: list[str]) -> int:
    p = parser("estimate compute", "FLOPs, GPU-hours and cost for N parameters and D tokens; or the Chinchilla-optimal N, D for a budget.")
    p.add_argument("--model", help="a known architecture or brlm preset (exact FLOPs per token from its config)")
    p.add_argument("--params", help="N parameters (7b, 124m) when no --model (6·N FLOPs per token)")
    p.add_argument("--tokens", help="D training tokens (2.5b, 1e10); default with --model/--params: 20·N (Chinchilla)")
    p.add_argument("--seq-len", type=int, default=None, help="with --model: training window for the attention FLOPs (default: its context)")
    p.add_argument("--gpu", default="rtx4090", help=f"device: {', '.join(GPUS)} or cpu (default rtx4090)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (default 0.35)")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="peak column (default bf16)")
    p.add_argument("--price", type=float, default=0.0, help="US$/h (default: brlm's price table)")
    p.add_argument("--price-file", default="", help="a YAML price table that extends the built-in one")
    p.add_argument("--brl-per-usd", type=float, default=0.0, help="also show costs in reais at this rate")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-usd", type=float, help="a budget in US$: Chinchilla-optimal N and D for it on --gpu at --mfu")
    g.add_argument("--budget-flops", help="a budget in FLOPs (1e21): Chinchilla-optimal N and D")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.price < 0 or args.brl_per_usd < 0:
        raise BrlmError("--price and --brl-per-usd must be >= 0")
    out: dict[str, Any] = {}
    if args.budget_usd is not None or args.budget_flops is not None:
        if args.budget_flops is not None:
            budget = _number(args.budget_flops, "--budget-flops")
        else:
            if args.budget_usd <= 0:
                raise BrlmError(f"--budget-usd={args.budget_usd}: expected a number > 0")
            unit = estimate_compute(1.0, 1.0, args.gpu, args.mfu, args.dtype, args.price, args.price_file)
            if unit["price_usd_per_hour"] is None:
                raise BrlmError(f"--gpu {args.gpu}: no price in the table; give --price")
            budget = args.budget_usd / unit["price_usd_per_hour"] * 3600 * unit["peak_flops_per_s"] * args.mfu
        out["budget"] = for_budget(budget)
        if args.budget_usd is not None:
            out["budget"]["budget_usd"] = args.budget_usd
        fit = out["budget"]["fitted"]
        out["compute"] = estimate_compute(fit["n_params"], fit["tokens"], args.gpu, args.mfu, args.dtype, args.price, args.price_file, args.brl_per_usd)
    else:
        fpt = None
        if args.model:
            spec = mem.resolve_model(args.model)
            n = float(spec.n_params)
            if spec.cfg is not None:
                fpt = flops_per_token(spec.cfg, spec.vocab_size, seq_len=args.seq_len)
        elif args.params:
            n = _number(args.params, "--params")
        else:
            raise BrlmError("give --model or --params (with --tokens), or a budget (--budget-usd / --budget-flops)")
        d = _number(args.tokens, "--tokens") if args.tokens else 20 * n
        out["compute"] = estimate_compute(n, d, args.gpu, args.mfu, args.dtype, args.price, args.price_file, args.brl_per_usd, fpt)
        out["compute"]["flops_per_token_6n"] = 6 * n
        out["kaplan_loss"] = kaplan_loss(n, d)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    c = out["compute"]
    if "budget" in out:
        b = out["budget"]
        print(f"budget: {b['budget_flops']:.3g} FLOPs" + (f" (US$ {b['budget_usd']:g} on {c['device']} at MFU {c['assumed_mfu']})" if "budget_usd" in b else ""))
        for key, title in (("rule_20", "Chinchilla, 20 tokens/parameter"), ("fitted", "Chinchilla approach 3, L = E + A/N^a + B/D^b")):
            r = b[key]
            print(f"  {title:<48} N = {r['n_params']:.3g}  D = {r['tokens']:.3g}  "
                  f"L_chinchilla = {r['loss_fit']:.3f}  L_kaplan = {r['kaplan_loss']:.3f}")
    print(f"N = {c['n_params']:.3g} parameters, D = {c['tokens']:.3g} tokens, {c['flops_per_token']:.3g} FLOPs/token "
          f"-> C = {c['total_flops']:.3g} FLOPs")
    print(f"{c['device']}: peak {c['peak_flops_per_s']:.3g} FLOP/s ({c['peak_source']}), MFU {c['assumed_mfu']} "
          f"-> {c['hours']:,.2f} h")
    cost = c["estimated_cost_usd"]
    if cost is None:
        line = f"cost: n/a ({c['price_source']})"
    else:
        price = c["price_usd_per_hour"]
        line = f"cost: US$ {cost:,.2f} at US$ {price}/h"
    if "estimated_cost_brl" in c:
        line += f" = R$ {c['estimated_cost_brl']:,.2f}"
    print(line)
    if "kaplan_loss" in out:
        print(f"Kaplan L(N, D) = {out['kaplan_loss']:.3f} nats/token (WebText2, GPT-2 tokens: for ranking, not a PT-BR prediction)")
    return 0


def _capacity(args: argparse.Namespace) -> tuple[float, str]:
    if args.memory_gb is not None:
        if args.memory_gb <= 0:
            raise BrlmError(f"--memory-gb={args.memory_gb}: expected a number > 0")
        return args.memory_gb * mem.GB, f"{args.memory_gb:g} GB (--memory-gb)"
    if args.gpu:
        spec = gpu_spec(args.gpu)
        return spec["vram_gb"] * 2**30, f"{spec['title']}: {spec['vram_gb']} GiB = {spec['vram_gb'] * 2**30 / mem.GB:.1f} GB"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return kib * 1024, f"this machine's RAM: {kib * 1024 / mem.GB:.1f} GB"
    except OSError:
        pass
    raise BrlmError("give --gpu NAME or --memory-gb N")


def cmd_fits(argv: list[str]) -> int:
    p = parser("estimate fits", "Will this model train on this device with these settings, and which settings would make it fit?\n\n"
                                "Exit code (for scripts): 0 = fits as requested, 1 = does not fit (the answer, not an error), "
                                "2 = bad input.")
    _memory_args(p)
    p.add_argument("--gpu", help=f"target GPU ({', '.join(GPUS)}); its VRAM is the limit")
    p.add_argument("--memory-gb", type=float, help="memory limit in GB instead of a GPU (default without --gpu: this machine's RAM)")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if args.gpu else "cpu"
    capacity, where = _capacity(args)
    model = mem.resolve_model(args.model)
    args.micro_batch = model.micro_batch if args.micro_batch is None else args.micro_batch
    requested = _estimate(args, model)
    rows = [("as requested", requested)]
    mb = args.micro_batch
    while mb > 1:
        mb = max(1, mb // 2)
        rows.append((f"micro-batch {mb}", _estimate(args, model, micro_batch=mb)))
    if not args.checkpointing:
        rows.append(("gradient checkpointing", _estimate(args, model, checkpointing=True)))
        if args.micro_batch > 1:
            rows.append(("checkpointing + micro-batch 1", _estimate(args, model, checkpointing=True, micro_batch=1)))
    can_lora = model.cfg is not None or args.lora_params is not None
    if args.method == "full":
        rows.append(("optimizer adam8bit", _estimate(args, model, optimizer="adam8bit")))
    if can_lora and args.method == "full":
        rows.append((f"LoRA r={args.lora_rank} ({args.lora_targets}), bf16", _estimate(args, model, method="lora", dtype="bf16")))
        rows.append(("LoRA + checkpointing", _estimate(args, model, method="lora", dtype="bf16", checkpointing=True)))
    if can_lora and args.method in ("full", "lora"):
        rows.append((f"QLoRA NF4 r={args.lora_rank}", _estimate(args, model, method="qlora", dtype="bf16")))
        rows.append(("QLoRA + checkpointing + micro-batch 1", _estimate(args, model, method="qlora", dtype="bf16", checkpointing=True, micro_batch=1)))
    fits = requested.total_bytes <= capacity
    out = {
        "model": model.name,
        "capacity_bytes": capacity,
        "capacity": where,
        "fits": fits,
        "options": [{"change": name, "total_gb": e.total_gb, "fits": e.total_bytes <= capacity, "settings": e.settings} for name, e in rows],
    }
    if args.json:
        print(json.dumps({**out, "requested": requested.to_dict()}, indent=2))
        return 0 if fits else 1
    print(f"{model.name} on {where}: {'FITS' if fits else 'DOES NOT FIT'} as requested "
          f"({requested.total_gb:,.2f} GB of {capacity / mem.GB:,.1f} GB)")
    width = max(len(name) for name, _ in rows)
    for name, e in rows:
        mark = "yes" if e.total_bytes <= capacity else "no"
        print(f"  {name:<{width}}  {e.total_gb:>10,.2f} GB  fits: {mark}")
    if not fits:
        good = [name for name, e in rows if e.total_bytes <= capacity]
        print("  -> " + (f"first change that fits: {good[0]}" if good else "nothing here fits: more devices, offloading or a smaller model"))
    return 0 if fits else 1


def cmd_peak(argv: list[str]) -> int:
    p = parser("estimate peak", "Device peaks used for MFU: the GPU table and this CPU's measured matmul peak (cached).")
    p.add_argument("--threads", type=int, default=0, help="CPU threads to measure with (default: PyTorch's)")
    p.add_argument("--refresh", action="store_true", help="measure again and overwrite the cached CPU figure (e.g. on an idle machine)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.threads < 0:
        raise BrlmError(f"--threads={args.threads}: expected an integer >= 0")
    from brlm.compute.peak import PEAK_CACHE, cpu_peak_flops
    from brlm.io.machine import MachineCache

    cpu = {d: cpu_peak_flops(d, args.threads, refresh=args.refresh) for d in ("fp32", "bf16")}
    if args.json:
        print(json.dumps({"cpu": cpu, "gpus": GPUS, "cache": str(MachineCache(PEAK_CACHE).path)}, indent=2))
        return 0
    for d, m in cpu.items():
        print(f"cpu {d:<5} {m['peak_flops_per_s'] / 1e9:10.1f} GFLOP/s  ({m['cpu']}, {m['threads']} threads, {'cached' if m['cached'] else 'measured now'})")
    for name, g in GPUS.items():
        print(f"{name:<9} fp32 {g['fp32'] / 1e12:6.1f} TFLOP/s  bf16 {g['bf16'] / 1e12:6.1f} TFLOP/s  {g['vram_gb']} GiB  {g['title']}")
    print(f"cache: {MachineCache(PEAK_CACHE).path}")
    return 0


SUBCOMMANDS = {"memory": cmd_memory, "compute": cmd_compute, "fits": cmd_fits, "peak": cmd_peak}


def main(argv: list[str] | None = None) -> int:
    p = parser("estimate", __doc__)
    p.add_argument("what", choices=tuple(SUBCOMMANDS), help="memory | compute | fits | peak")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the sub-command (see brlm estimate <what> --help)")
    args = p.parse_args(argv)
    return SUBCOMMANDS[args.what](args.rest)
