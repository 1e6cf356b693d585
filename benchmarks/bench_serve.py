"""`brlm serve` under load: 1, 4 and 8 concurrent streaming clients (the official `openai`
client) against a tiny llama, with continuous batching (`--max-batch 8`) and with requests served
one at a time (`--max-batch 1`, same server otherwise). Per level: aggregate generated tokens/s,
time to first token p50 / p95, request latency p50 / p95, errors; and the batching ratio at 8
clients (target: >= 3x, 0 errors).

    .venv/bin/python benchmarks/bench_serve.py                     # builds a tiny llama demo run first
                                                                   # (block_size 128: room for 64-token answers)
    .venv/bin/python benchmarks/bench_serve.py runs/llama --requests 100 --max-tokens 64 [--write]

Each level sends `--requests` requests in total, spread over its clients (each client sends its
next request when the previous answer is complete). `ignore_eos` makes every answer exactly
`--max-tokens` long (unless the context leaves less room: the table says the mean answer length
counted from the usage), so the two servers do the same work. Servers run as `brlm serve`
subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
from benchlib import check_load, tag, write_table

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["O ônibus da linha", "Qual é a capital do Brasil?", "Era uma vez", "O governo anunciou",
           "A seleção brasileira", "No Rio de Janeiro,", "Segundo o relatório,", "A economia"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    e.pop("BRLM_API_KEY", None)
    return e


def tiny_run(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "brlm", "run", "demo", "--scale", "tiny", "--runs-dir", str(root),
                    "--set", "model.arch=llama", "--set", "model.block_size=128"], check=True, env=env(), stdout=subprocess.DEVNULL)
    return next(p.parent.parent for p in root.glob("*/checkpoints/*") if p.is_dir() or p.is_file())


def start_server(run: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "brlm", "serve", str(run), "--port", str(port),
                             "--max-batch", str(max_batch), "--max-queue", "64"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"brlm serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("brlm serve did not come up in 120 s")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load_level(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    todo = list(range(requests))
    lock = threading.Lock()
    ttft: list[float] = []
    lat: list[float] = []
    tokens = [0]
    errors: list[str] = []

    def client_loop():
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            t0 = time.perf_counter()
            first = None
            try:
                stream = c.completions.create(model="x", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens,
                                              temperature=0.8, seed=i, stream=True, extra_body={"ignore_eos": True})
                used = 0
                for ch in stream:
                    if first is None and ch.choices and ch.choices[0].text:
                        first = time.perf_counter() - t0
                    if ch.usage:
                        used = ch.usage.completion_tokens
                with lock:
                    lat.append(time.perf_counter() - t0)
                    ttft.append(first if first is not None else lat[-1])
                    tokens[0] += used
            except Exception as e:  # noqa: BLE001 - counted, not fatal
                with lock:
                    errors.append(f"{e.__class__.__name__}: {e}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return {"tok_s": tokens[0] / wall, "ttft50": pct(ttft, 0.5), "ttft95": pct(ttft, 0.95),
            "lat50": pct(lat, 0.5), "lat95": pct(lat, 0.95), "errors": len(errors), "tokens": tokens[0],
            "per_answer": tokens[0] / max(len(lat), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="a brlm run folder (default: build a tiny llama demo run)")
    ap.add_argument("--requests", type=int, default=100, help="requests per concurrency level (default: 100)")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default: 64)")
    ap.add_argument("--clients", default="1,4,8", help="concurrency levels (default: 1,4,8)")
    ap.add_argument("--force", action="store_true", help="measure even on a busy machine (figures say so)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    load = check_load(args.force)
    levels = [int(x) for x in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="brlm-bench-serve-") as tmp:
        run = Path(args.run) if args.run else tiny_run(Path(tmp))
        results: dict[tuple[int, int], dict[str, float]] = {}
        for max_batch in (max(levels), 1):
            proc, url = start_server(run, max_batch)
            try:
                load_level(url, 1, 2, args.max_tokens)  # warm-up
                for n in levels:
                    r = results[(max_batch, n)] = load_level(url, n, args.requests, args.max_tokens)
                    print(f"max_batch={max_batch} clients={n}: {r['tok_s']:.0f} tok/s, TTFT p50 {r['ttft50']*1e3:.0f} ms, "
                          f"latency p50 {r['lat50']*1e3:.0f} ms, errors {r['errors']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    rows = ["| server | clients | tokens/s | TTFT p50 / p95 (ms) | latency p50 / p95 (ms) | errors |",
            "|---|---:|---:|---:|---:|---:|"]
    for (mb, n), r in sorted(results.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        name = "continuous batching" if mb > 1 else "one at a time"
        rows.append(f"| {name} (--max-batch {mb}) | {n} | {r['tok_s']:.0f} | {r['ttft50']*1e3:.0f} / {r['ttft95']*1e3:.0f} "
                    f"| {r['lat50']*1e3:.0f} / {r['lat95']*1e3:.0f} | {r['errors']} |")
    top = max(levels)
    ratio = results[(top, top)]["tok_s"] / results[(1, top)]["tok_s"]
    errors = sum(r["errors"] for r in results.values())
    verdict = "meets" if ratio >= 3 and errors == 0 else "MISSES"
    per_answer = sum(r["tokens"] for r in results.values()) / sum(r["tokens"] / r["per_answer"] for r in results.values())
    notes = (f"\n{args.requests} requests per level, max_tokens {args.max_tokens} (ignore_eos; {per_answer:.1f} tokens per "
             f"answer on average, counted from the usage), temperature 0.8, "
             f"load average {load:.2f} at start. Continuous batching at {top} clients: **{ratio:.1f}x** the "
             f"one-at-a-time server, {errors} errors ({verdict} the >= 3x, 0-error target). {tag()}")
    table = "\n".join(rows) + "\n" + notes
    print(table)
    if args.write:
        write_table("Serving: continuous batching (bench_serve.py, issue 14)", "tiny llama, streaming clients", table)


if __name__ == "__main__":
    main()
