"""End to end on the Fake.br corpus: `data prepare` (natural cleaning, dedup, splits) + tokenizer
training (brlm's recommended BPE 16k) + sharding in worker processes, with time and throughput.

    .venv/bin/python benchmarks/bench_data_fakebr_e2e.py [--workers 2] [--vocab 16000]

Throughput is the corpus's uncompressed UTF-8 text (MB) over each stage's wall time, and over
the total. Skips when ../shared/data/fakebr/news.jsonl.gz is absent. Target: under 3 minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

FAKEBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fakebr" / "news.jsonl.gz"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=16000)
    args = ap.parse_args()
    if not FAKEBR.is_file():
        print(f"skipped: {FAKEBR} not found (the shared development data is absent)")
        return 0
    from brlm.config import load_config
    from brlm.io.run_folder import RunPaths
    from brlm.stages.pretrain import stage_data, stage_shards, stage_tokenizer

    cfg = load_config(overrides=[f"data.source={FAKEBR}", f"data.workers={args.workers}", "data.test_fraction=0.05",
                                 "tokenizer.model_type=bpe", f"tokenizer.vocab_size={args.vocab}"])
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        paths = RunPaths(Path(tmp) / "run")
        times = {}
        t0 = time.perf_counter()
        m = stage_data(cfg, paths)
        times["data prepare"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        stage_tokenizer(cfg, paths)
        times["tokenizer train"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        s = stage_shards(cfg, paths)
        times["shards"] = time.perf_counter() - t2
        total = time.perf_counter() - t0
    chars_in = m["counts"]["chars_in"]
    mb = sum(m["counts"][sp]["bytes"] for sp in ("train", "val", "test")) / 1e6
    tokens = sum(h["n_tokens"] for h in s["splits"].values())
    print(f"Fake.br: {m['counts']['docs_in']} documents, {chars_in / 1e6:.1f} M characters in, {mb:.1f} MB of cleaned UTF-8 kept, "
          f"{tokens:,} tokens in shards")
    for k, v in times.items():
        print(f"{k:<16} {v:7.1f} s  {mb / v:6.2f} MB/s")
    print(f"{'total':<16} {total:7.1f} s  {mb / total:6.2f} MB/s  ({'under' if total < 180 else 'OVER'} the 3-minute target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
