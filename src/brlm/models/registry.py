"""Architecture names -> families. Configs store the name (a string), so they stay serialisable.

Each family file builds its model and owns its counts; `family(arch)` hands both out, so brlm.compute
counts parameters, FLOPs, activations and LoRA targets without knowing which architectures exist:

    from brlm.models.registry import family
    family(cfg.arch).param_counts(cfg, vocab_size)["total"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models import gpt, llama, moe, rnn


@dataclass(frozen=True)
class Family:
    """One model family: its builder and its exact counts, each a plain function of the config.

    param_counts(cfg, vocab_size)       -> {"total", "embedding", "active", "non_embedding"}
    forward_flops(cfg, vocab_size, ctx) -> forward FLOPs per token by component (keys of
                                           brlm.compute.flops.COMPONENTS; absent = 0), `ctx` the mean
                                           number of keys a query meets
    activations(cfg, seq_len, attention_impl)
                                        -> saved-for-backward elements per token: "layer" (one layer),
                                           "head" (around the head, logits excluded), "mask_bytes"
                                           (dropout masks, all layers) and "head_width" (what the head reads)
    lora_targets(cfg)                   -> {target: (d_in, d_out, matrices per layer)}; None: no LoRA
    """

    name: str
    build: Callable[[ModelConfig, int], nn.Module]
    param_counts: Callable[[ModelConfig, int], dict[str, int]]
    forward_flops: Callable[[ModelConfig, int, float], dict[str, float]]
    activations: Callable[[ModelConfig, int, str], dict[str, float]]
    lora_targets: Callable[[ModelConfig], dict[str, tuple[int, int, int]]] | None = None


FAMILIES: dict[str, Family] = {
    "gpt": Family("gpt", gpt.GPT, gpt.param_counts, gpt.forward_flops, gpt.activations, gpt.lora_targets),
    "llama": Family("llama", llama.Llama, llama.param_counts, llama.forward_flops, llama.activations, llama.lora_targets),
    "moe": Family("moe", moe.MoE, moe.param_counts, moe.forward_flops, moe.activations, moe.lora_targets),
    "rnn": Family("rnn", rnn.RNNLM, rnn.param_counts, rnn.forward_flops, rnn.activations),
}

ARCHS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {name: f.build for name, f in FAMILIES.items()}


def family(arch: str) -> Family:
    if arch not in FAMILIES:
        raise ConfigError(f"model.arch={arch!r}: unknown architecture; available: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[arch]


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    return family(cfg.arch).build(cfg, vocab_size)


def flops_per_token(model: nn.Module, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) of a built model, for tokens/s -> MFU.

    The conventions of brlm.compute.flops.flops_per_token (causal attention: mean context (T+1)/2;
    training = 3 × forward), restated here because models/ may not import compute;
    tests/test_models_counts.py checks that the two agree."""
    cfg = model.cfg
    T = seq_len or cfg.block_size
    return 3 * sum(family(cfg.arch).forward_flops(cfg, model.vocab_size, (T + 1) / 2).values())
