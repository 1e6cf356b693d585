"""The training loop: shuffled windows from memory-mapped shards, AdamW with warmup + cosine,
gradient clipping, a periodic validation loss on a fixed set of windows, best/last checkpoints.

Every figure goes to `metrics.jsonl` through the logger; a summary goes to `train.json`.
Called by `brlm train` and `brlm run`.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brlm.config import RunConfig
from brlm.data.loader import ShuffledBatches, Windows, fixed_indices
from brlm.errors import ConfigError
from brlm.eval.intrinsic import evaluate_windows
from brlm.models.registry import build_model
from brlm.runs.logging import MetricLogger, format_seconds, info
from brlm.train.checkpoint import save_checkpoint, update_pointers
from brlm.train.optim import lr_at, make_optimizer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}: CUDA is not available on this machine; use 'cpu' or 'auto'")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux.
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_cuda_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def train(
    cfg: RunConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    vocab_size: int,
    ckpt_dir: str | Path,
    logger: MetricLogger,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model from scratch; returns the summary written to train.json by the caller."""
    tc, mc = cfg.train, cfg.model
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    train_w = Windows(train_tokens, mc.block_size, tc.stride, name="train")
    val_w = Windows(val_tokens, mc.block_size, mc.block_size, name="validation")
    val_idx = fixed_indices(len(val_w), tc.eval_windows)
    batches = ShuffledBatches(len(train_w), tc.batch_size, tc.seed)

    model = build_model(mc, vocab_size).to(device)
    optimizer = make_optimizer(model, tc, device.type)
    n_params = model.num_params()
    meta = {
        "arch": mc.arch,
        "model": dataclasses.asdict(mc),
        "vocab_size": vocab_size,
        "n_params": n_params,
        "config": cfg.to_dict(),
        **(extra_meta or {}),
    }
    info(
        f"train: {mc.arch} {n_params / 1e6:.2f}M params | {len(train_w):,} train windows "
        f"(block {mc.block_size}, stride {tc.stride}) | {len(val_idx)} val windows | device {device}"
    )

    tokens_per_step = tc.batch_size * mc.block_size
    tokens_seen = 0
    best_val = float("inf")
    first_val = None
    val_loss = None
    train_time = 0.0  # seconds spent in optimizer steps (excludes validation and checkpoints)
    t_start = time.perf_counter()
    recent = []
    model.train()
    for step in range(tc.max_steps + 1):
        last = step == tc.max_steps
        if step % tc.eval_interval == 0 or last:
            val_loss = evaluate_windows(model, val_w, val_idx, batch_size=tc.batch_size, device=device)["loss"]
            first_val = val_loss if first_val is None else first_val
            logger.log_dict({"val_loss": val_loss, "tokens": tokens_seen, "elapsed": time.perf_counter() - t_start}, step)
            if val_loss < best_val:
                best_val = val_loss
                save_checkpoint(ckpt_dir, step, model, {**meta, "val_loss": val_loss, "tokens": tokens_seen})
                update_pointers(ckpt_dir, best=step)
            info(f"step {step:>6}/{tc.max_steps} | val loss {val_loss:.4f} (best {best_val:.4f})")
        if last:
            break

        lr = lr_at(step, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        x, y = train_w.batch(batches.next_indices(), device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        train_time += dt
        tokens_seen += tokens_per_step
        recent.append(loss.item())

        if (step + 1) % tc.log_interval == 0 or step == 0:
            tok_s = tokens_seen / train_time
            elapsed = time.perf_counter() - t_start
            eta = elapsed / (step + 1) * (tc.max_steps - step - 1)
            train_loss = sum(recent) / len(recent)
            recent.clear()
            logger.log_dict(
                {
                    "train_loss": train_loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens": tokens_seen,
                    "tokens_per_s": tok_s,
                    "elapsed": elapsed,
                    "epoch": batches.epoch,
                },
                step + 1,
            )
            print(
                f"step {step + 1:>6}/{tc.max_steps} | loss {train_loss:.4f} | lr {lr:.2e} | "
                f"{tok_s:,.0f} tok/s | elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)}",
                file=sys.stderr,
                flush=True,
            )

    save_checkpoint(ckpt_dir, tc.max_steps, model, {**meta, "val_loss": val_loss, "tokens": tokens_seen})
    pointers = update_pointers(ckpt_dir, last=tc.max_steps)
    wall = time.perf_counter() - t_start
    return {
        "arch": mc.arch,
        "n_params": n_params,
        "steps": tc.max_steps,
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / max(1, len(train_tokens)),
        "wall_time_s": wall,
        "train_time_s": train_time,
        "tokens_per_s": tokens_seen / train_time if train_time else 0.0,
        "initial_val_loss": first_val,
        "best_val_loss": best_val,
        "final_val_loss": val_loss,
        "best_step": pointers.get("best"),
        "device": str(device),
        "threads": torch.get_num_threads(),
        **peak_memory_mb(device),
    }
