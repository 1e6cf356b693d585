"""Predicted vs measured peak memory of CPU training, for two GPT configs.

    .venv/bin/python benchmarks/bench_memory.py            # prints a Markdown table
    .venv/bin/python benchmarks/bench_memory.py --steps 5

Each config trains a few steps in its own subprocess (brlm's GPT, brlm's AdamW, random tokens of the
preset's vocabulary) so one run's allocations do not inflate the next one's peak. Measured = peak RSS
(`ru_maxrss`) minus the RSS of the same process after `import torch, brlm` and one warm-up step of a
16-wide model, before the real model is built: that baseline is the Python + PyTorch runtime (code
pages, thread pools), which `brlm estimate` does not model on CPU.
Predicted = `brlm.compute.memory.estimate_memory(..., method="full", dtype="fp32", device="cpu")`,
with fused ("flash") attention and with math attention (T×T scores saved); "auto" picks math here,
because PyTorch's fused CPU attention has no dropout and the demo trains with dropout 0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CONFIGS = {
    # The demo preset at its default scale (small): 4 layers, n_embd 128, block 128, batch 16, vocab 2000.
    "demo (small)": {"preset": "demo", "overrides": []},
    # A larger GPT: 8 layers, n_embd 512, block 256, batch 16 (≈ 27 M parameters).
    "gpt 8x512, T=256": {"preset": "demo", "overrides": ["model.n_layer=8", "model.n_embd=512", "model.n_head=8", "model.block_size=256"]},
}

CHILD = r"""
import json, resource, sys, time
import torch
from brlm.config import load_config
from brlm.models.registry import build_model
from brlm.train.optim import make_optimizer

spec = json.loads(sys.argv[1])
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
cfg = load_config(preset=spec["preset"], overrides=spec["overrides"])
torch.manual_seed(0)
torch.set_num_threads(2)
V = cfg.tokenizer.vocab_size
# Warm-up: one step of a 1-layer, 16-wide model through the same code paths, so the shared-library
# pages and thread pools that the first forward/backward/step touch are in the baseline.
small = load_config(preset=spec["preset"], overrides=spec["overrides"] + ["model.n_layer=1", "model.n_embd=16", "model.n_head=1", "model.block_size=8"])
w = build_model(small.model, V)
wopt = make_optimizer(w, small.train, "cpu")
_, wl = w(torch.randint(0, V, (2, 8)), torch.randint(0, V, (2, 8)))
wl.backward()
wopt.step()
del w, wopt, wl, _
base = rss_mb()
model = build_model(cfg.model, V)
opt = make_optimizer(model, cfg.train, "cpu")
B, T = cfg.train.batch_size, cfg.model.block_size
model.train()
t0 = time.perf_counter()
for step in range(spec["steps"]):
    x = torch.randint(0, V, (B, T)); y = torch.randint(0, V, (B, T))
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline_mb": base, "peak_rss_mb": peak, "n_params": model.num_params(),
                  "seconds_per_step": (time.perf_counter() - t0) / spec["steps"]}))
"""


def measure(spec: dict, steps: int, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**spec, "steps": steps})],
                         capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


# glibc raises its mmap threshold after large frees, so later large tensors come from the heap and
# freed memory stays in RSS; a fixed threshold returns every large block on free, so the peak RSS
# tracks the live tensors. Both are measured: the first is what a user sees, the second what we model.
MMAP_FIXED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def predict(spec: dict, attention: str) -> dict:
    from brlm.compute.memory import estimate_memory, spec_from_config
    from brlm.config import load_config

    cfg = load_config(preset=spec["preset"], overrides=spec["overrides"])
    m = spec_from_config("bench", cfg.model, cfg.tokenizer.vocab_size)
    est = estimate_memory(m, method="full", dtype="fp32", optimizer="adamw", seq_len=cfg.model.block_size,
                          micro_batch=cfg.train.batch_size, attention_impl=attention, device="cpu")
    return {"total_mb": est.total_bytes / 2**20, "terms_mb": {k: v / 2**20 for k, v in est.terms.items() if v}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    print("| config | params | predicted, auto = math attn (MiB) | predicted, flash attn (MiB) | measured, glibc default (MiB) | "
          "measured, fixed mmap threshold (MiB) | measured / predicted (default; fixed) | baseline RSS (MiB) | s/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    details = {}
    for name, spec in CONFIGS.items():
        got = measure(spec, args.steps)
        fixed = measure(spec, args.steps, MMAP_FIXED)
        flash, math_ = predict(spec, "flash"), predict(spec, "math")
        used = got["peak_rss_mb"] - got["baseline_mb"]
        used_fixed = fixed["peak_rss_mb"] - fixed["baseline_mb"]
        print(f"| {name} | {got['n_params'] / 1e6:.2f} M | {math_['total_mb']:.1f} | {flash['total_mb']:.1f} | {used:.1f} | {used_fixed:.1f} | "
              f"{used / math_['total_mb']:.2f}; {used_fixed / math_['total_mb']:.2f} | {got['baseline_mb']:.0f} | {got['seconds_per_step']:.1f} |")
        details[name] = {"measured": got, "measured_fixed_mmap": fixed, "predicted_flash": flash, "predicted_math": math_}
    print()
    print("terms (MiB), math-attention prediction:")
    for name, d in details.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in d["predicted_math"]["terms_mb"].items()))


if __name__ == "__main__":
    main()
