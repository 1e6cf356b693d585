"""Peak memory of building and iterating stride-1 windows (block 160): brlm's memory-mapped
views + lazy shuffled order over 100 M tokens, next to the seeds' NumPy approach (every window
copied into one array) on smaller inputs. Each case runs in a fresh subprocess; memory is the
peak resident set (VmHWM) above that interpreter's baseline after imports, plus the anonymous
part at the end (file-backed pages of the memory map are page cache the kernel can drop).

    .venv/bin/python benchmarks/bench_data_windows_memory.py [--tokens 100000000] [--seeds-tokens 1000000,10000000]

The seeds' approach on 10 M tokens needs about 13 GB (10 M x 161 int64); it runs under an
address-space cap (--seeds-cap-gb, default 8) so it fails cleanly instead of swapping the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 160


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def case_brlm(n_tokens: int, batches: int, folder: str) -> dict:
    import numpy as np

    from brlm.data.loader import ShuffledBatches, Windows

    path = Path(folder) / "tokens.bin"
    if not path.exists() or path.stat().st_size != 2 * n_tokens:
        with open(path, "wb") as f:  # written in 8 M-token chunks: the writer is not what we measure
            rng = np.random.default_rng(0)
            for start in range(0, n_tokens, 1 << 23):
                f.write(rng.integers(0, 16000, size=min(1 << 23, n_tokens - start), dtype=np.uint16).tobytes())
    import torch  # noqa: F401  (imported before the baseline, as in training)

    base = _status("VmRSS")
    t0 = time.perf_counter()
    tokens = np.memmap(path, dtype=np.uint16, mode="r", shape=(n_tokens,))
    w = Windows(tokens, BLOCK, 1)
    order = ShuffledBatches(len(w), 64, seed=1)
    build = time.perf_counter() - t0
    for _ in range(batches):
        x, y = w.batch(order.next_indices())  # (64, 160) int64 each
    return {"case": "brlm", "tokens": n_tokens, "windows": len(w), "batches": batches, "build_s": build,
            "iter_s": time.perf_counter() - t0 - build, "peak_above_baseline_mb": (_status("VmHWM") - base) / 2**20,
            "anon_mb_end": _status("RssAnon") / 2**20, "baseline_mb": base / 2**20}


def case_seeds(n_tokens: int, batches: int, folder: str) -> dict:
    import numpy as np
    import torch  # noqa: F401

    base = _status("VmRSS")
    t0 = time.perf_counter()
    data = np.random.default_rng(0).integers(0, 16000, size=n_tokens).astype(np.int64)  # token ids as int64, as the seeds kept them
    idx = np.arange(0, n_tokens - BLOCK - 1, 1)  # stride 1
    X = data[idx[:, None] + np.arange(BLOCK)]  # (n, 160) copies of every window
    Y = data[idx[:, None] + np.arange(1, BLOCK + 1)]
    build = time.perf_counter() - t0
    perm = np.random.default_rng(1).permutation(len(X))
    for b in range(batches):
        sel = perm[b * 64 : (b + 1) * 64]
        _ = X[sel], Y[sel]
    return {"case": "seeds-numpy", "tokens": n_tokens, "windows": len(X), "batches": batches, "build_s": build,
            "iter_s": time.perf_counter() - t0 - build, "peak_above_baseline_mb": (_status("VmHWM") - base) / 2**20,
            "anon_mb_end": _status("RssAnon") / 2**20, "baseline_mb": base / 2**20}


def run_case(kind: str, n: int, batches: int, folder: str, cap_gb: float = 0) -> dict:
    code = (
        "import json, resource, sys; sys.path.insert(0, %r); import bench_data_windows_memory as b; "
        "cap = %r\n"
        "if cap: resource.setrlimit(resource.RLIMIT_AS, (int(cap * 2**30), int(cap * 2**30)))\n"
        "try:\n    print(json.dumps(b.case_%s(%d, %d, %r)))\n"
        "except MemoryError:\n    print(json.dumps({'case': %r, 'tokens': %d, 'error': 'MemoryError under a %%s GB cap' %% cap}))\n"
    ) % (str(Path(__file__).parent), cap_gb, kind, n, batches, folder, kind, n)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        return {"case": kind, "tokens": n, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=100_000_000)
    ap.add_argument("--seeds-tokens", default="1000000,10000000")
    ap.add_argument("--seeds-cap-gb", type=float, default=8.0)
    ap.add_argument("--batches", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-win-") as folder:
        rows = [run_case("brlm", args.tokens, args.batches, folder)]
        for n in (int(x) for x in args.seeds_tokens.split(",") if x):
            rows.append(run_case("seeds", n, args.batches, folder, args.seeds_cap_gb))
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<12} {r['tokens']:>12,} tokens: {r['error']}")
        else:
            print(f"{r['case']:<12} {r['tokens']:>12,} tokens {r['windows']:>12,} windows: peak +{r['peak_above_baseline_mb']:8.1f} MB "
                  f"above baseline ({r['baseline_mb']:.0f} MB), anon at end {r['anon_mb_end']:.0f} MB, build {r['build_s']:.2f} s, "
                  f"{r['batches']} batches {r['iter_s']:.2f} s")
    ok = [r for r in rows if r["case"] == "brlm" and "error" not in r]
    if ok:
        print(f"brlm at {ok[0]['tokens']:,} tokens: {'within' if ok[0]['peak_above_baseline_mb'] <= 300 else 'OVER'} the 300 MB budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
