"""Architecture names -> classes. Configs store the name (a string), so they stay serialisable."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models.gpt import GPT

ARCHS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "gpt": GPT,
}


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"model.arch={cfg.arch!r}: unknown architecture; available: {', '.join(sorted(ARCHS))}")
    return ARCHS[cfg.arch](cfg, vocab_size)
