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


def flops_per_token(model: nn.Module) -> float:
    """Training FLOPs per token (forward + backward) of a built model, for tokens/s -> MFU."""
    if hasattr(model, "flops_per_token"):
        return float(model.flops_per_token())
    # gpt: 6 x matmul parameters (all but the position table) + attention (nanoGPT's estimate_mfu).
    cfg = model.cfg
    n = model.num_params() - model.wpe.weight.numel()
    return float(6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size)
