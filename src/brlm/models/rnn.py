"""Recurrent language model (the seeds' v1-v4): token embedding, `n_layer` LSTM or GRU layers of
width `rnn_hidden`, optional LayerNorm after each layer, linear head. `model.dropout` acts on each
recurrent layer's input (Keras' `LSTM(dropout=…)` of the seeds); `model.final_dropout` on the last
layer's output, before the head (the seeds' v3).

Each layer is its own `nn.LSTM` / `nn.GRU` so a LayerNorm can sit between layers (v3). The head
shares the embedding matrix only when asked and the widths agree (n_embd == rnn_hidden).

    model = RNNLM(ModelConfig(arch="rnn", rnn_cell="gru", n_layer=2, n_embd=32, rnn_hidden=64,
                              tie_embeddings=False), vocab_size=300)
    logits, _ = model(idx)                         # (B, T) -> (B, T, V)
    _, loss = model(idx, targets)                  # fused head + loss (models/loss.py)
    state = model.make_cache(1, 0, "cpu")          # carried hidden state for decoding
    logits, _ = model(idx, cache=state)            # state.pos advances by T
"""

from __future__ import annotations

import torch
import torch.nn as nn

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models.loss import linear_cross_entropy


class RNNState:
    """Hidden state carried between calls: one entry per layer (h for GRU, (h, c) for LSTM), each
    (1, B, H). The engine's per-row protocol (brlm.models.cache) is simple here: rows do not depend
    on positions, so `rows()` is the state itself, a new sequence is run through a fresh batch-1
    state (`slot`) and its hidden state copied into row b (`commit`)."""

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = batch_size
        self.hidden: list | None = None
        self.pos = 0  # tokens consumed so far

    def reset(self) -> None:
        self.hidden, self.pos = None, 0

    def rows(self) -> RNNState:
        return self

    def slot(self, b: int) -> RNNState:
        return RNNState(1)

    def commit(self, b: int, slot: RNNState) -> None:
        if slot.hidden is None:  # an empty prompt prefix: the row starts from zeros
            if self.hidden is not None:
                for h in self.hidden:
                    for t in (h if isinstance(h, tuple) else (h,)):
                        t[:, b].zero_()
            return
        if self.hidden is None:
            def zeros(t: torch.Tensor) -> torch.Tensor:
                return t.new_zeros(t.size(0), self.batch_size, *t.shape[2:])

            self.hidden = [tuple(map(zeros, h)) if isinstance(h, tuple) else zeros(h) for h in slot.hidden]
        for dst, src in zip(self.hidden, slot.hidden):
            for d, s in zip(dst if isinstance(dst, tuple) else (dst,), src if isinstance(src, tuple) else (src,)):
                d[:, b] = s[:, 0]


class RNNLM(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if cfg.tie_embeddings and cfg.n_embd != cfg.rnn_hidden:
            raise ConfigError(
                f"model.tie_embeddings=true needs model.n_embd == model.rnn_hidden for arch rnn "
                f"(got {cfg.n_embd} and {cfg.rnn_hidden}); set model.tie_embeddings=false"
            )
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.block_size = cfg.block_size  # training window; decoding with a state has no limit
        cell = nn.LSTM if cfg.rnn_cell == "lstm" else nn.GRU
        H = cfg.rnn_hidden
        self.emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.rnns = nn.ModuleList([cell(cfg.n_embd if i == 0 else H, H, batch_first=True) for i in range(cfg.n_layer)])
        self.norms = nn.ModuleList([nn.LayerNorm(H, eps=cfg.norm_eps) for _ in range(cfg.n_layer)]) if cfg.rnn_layernorm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.final_drop = nn.Dropout(cfg.final_dropout)
        self.label_smoothing = 0.0  # a training setting (train.label_smoothing); the trainer sets it
        self.head = nn.Linear(H, vocab_size, bias=True)
        nn.init.normal_(self.emb.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)
        if cfg.tie_embeddings:
            self.head.weight = self.emb.weight

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if non_embedding and not self.cfg.tie_embeddings else n

    def make_cache(self, batch_size: int, max_len: int = 0, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> RNNState:
        # An RNN's state does not grow with the context, so max_len / device are unused; it takes
        # the weights' dtype, so `dtype` (the keys' and values' dtype of attention models) is unused too.
        return RNNState(batch_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: RNNState | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x = self.emb(idx)  # (B, T, n_embd)
        hidden_in = cache.hidden if cache is not None and cache.hidden is not None else [None] * len(self.rnns)
        hidden_out = []
        for i, rnn in enumerate(self.rnns):
            x, h = rnn(self.drop(x), hidden_in[i])  # (B, T, H); dropout on the layer's input
            hidden_out.append(h)
            if self.norms is not None:
                x = self.norms[i](x)
        x = self.final_drop(x)
        if cache is not None:
            cache.hidden = hidden_out
            cache.pos += idx.size(1)
        if targets is None:
            return self.head(x), None  # (B, T, V)
        smoothing = self.label_smoothing if self.training else 0.0  # evaluation scores the plain cross-entropy
        return None, linear_cross_entropy(x, self.head.weight, targets, bias=self.head.bias, label_smoothing=smoothing)


# ---------------------------------------------------------------------------------------------
# Counts, exact from the config (brlm.compute asks for them through models/registry.py). No
# attention: the recurrent matmuls are the FLOPs. LoRA has no targets here (the registry says so).


def _gates(cfg: ModelConfig) -> int:
    return 4 if cfg.rnn_cell == "lstm" else 3


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of RNNLM(cfg, vocab_size): total (tied weights once), embedding, active (= total)."""
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    h = cfg.rnn_hidden
    gates = _gates(cfg)
    rec = sum(gates * h * ((d if i == 0 else h) + h) + 2 * gates * h for i in range(L))  # W_ih, W_hh, b_ih, b_hh
    norms = 2 * h * L if cfg.rnn_layernorm else 0
    # The head (with a bias) reads the hidden state; it shares the embedding only when widths match.
    head = (0 if (cfg.tie_embeddings and h == d) else V * h) + V
    emb = V * d
    total = emb + rec + norms + head
    return {"total": total, "embedding": emb, "active": total, "non_embedding": total - emb}


def forward_flops(cfg: ModelConfig, vocab_size: int, ctx: float) -> dict[str, float]:
    """Forward FLOPs per token by component; `ctx` is unused (the state carries the context)."""
    d, L, h = cfg.n_embd, cfg.n_layer, cfg.rnn_hidden
    gates = _gates(cfg)
    return {
        "recurrent": float(sum(2 * gates * h * ((d if i == 0 else h) + h) for i in range(L))),
        "lm_head": float(2 * h * vocab_size),
    }


def activations(cfg: ModelConfig, seq_len: int, attention_impl: str) -> dict[str, float]:
    """Saved-for-backward elements per token: one layer's, the head's input (logits excluded), no
    dropout masks counted, and the width the head reads (seq_len, attention_impl unused)."""
    h = cfg.rnn_hidden
    layer = (_gates(cfg) + 3) * h  # gate pre-activations, h, c and the layer input
    # The head's input; with the fused loss d(loss)/d(hidden).
    return {"layer": float(layer), "head": float(h), "mask_bytes": 0.0, "head_width": h}
