"""AdamW with weight decay on matrices only, and the learning-rate schedules: linear warmup, then
cosine decay, a constant rate, or reduce-on-plateau (the seeds' v2: the rate drops by
`plateau_factor` after `plateau_patience` validations without improvement).

The plateau schedule's state is two numbers (`Plateau.state_dict`), saved in every checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from brlm.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str = "cpu") -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    # Decay weight matrices and embeddings; never biases or norm gains (they are 1-D).
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW: one kernel for all parameters (CUDA and, in recent PyTorch, CPU too).
    fused = device_type == "cuda" or (device_type == "cpu" and _cpu_fused_ok())
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _cpu_fused_ok() -> bool:
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, ValueError):
        return False


def lr_at(step: int, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at cfg.max_steps ('cosine'),
    cfg.lr ('constant'), or cfg.lr times the plateau scale, never below cfg.min_lr ('plateau')."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "plateau":
        return max(cfg.min_lr, cfg.lr * scale)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


class Plateau:
    """Reduce-on-plateau bookkeeping (as torch's ReduceLROnPlateau, mode min, threshold 0)."""

    def __init__(self, factor: float, patience: int):
        self.factor, self.patience = factor, patience
        self.scale = 1.0
        self.best = float("inf")
        self.bad = 0

    def step(self, val_loss: float) -> bool:
        """Record one validation loss; returns True when the rate was just reduced."""
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.scale *= self.factor
            self.bad = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])
