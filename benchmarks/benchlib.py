"""What every benchmark prints and writes beside its figures: the CPU (model and the flags that
decide speed), the load average (a busy machine refuses to measure unless --force), a copy
bandwidth measured in the same run, and RESULTS.md tables kept per machine kind: a run replaces
only its own machine's table, so figures from other CPUs stay.

Imported by the bench_*.py scripts beside it (`python benchmarks/bench_decode.py` puts this
folder on sys.path).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import torch

from brlm.io.files import write_text
from brlm.io.machine import cpu_fields, cpu_flags, cpu_model

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MAX_LOAD_PER_CORE = 0.5


def machine_kind() -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores, avx2 avx512f avx512_bf16 amx_tile amx_bf16': what a
    RESULTS.md table is keyed by (same kind of CPU, same core count, same speed flags)."""
    flags = cpu_flags()
    have = " ".join(f for f in SPEED_FLAGS if f in flags) or "no AVX2"
    return f"{cpu_model()}{amd_generation()}, {os.cpu_count()} cores, {have}"


def amd_generation(cpuinfo: str | None = None) -> str:
    """' Zen 5 (family 26 model 2)' on an AMD CPU, else ''. A VM often names every AMD CPU just
    'AMD EPYC', and Zen 4 and Zen 5 share the speed flags: the family and model tell them apart."""
    fields = cpu_fields(cpuinfo)
    if fields.get("vendor_id") != "AuthenticAMD" or not fields.get("cpu family", "").isdigit():
        return ""
    family, model = int(fields["cpu family"]), int(fields.get("model", "0") or 0)
    zen = {23: "Zen/Zen 2", 26: "Zen 5"}.get(family)
    if family == 25:
        zen = "Zen 4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF else "Zen 3"
    return f" {zen + ' ' if zen else ''}(family {family} model {model})"


def check_load(force: bool) -> float:
    """Print the load average; refuse to measure above MAX_LOAD_PER_CORE per core unless `force`
    (then warn, and the figures say so)."""
    load = os.getloadavg()[0]
    per_core = load / (os.cpu_count() or 1)
    print(f"machine: {machine_kind()} | load average {load:.2f} ({per_core:.2f} per core) | torch {torch.__version__}")
    if per_core > MAX_LOAD_PER_CORE:
        msg = f"load average {per_core:.2f} per core > {MAX_LOAD_PER_CORE}: figures would measure contention"
        if not force:
            sys.exit(f"refusing to measure: {msg} (wait for a quiet machine, or pass --force)")
        print(f"WARNING: {msg} (--force)")
    return load


def copy_bandwidth(mb: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy, STREAM 'Copy' convention: bytes read + bytes written."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best


def tag() -> str:
    """Printed beside every ratio, so a figure is never read without its machine."""
    return f"[{machine_kind()}]"


def write_table(section: str, title: str, body: str, path: Path = RESULTS) -> None:
    """Put `body` (a Markdown table and its notes) under `## section` / `### <machine kind>` in
    RESULTS.md, replacing only the previous table of this section, title and machine kind."""
    kind = machine_kind()
    start, end = f"<!-- {section} | {title} | {kind} -->", f"<!-- /{section} | {title} | {kind} -->"
    block = f"{start}\n### {title} — {kind}\n\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        head = f"## {section}"
        if head not in text:
            text = text.rstrip() + f"\n\n{head}\n"
        # Insert after the section heading's existing machine tables (or at its end).
        i = text.index(head) + len(head)
        nxt = text.find("\n## ", i)
        i = len(text) if nxt < 0 else nxt
        text = text[:i].rstrip() + "\n\n" + block + "\n" + text[i:]
    write_text(path, text if text.endswith("\n") else text + "\n")  # temporary file, then rename
    print(f"wrote {path} (## {section}, table for {kind})")
