"""Training throughput (tokens/s) and MFU of brlm's trainer against Hugging Face transformers,
measured in the same run on the same machine.

Model: 5.3 M parameters — vocab 8192, 4 layers, 4 heads, n_embd 256, block 256, batch 16, fp32.
* brlm: `brlm.train.loop.train` (the real trainer: fused AdamW, clipping, SDPA attention, the
  chunked head + cross-entropy of models/loss.py), eager and with `train.compile=true`; tokens/s
  is the trainer's own figure (optimizer steps only).
* ablation: the same brlm run with the loss computed the usual way, F.cross_entropy over the full
  (B*T, V) logits, to show what the fused loss is worth.
* reference: `GPT2LMHeadModel` / `LlamaForCausalLM` built from a config (no download), trained by
  a plain PyTorch loop (forward with labels, backward, clip, AdamW).
MFU = FLOPs/token (6 N + 12 L C T, the same formula for both) x tokens/s / measured fp32 matmul peak.

    .venv/bin/python benchmarks/bench_train_throughput.py            # ~5-10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_train_throughput.py --bf16 --write   # + bf16 rows, table into RESULTS.md
    .venv/bin/python benchmarks/bench_train_throughput.py --steps 4 --no-compile   # quick look
The CPU model and flags are printed beside every ratio; the script refuses to measure when the
load average is above 0.5 per core (--force measures anyway, and says so). `--write` puts the
table into benchmarks/RESULTS.md under this machine kind's heading, leaving other CPUs' tables.
Needs `pip install 'brlm[hf]'` (transformers).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import check_load, machine_kind, tag, write_table

import brlm.models.gpt
import brlm.models.llama
from brlm.config import ModelConfig, RunConfig, TrainConfig
from brlm.io.logging import JSONLLogger, read_metrics
from brlm.io.machine import keep_freed_memory
from brlm.models.registry import build_model, flops_per_token
from brlm.train.loop import train

VOCAB, LAYERS, HEADS, EMBD, BLOCK, BATCH = 8192, 4, 4, 256, 256, 16


def matmul_peak(n: int = 2048, reps: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """Best-of FLOP/s of an n x n matmul: the 'peak' MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def onednn_fp32_peak(n: int = 2048, reps: int = 8) -> float:
    """The same product through oneDNN (mkldnn tensors), 0 where this PyTorch has none. Not what
    PyTorch's fp32 matmul calls on CPU (MKL), but what the hardware can do: on an AMD EPYC Zen 5,
    MKL runs AVX2 code at ~217 GFLOP/s and oneDNN AVX-512 at ~485."""
    if not torch.backends.mkldnn.is_available():
        return 0.0
    a, b = torch.randn(n, n).to_mkldnn(), torch.randn(n, n).to_mkldnn()
    torch._C._nn.mkldnn_linear(a, b, None)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch._C._nn.mkldnn_linear(a, b, None)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def model_cfg(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch, n_layer=LAYERS, n_head=HEADS, n_embd=EMBD, block_size=BLOCK, dropout=0.0,
                       bias=arch == "gpt", tie_embeddings=True)


@contextlib.contextmanager
def unfused_loss():
    """Swap the fused head + loss for F.cross_entropy over the full logits (the ablation)."""
    def full_logits_loss(hidden, weight, targets, bias=None, label_smoothing=0.0):
        logits = F.linear(hidden, weight, bias)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), label_smoothing=label_smoothing)

    saved = brlm.models.gpt.linear_cross_entropy, brlm.models.llama.linear_cross_entropy
    brlm.models.gpt.linear_cross_entropy = brlm.models.llama.linear_cross_entropy = full_logits_loss
    try:
        yield
    finally:
        brlm.models.gpt.linear_cross_entropy, brlm.models.llama.linear_cross_entropy = saved


