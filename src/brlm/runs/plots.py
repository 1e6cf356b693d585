"""Plots for reports, drawn from metrics.jsonl rows (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brlm.runs.artifacts import atomic_path


def loss_curve(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Train and validation loss against tokens seen. Returns None when there is nothing to draw."""
    train = [(r["tokens"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="treino (train)", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validação (val)", lw=1.5, ms=3)
    ax.set_xlabel("tokens vistos")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
