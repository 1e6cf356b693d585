"""Llama block with a Mixture-of-Experts FFN (seed 004's MoE-GQA): `n_expert` SwiGLU experts,
each token routed to its `expert_top_k` best experts with softmax weights renormalised over the
chosen ones. Every routed token is computed (no capacity limit, no token dropping).

Two auxiliary losses keep the router healthy; both are added to the returned loss and exposed
separately in `model.aux_losses` for logging, with the per-expert load in `model.expert_load`:

* load balancing (Switch Transformer, https://arxiv.org/abs/2101.03961 eq. 4):
  n_expert * sum_e f_e * P_e, where f_e is the share of routed slots that went to expert e and
  P_e the mean router probability of e; it is 1.0 when routing is perfectly uniform.
* router z-loss (ST-MoE, https://arxiv.org/abs/2202.08906 eq. 5): mean(logsumexp(router logits)^2),
  which keeps router logits small.

    model = MoE(ModelConfig(arch="moe", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, n_expert=4), 300)
    _, loss = model(idx, targets)   # loss = cross-entropy + aux_loss_coef*balance + z_loss_coef*z
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.config import ModelConfig
from brlm.models.cache import KVCache, RowKVCache
from brlm.models.llama import (
    Llama,
    SwiGLU,
    attention_flops,
    decoder_activations,
    decoder_lora_targets,
    decoder_param_counts,
)


class MoEFFN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_expert, self.top_k = cfg.n_expert, cfg.expert_top_k
        hidden = cfg.expert_ffn_hidden
        self.router = nn.Linear(cfg.n_embd, cfg.n_expert, bias=False)
        self.experts = nn.ModuleList([SwiGLU(cfg.n_embd, hidden) for _ in range(cfg.n_expert)])
        # Filled by forward: the two auxiliary losses and the share of routed slots per expert.
        self.balance_loss = torch.zeros(())
        self.z_loss = torch.zeros(())
        self.load = torch.zeros(cfg.n_expert)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(-1, C)  # (N, C)
        logits = self.router(flat).float()  # (N, E), fp32 for a stable softmax / logsumexp
        probs = logits.softmax(-1)  # (N, E)
        top_w, top_i = probs.topk(self.top_k, dim=-1)  # (N, k)
        top_w = (top_w / top_w.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)  # (N, C)
        for e, expert in enumerate(self.experts):
            token, slot = (top_i == e).nonzero(as_tuple=True)  # tokens that chose expert e
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * top_w[token, slot, None]  # (n_e, C)
            out.index_add_(0, token, y)
        counts = F.one_hot(top_i, self.n_expert).sum(dim=(0, 1)).float()  # (E,) routed slots
        frac = counts / counts.sum()
        self.load = frac.detach()
        self.balance_loss = self.n_expert * (frac * probs.mean(0)).sum()
        self.z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return out.view(B, T, C)


class MoE(Llama):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__(cfg, vocab_size)
        self.aux_losses: dict[str, torch.Tensor] = {}

    def make_ffn(self, cfg: ModelConfig) -> nn.Module:
        return MoEFFN(cfg)

    def active_params(self) -> int:
        """Parameters one token passes through: only top_k of the n_expert experts."""
        per_expert = sum(p.numel() for p in self.layers[0].ffn.experts[0].parameters())
        idle = (self.cfg.n_expert - self.cfg.expert_top_k) * per_expert * self.cfg.n_layer
        return self.num_params() - idle

    @property
    def expert_load(self) -> torch.Tensor:
        """(n_layer, n_expert): share of routed slots per expert in the last forward."""
        return torch.stack([layer.ffn.load for layer in self.layers])

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | RowKVCache | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, ce = super().forward(idx, targets, cache)
        ffns = [layer.ffn for layer in self.layers]
        balance = torch.stack([f.balance_loss for f in ffns]).mean()
        z = torch.stack([f.z_loss for f in ffns]).mean()
        self.aux_losses = {"ce": ce.detach() if ce is not None else None,
                           "moe_balance": balance.detach(), "moe_z": z.detach()}
        if ce is None:
            return logits, None
        return logits, ce + self.cfg.aux_loss_coef * balance + self.cfg.z_loss_coef * z


# ---------------------------------------------------------------------------------------------
# Counts: llama.py's, with the router and the experts as the FFN. FLOPs, activations and the
# active parameters count the `expert_top_k` experts a token is routed to, not all of them.


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    d, eh = cfg.n_embd, cfg.expert_ffn_hidden
    ffn = d * cfg.n_expert + cfg.n_expert * 3 * d * eh  # router + every expert's SwiGLU
    ffn_active = d * cfg.n_expert + cfg.expert_top_k * 3 * d * eh
    return decoder_param_counts(cfg, vocab_size, ffn, ffn_active)


def forward_flops(cfg: ModelConfig, vocab_size: int, ctx: float) -> dict[str, float]:
    """Forward FLOPs per token by component (all layers), each query meeting `ctx` keys on average."""
    d, L = cfg.n_embd, cfg.n_layer
    return {
        **attention_flops(cfg, ctx),
        "mlp": float(L * cfg.expert_top_k * 2 * 3 * d * cfg.expert_ffn_hidden),
        "router": float(L * 2 * d * cfg.n_expert),
        "lm_head": float(2 * d * vocab_size),
    }


def activations(cfg: ModelConfig, seq_len: int, attention_impl: str) -> dict[str, float]:
    d = cfg.n_embd
    ffn = d + d + cfg.expert_top_k * 4 * cfg.expert_ffn_hidden + 2 * cfg.n_expert  # + router logits/probs
    return decoder_activations(cfg, seq_len, attention_impl, ffn)


def lora_targets(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    return decoder_lora_targets(cfg, cfg.expert_ffn_hidden, cfg.n_expert)
