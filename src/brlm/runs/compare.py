"""Run summaries for `brlm runs list`, and the one side-by-side table: `brlm compare` and the
multi-run presets of `brlm run` (gpt2-vs-moe, v4, the ladder) both render it.

Everything comes from the run folders (run.json, train.json, eval.json, guardrails.json,
cost.json, metrics.jsonl). Perplexity and loss only compare runs that share a tokenizer, so
bits per byte comes first and a warning is added when the tokenizers differ.

    rows = [summarize_run(p) for p in ("runs/a", "runs/b")]
    md, csv_text, warnings = comparison_table(rows)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from brlm.errors import BrlmError
from brlm.io.files import read_json
from brlm.io.logging import format_seconds
from brlm.io.run_folder import RunPaths, live_status


def _load(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    record = _load(paths.record) or {}
    summary = _load(paths.train_summary) or {}
    ev = _load(paths.eval) or {}
    guard = (_load(paths.root / "guardrails.json") or {}).get("aggregate") or {}
    cost = _load(paths.root / "cost.json") or {}
    tok_meta = _load(paths.tokenizer / "tokenizer.json") or {}
    tokenizer = ev.get("tokenizer_sha256") or (record.get("hashes") or {}).get("tokenizer") or tok_meta.get("sha256")
    tok_cfg = tok_meta.get("config") or {}
    kind = tok_meta.get("kind")
    return {
        "run": paths.root.name,
        "path": str(paths.root),
        "status": live_status(record),  # `running` with its process gone reads `interrupted`
        "preset": record.get("preset"),
        "scale": record.get("scale"),
        "arch": summary.get("arch"),
        "tokenizer": None if kind is None else ("char" if kind == "char" else f"{tok_cfg.get('model_type', 'spm')}")
        + (f" {tok_meta['vocab_size']}" if tok_meta.get("vocab_size") else ""),
        "params": summary.get("n_params"),
        "params_m": summary["n_params"] / 1e6 if summary.get("n_params") else None,
        "bytes_seen": summary.get("bytes_seen"),
        "peak_memory_mb": summary.get("peak_cuda_allocated_mb", summary.get("peak_rss_mb")),
        "byte_fallback_ratio": guard.get("byte_fallback_ratio"),
        "short_piece_ratio": guard.get("short_piece_ratio"),
        "bits_per_byte": ev.get("bits_per_byte"),
        "bits_per_char": ev.get("bits_per_char"),
        "loss": ev.get("loss"),
        "perplexity": ev.get("perplexity"),
        "accuracy": ev.get("accuracy"),
        "best_val_loss": summary.get("best_val_loss"),
        "tokens_seen": summary.get("tokens_seen"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "wall_time_s": summary.get("wall_time_s"),
        "total_flops": cost.get("total_flops"),
        "estimated_cost_usd": cost.get("estimated_cost_usd"),
        "guardrails_passed": guard.get("passed"),
        "tokenizer_sha256": tokenizer,
        "vocab_size": tok_meta.get("vocab_size"),
    }


def find_runs(runs_dir: str | Path) -> list[Path]:
    root = Path(runs_dir)
    if not root.is_dir():
        raise BrlmError(f"--runs-dir {root}: folder not found")
    return sorted(p for p in root.iterdir() if (p / "run.json").is_file())


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def runs_list_table(rows: list[dict[str, Any]]) -> str:
    header = "| run | status | preset | params | best val bits/byte | tokens | wall time |\n|---|---|---|---|---|---|---|"
    lines = [header]
    for r in rows:
        preset = f"{r['preset'] or '—'}" + (f" ({r['scale']})" if r.get("scale") else "")
        wall = format_seconds(r["wall_time_s"]) if r.get("wall_time_s") is not None else "—"
        lines.append(f"| {r['run']} | {r['status'] or '—'} | {preset} | {_num(r['params'], ',')} | "
                     f"{_num(r['bits_per_byte'], '.4f')} | {_num(r['tokens_seen'], ',')} | {wall} |")
    return "\n".join(lines)


# (column, key, format); bits per byte first: the only figure comparable across tokenizers.
COLUMNS = [
    ("bits/byte", "bits_per_byte", ".4f"),
    ("bits/char", "bits_per_char", ".4f"),
    ("loss", "loss", ".4f"),
    ("ppl", "perplexity", ".2f"),
    ("acc", "accuracy", ".4f"),
    ("tokens seen", "tokens_seen", ","),
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("wall time (s)", "wall_time_s", ".1f"),
    ("FLOPs", "total_flops", ".3g"),
    ("est. cost (USD)", "estimated_cost_usd", ".4f"),
]


# The table of a multi-run preset (`brlm run gpt2-vs-moe`, `brlm run ladder`): what was trained and
# with how much text, then the figures, the seeds' guardrails and the cost.
RUN_COLUMNS = [
    ("arch", "arch", "s"),
    ("tokenizer", "tokenizer", "s"),
    ("params (M)", "params_m", ".2f"),
    ("bytes seen", "bytes_seen", ","),
    ("bits/byte", "bits_per_byte", ".4f"),
    ("bits/char", "bits_per_char", ".4f"),
    ("val loss", "loss", ".4f"),
    ("ppl", "perplexity", ".2f"),
    ("byte fallback", "byte_fallback_ratio", ".3f"),
    ("short pieces", "short_piece_ratio", ".3f"),
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("peak mem (MB)", "peak_memory_mb", ",.0f"),
    ("wall time (s)", "wall_time_s", ".1f"),
    ("est. cost (USD)", "estimated_cost_usd", ".4f"),
]


def tokenizer_warning(rows: list[dict[str, Any]]) -> str | None:
    shas = {r["tokenizer_sha256"] for r in rows}
    if len(shas) > 1 or None in shas:
        groups = ", ".join(f"{r['run']}={str(r['tokenizer_sha256'] or '?')[:12]}" for r in rows)
        return (f"WARNING: these runs use different (or unknown) tokenizers ({groups}); loss and perplexity are per token "
                "and do not compare across tokenizers. Compare bits per byte (first column) instead.")
    return None


def _cell(x: Any, fmt: str) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "—"
    return "—" if x is None else (str(x) if fmt == "s" else format(x, fmt))


def comparison_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]] | None = None) -> tuple[str, str, list[str]]:
    """(Markdown, CSV, warnings) of the side-by-side table; `columns` (default COLUMNS, the
    `brlm compare` set; RUN_COLUMNS for multi-run presets) are (header, key, format) triples."""
    columns = COLUMNS if columns is None else columns
    warnings = [w for w in [tokenizer_warning(rows)] if w]
    header = ["run", *(c for c, _, _ in columns), "guardrails", "tokenizer sha"]
    md_rows = []
    for r in rows:
        g = r.get("guardrails_passed")
        md_rows.append([r["run"], *(_cell(r.get(k), f) for _, k, f in columns), "—" if g is None else ("pass" if g else "FAIL"),
                        str(r.get("tokenizer_sha256") or "—")[:12]])
    md = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(x) + " |" for x in md_rows])
    if warnings:
        md = "\n\n".join(f"> ⚠️ {w}" for w in warnings) + "\n\n" + md
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *(k for _, k, _ in columns), "guardrails_passed", "tokenizer_sha256"])
    for r in rows:
        w.writerow([r["run"], *("" if r.get(k) is None else r[k] for _, k, _ in columns),
                    "" if r.get("guardrails_passed") is None else r["guardrails_passed"], r.get("tokenizer_sha256") or ""])
    return md + "\n", buf.getvalue(), warnings


def extrinsic_table(runs: list[str | Path]) -> str | None:
    """Markdown: each run's extrinsic.json (`brlm eval extrinsic run`), headline metric per task and
    model (mean ± std over seeds, 95 % CI); None when no run has one."""
    from brlm.eval.extrinsic.summary import METRIC_LABELS, TASK_LABELS, TASK_METRICS, md_table

    body = []
    for run in runs:
        ext = _load(Path(run) / "extrinsic.json")
        if not isinstance(ext, dict):
            continue
        for model, by_task in (ext.get("results") or {}).items():
            cells = []
            for task in TASK_METRICS:
                x = (by_task.get(task) or {}).get(TASK_METRICS[task][0])
                cells.append("—" if not x else f"{x['mean']:.4f} ± {x['std']:.4f} [{x['lo']:.4f}, {x['hi']:.4f}]")
            body.append([Path(run).name, model, *cells])
    if not body:
        return None
    header = ["run", "modelo", *(f"{TASK_LABELS[t]} {METRIC_LABELS[m[0]]}" for t, m in TASK_METRICS.items())]
    return md_table(header, body) + "\n"
