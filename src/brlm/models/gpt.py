"""GPT-2 style decoder: learned positions, pre-LayerNorm, causal multi-head attention through
`scaled_dot_product_attention`, GELU MLP, tied input/output embeddings by default (as nanoGPT).

    from brlm.config import ModelConfig
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64), vocab_size=300)
    logits, _ = model(idx)               # idx: (B, T) int64 -> logits (B, T, V)
    _, loss = model(idx, targets)        # mean cross-entropy; the (B, T, V) logits are never held

Decoding with a KV cache (brlm.models.cache protocol; brlm.infer.engine uses it):

    cache = model.make_cache(batch_size=1, max_len=model.block_size, device="cpu")
    logits, _ = model(prompt, cache=cache)      # prefill; cache.pos == prompt length
    logits, _ = model(next_token, cache=cache)  # one position per step
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.config import ModelConfig
from brlm.models.attention import causal_attention
from brlm.models.cache import KVCache, RowKVCache
from brlm.models.loss import linear_cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | RowKVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if cache is None:
            y = causal_attention(q, k, v, self.dropout if self.training else 0.0)  # fused kernel or plain ops, by plan
        else:
            k, v, mask, causal = cache.attend(layer, k, v)  # (B, nh, S, hs): every stored position
            # In the cache's dtype (models/cache.py: fp32 under bf16 weights on CPU), back to q's after.
            y = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask, is_causal=causal).to(q.dtype)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.ffn_hidden
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | RowKVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.block_size = cfg.block_size
        self.label_smoothing = 0.0  # a training setting (train.label_smoothing); the trainer sets it
        self.wte = nn.Embedding(vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the stream's variance stays put.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights counted once
        return n - self.wpe.weight.numel() if non_embedding else n

    def make_cache(self, batch_size: int, max_len: int | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for up to max_len positions (at most block_size: positions are learned);
        keys and values in `dtype` (default: the weights')."""
        max_len = min(max_len or self.block_size, self.block_size)
        cfg = self.cfg
        dtype = dtype or self.wte.weight.dtype
        return KVCache(cfg.n_layer, batch_size, cfg.n_head, cfg.n_embd // cfg.n_head, max_len, device=device, dtype=dtype)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | RowKVCache | None = None) -> torch.Tensor:
        B, T = idx.shape
        end = getattr(cache, "pos", 0) + T  # a RowKVCache (per-row positions) is sized by the engine
        if end > self.block_size:
            raise ValueError(f"sequence of {end} tokens is longer than block_size={self.block_size}")
        pos = cache.positions(T, idx.device) if cache is not None else torch.arange(T, device=idx.device)  # (T,) or (B, T)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | RowKVCache | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits (B, T, V), None) without targets; (None, mean cross-entropy) with them, computed
        by the fused head + loss that never holds all the logits (models/loss.py)."""
        h = self.hidden_states(idx, cache)
        if targets is None:
            return self.lm_head(h), None
        smoothing = self.label_smoothing if self.training else 0.0  # evaluation scores the plain cross-entropy
        return None, linear_cross_entropy(h, self.lm_head.weight, targets, label_smoothing=smoothing)


# ---------------------------------------------------------------------------------------------
# Counts, exact from the config (brlm.compute asks for them through models/registry.py; the
# conventions — matmuls only, 2 FLOPs per multiply-add, mean context `ctx` — are in compute/flops.py).


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of GPT(cfg, vocab_size): total (tied weights once), embedding (wte + wpe), active."""
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    head = 0 if cfg.tie_embeddings else V * d
    b = 1 if cfg.bias else 0
    hid = cfg.ffn_hidden
    ln = d * (1 + b)
    per_layer = (
        2 * ln
        + 3 * d * d + 3 * d * b  # c_attn
        + d * d + d * b  # attn c_proj
        + d * hid + hid * b  # c_fc
        + hid * d + d * b  # mlp c_proj
    )
    emb = V * d + cfg.block_size * d  # wte + wpe
    total = emb + L * per_layer + ln + head
    return {"total": total, "embedding": emb, "active": total, "non_embedding": total - emb}


def forward_flops(cfg: ModelConfig, vocab_size: int, ctx: float) -> dict[str, float]:
    """Forward FLOPs per token by component (all layers), each query meeting `ctx` keys on average."""
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    kvd = cfg.kv_heads * cfg.head_dim
    qd = cfg.n_head * cfg.head_dim  # == d
    return {
        "attention_proj": float(L * 2 * d * (qd + 2 * kvd + d)),  # q, k, v in; o out
        "attention_scores": L * 2 * 2 * qd * ctx,  # Q·Kᵀ and softmax·V, each 2·n_head·head_dim·ctx
        "mlp": float(L * 2 * 2 * d * cfg.ffn_hidden),  # c_fc, c_proj
        "lm_head": float(2 * d * V),
    }


def activations(cfg: ModelConfig, seq_len: int, attention_impl: str) -> dict[str, float]:
    """Saved-for-backward elements per token: one layer's, the final norm's (logits excluded), dropout
    mask bytes (all layers), and the width the head reads. Korthikanti et al. 2022 §4 for a GPT layer."""
    d, L = cfg.n_embd, cfg.n_layer
    kvd = cfg.kv_heads * cfg.head_dim
    attn = d + d + d + 2 * kvd + d  # norm input, norm output (= q/k/v input), q, k, v, attention output
    ffn = d + d + 2 * cfg.ffn_hidden  # norm input/output, c_fc output (GELU input), GELU output
    layer = float(attn + ffn)
    # Attention and MLP residual dropout masks, embedding dropout (1 B each).
    masks = float(L * 2 * d + d) if cfg.dropout > 0 else 0.0
    # Final norm input and output; with the fused loss its input and d(loss)/d(hidden). What the
    # attention form saves besides (the T×T part) is brlm.models.attention.saved_bytes.
    return {"layer": layer, "head": 2.0 * d, "mask_bytes": masks, "head_width": d, "attention": True}


def lora_targets(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    """target -> (d_in, d_out, matrices per layer) for the linear layers LoRA can wrap."""
    d, h = cfg.n_embd, cfg.ffn_hidden
    # GPT-2 fuses q, k, v into one c_attn; LoRA on it counts as q, k and v together.
    return {"q": (d, d, 1), "k": (d, d, 1), "v": (d, d, 1), "o": (d, d, 1), "up": (d, h, 1), "down": (h, d, 1)}
