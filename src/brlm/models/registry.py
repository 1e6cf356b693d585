"""Architecture names -> classes. Configs store the name (a string), so they stay serialisable."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models.gpt import GPT
from brlm.models.llama import Llama
from brlm.models.moe import MoE
from brlm.models.rnn import RNNLM

ARCHS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "gpt": GPT,
    "llama": Llama,
    "moe": MoE,
    "rnn": RNNLM,
}


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"model.arch={cfg.arch!r}: unknown architecture; available: {', '.join(sorted(ARCHS))}")
    return ARCHS[cfg.arch](cfg, vocab_size)


def flops_per_token(model: nn.Module, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) of a built model, for tokens/s -> MFU.
    One count for every family: brlm.compute.flops, exact from the config."""
    from brlm.compute.flops import flops_per_token as count

    return count(model.cfg, model.vocab_size, seq_len)
