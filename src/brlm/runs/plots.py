"""Plots for reports, drawn from metrics.jsonl rows (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brlm.io.files import atomic_path


def loss_curve(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Train and validation loss against tokens seen. Returns None when there is nothing to draw."""
    train = [(r["tokens"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="treino (train)", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validação (val)", lw=1.5, ms=3)
    return _finish(fig, ax, "tokens vistos", "loss (nats/token)", title, path, legend_fontsize=None)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, path: str | Path, legend_fontsize: int | None = 8) -> Path:
    """The styling every plot here shares, then an atomic PNG write."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return path


def overlay_loss_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path | None:
    """Validation loss (train loss dotted) of several runs against tokens seen, one colour per run."""
    if not any(any("val_loss" in r or "train_loss" in r for r in rows) for rows in runs.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        val = [(r["tokens"], r["val_loss"]) for r in rows if "val_loss" in r]
        train = [(r["tokens"], r["train_loss"]) for r in rows if "train_loss" in r]
        if val:
            ax.plot(*zip(*val), "o-", color=color, label=f"{name} (val)", lw=1.5, ms=3)
        if train:
            ax.plot(*zip(*train), ":", color=color, label=f"{name} (treino)", lw=1)
    return _finish(fig, ax, "tokens vistos", "loss (nats/token)", "loss por execução (só compara execuções com o mesmo tokenizador)", path)


def overlay_throughput(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path | None:
    """Training tokens/s over steps, one line per run."""
    if not any(any("tokens_per_s" in r for r in rows) for rows in runs.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for i, (name, rows) in enumerate(runs.items()):
        pts = [(r["step"], r["tokens_per_s"]) for r in rows if "tokens_per_s" in r]
        if pts:
            ax.plot(*zip(*pts), "-", color=f"C{i % 10}", label=name, lw=1.3)
    return _finish(fig, ax, "passo", "tokens/s (treino)", "vazão de treino", path)


def grouped_bars(groups: dict[str, dict[str, float | None]], path: str | Path, ylabel: str, title: str) -> Path | None:
    """One group of bars per run (e.g. {"v1": {"bits/byte": 2.1, "bits/char": 2.2}}), one colour per
    series; a missing or NaN value leaves a gap. Returns None when there is nothing to draw."""
    import math

    series = list(dict.fromkeys(k for vals in groups.values() for k in vals))
    ok = lambda v: v is not None and not math.isnan(v)  # noqa: E731
    if not any(ok(v) for vals in groups.values() for v in vals.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4), dpi=100)
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ys = [vals.get(name) for vals in groups.values()]
        bars = ax.bar([x for x, y in zip(xs, ys) if ok(y)], [y for y in ys if ok(y)], width, label=name, color=f"C{j % 10}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    return _finish(fig, ax, "", ylabel, title, path)