def brlm_tokens_per_s(arch: str, steps: int, warmup: int, compile_: bool, dtype: str = "fp32") -> float:
    """Tokens/s of the real trainer from its per-step figures: the median step after `warmup`
    (a median, because a shared machine has load spikes; compilation happens in the warmup)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, size=200_000).astype(np.uint16)
    tc = TrainConfig(batch_size=BATCH, max_steps=warmup + steps, stride=BLOCK, warmup_steps=0, eval_interval=10**6,
                     eval_windows=1, log_interval=1, compile=compile_, dtype=dtype, seed=0)
    with tempfile.TemporaryDirectory() as d:
        logger = JSONLLogger(Path(d) / "m.jsonl")
        train(RunConfig(model=model_cfg(arch), train=tc), tokens[:190_000], tokens[190_000:], VOCAB, Path(d) / "ck", logger)
        logger.close()
        rows = [r for r in read_metrics(Path(d) / "m.jsonl") if "train_loss" in r]
    # Each row has cumulative tokens and tokens/s over optimizer-step time only.
    cum = [r["tokens"] / r["tokens_per_s"] for r in rows]
    step_times = np.diff([0.0] + cum)[warmup:]
    return BATCH * BLOCK / float(np.median(step_times))


def hf_model(arch: str) -> torch.nn.Module:
    try:
        import transformers
    except ImportError:
        raise SystemExit("this benchmark needs transformers: pip install 'brlm[hf]'") from None
    if arch == "gpt":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_embd=EMBD, n_layer=LAYERS, n_head=HEADS,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg)
    hidden = build_model(model_cfg("llama"), VOCAB).layers[0].ffn.w1.out_features  # same SwiGLU width
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=EMBD, intermediate_size=hidden, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=BLOCK,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


def hf_tokens_per_s(arch: str, steps: int, warmup: int, bf16: bool = False, compile_: bool = False) -> tuple[float, int]:
    """A plain PyTorch loop on the HF model (optionally under bf16 autocast, as brlm's bf16 row, and
    with torch.compile of the model); tokens/s of the median step after `warmup`."""
    torch.manual_seed(0)
    model = hf_model(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    fwd = torch.compile(model) if compile_ else model
    x = torch.randint(0, VOCAB, (BATCH, BLOCK))
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return BATCH * BLOCK / float(np.median(times[warmup:])), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps per measurement (median taken)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocations)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    ap.add_argument("--bf16", action="store_true", help="also measure brlm and HF with bf16 autocast")
    ap.add_argument("--archs", default="gpt,llama")
    ap.add_argument("--rounds", type=int, default=2, help="alternating HF / brlm rounds; the best round counts")
    ap.add_argument("--hf-compile", action="store_true", help="also measure the HF loop with torch.compile(model)")
    ap.add_argument("--force", action="store_true", help="measure even on a busy machine (load > 0.5 per core)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md (this machine kind's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = check_load(args.force)
    # brlm's trainer keeps freed memory (train.cpu_allocator: keep), a process-wide setting: set it
    # first, so that the HF rounds in this process run with the same allocator.
    print(f"allocator: {keep_freed_memory()} (both sides)")

    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()} | measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    peak_bf16 = matmul_peak(dtype=torch.bfloat16) if args.bf16 else 0.0
    if args.bf16:
        print(f"measured bf16 matmul peak {peak_bf16 / 1e9:.0f} GFLOP/s")
    # Rounds alternate HF and brlm so both see the same machine load; each figure is the best
    # round's median step (on a shared machine the best round is the closest to an idle one).
    best: dict[str, float] = {}
    params: dict[str, int] = {}

    def keep(name: str, tps: float, n: int) -> None:
        best[name] = max(best.get(name, 0.0), tps)
        params[name] = n
        print(f"  round figure: {name}: {tps:,.0f} tokens/s", flush=True)

    archs = args.archs.split(",")
    for r in range(args.rounds):
        for arch in archs:
            n_brlm = build_model(model_cfg(arch), VOCAB).num_params()
            ref, n_hf = hf_tokens_per_s(arch, args.steps, args.warmup)
            keep(f"HF {'GPT2LMHeadModel' if arch == 'gpt' else 'LlamaForCausalLM'} (plain loop)|{arch}", ref, n_hf)
            keep(f"brlm {arch} eager|{arch}", brlm_tokens_per_s(arch, args.steps, args.warmup, compile_=False), n_brlm)
            with unfused_loss():
                keep(f"brlm {arch} eager, unfused loss (ablation)|{arch}",
                     brlm_tokens_per_s(arch, args.steps, args.warmup, compile_=False), n_brlm)
            if args.bf16:
                keep(f"HF {arch} plain loop, bf16 autocast|{arch}", *hf_tokens_per_s(arch, args.steps, args.warmup, bf16=True))
                keep(f"brlm {arch} eager, bf16 autocast|{arch}",
                     brlm_tokens_per_s(arch, args.steps, args.warmup, compile_=False, dtype="bf16"), n_brlm)
            if not args.no_compile and r == args.rounds - 1:
                keep(f"brlm {arch} torch.compile|{arch}", brlm_tokens_per_s(arch, args.steps, args.warmup, compile_=True), n_brlm)
                if args.bf16:
                    keep(f"brlm {arch} torch.compile, bf16 autocast|{arch}",
                         brlm_tokens_per_s(arch, args.steps, args.warmup, compile_=True, dtype="bf16"), n_brlm)
            if args.hf_compile and r == args.rounds - 1:
                keep(f"HF {arch} plain loop + torch.compile|{arch}", *hf_tokens_per_s(arch, args.steps, args.warmup, compile_=True))
                if args.bf16:
                    keep(f"HF {arch} plain loop + torch.compile, bf16 autocast|{arch}",
                         *hf_tokens_per_s(arch, args.steps, args.warmup, bf16=True, compile_=True))
    peak = max(peak, matmul_peak())  # again at the end: the best of both counts as the peak
    print(f"measured fp32 matmul peak (best of start and end) {peak / 1e9:.0f} GFLOP/s")
    dnn_peak = onednn_fp32_peak()
    print(f"fp32 through oneDNN (not what PyTorch's fp32 matmul calls here): {dnn_peak / 1e9:.0f} GFLOP/s")
    if args.bf16:
        peak_bf16 = max(peak_bf16, matmul_peak(dtype=torch.bfloat16))
        print(f"measured bf16 matmul peak (best of start and end) {peak_bf16 / 1e9:.0f} GFLOP/s")
    print("\nMFU against the peak of the dtype the matmuls run in; 'vs HF': against the HF plain loop of the same dtype;")
    print("'vs HF + compile': against the HF loop with torch.compile(model) of the same dtype (--hf-compile).")
    lines = ["| run | params | tokens/s | MFU | vs HF | vs HF + compile |", "|---|---|---|---|---|---|"]

    def hf_ref(arch: str, bf16: bool, compiled: bool) -> float | None:
        return next((v for k, v in best.items() if k.startswith("HF") and k.endswith(f"|{arch}")
                     and ("bf16" in k) == bf16 and ("torch.compile" in k) == compiled), None)

    for key, tps in best.items():
        name, arch = key.split("|")
        bf16 = "bf16" in name
        ref, ref_c = hf_ref(arch, bf16, False), hf_ref(arch, bf16, True)
        fpt = flops_per_token(build_model(model_cfg(arch), VOCAB))
        mfu = fpt * tps / (peak_bf16 if bf16 else peak)
        vs = f"{tps / ref:.2f}x" if ref else "—"
        vs_c = f"{tps / ref_c:.2f}x" if ref_c else "—"
        lines.append(f"| {name} | {params[key] / 1e6:.2f} M | {tps:,.0f} | {mfu:.0%} | {vs} | {vs_c} |")
        if name.startswith("brlm") and ref:
            print(f"{name}: {tps / ref:.2f}x HF" + (f", {tps / ref_c:.2f}x HF + compile" if ref_c else "") + f" {tag()}")
    body = "\n".join(lines)
    print("\n" + body)
    if args.write:
        notes = (f"\n\n`benchmarks/bench_train_throughput.py --rounds {args.rounds} --steps {args.steps} --warmup {args.warmup}"
                 f"{' --bf16' if args.bf16 else ''}{' --hf-compile' if args.hf_compile else ''}"
                 f"{' --no-compile' if args.no_compile else ''}`; {torch.get_num_threads()} threads, torch {torch.__version__}; "
                 f"measured matmul peak fp32 {peak / 1e9:.0f} GFLOP/s" + (f", bf16 {peak_bf16 / 1e9:.0f} GFLOP/s" if args.bf16 else "")
                 + f" (fp32 through oneDNN, not used by torch.matmul: {dnn_peak / 1e9:.0f} GFLOP/s); both sides with glibc keeping freed memory"
                 + f"; load average {load:.2f} at the start. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
        write_table("Training throughput (bench_train_throughput.py)", "brlm trainer vs HF plain loop", body + notes)
    print(f"\nmachine: {machine_kind()}")


if __name__ == "__main__":
    main()
