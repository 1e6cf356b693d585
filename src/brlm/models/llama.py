"""Llama-style decoder: RMSNorm, rotary positions (RoPE, configurable base), SwiGLU MLP,
grouped-query attention (`n_kv_head` key/value heads shared by `n_head` query heads), optional
qk-norm, no biases, optional tied embeddings. The `moe` family reuses this block with a
Mixture-of-Experts FFN (moe.py overrides `make_ffn`).

    from brlm.config import ModelConfig
    model = Llama(ModelConfig(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32), vocab_size=300)
    _, loss = model(idx, targets)                   # idx, targets: (B, T) int64; fused head + loss
    cache = model.make_cache(1, 64, "cpu")          # KV cache for decoding (models/cache.py)
    logits, _ = model(idx[:, :5], cache=cache)      # then one token at a time
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


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Weight in the input's dtype: under autocast q and k arrive in bf16, and PyTorch's fused
        # rms_norm kernel needs matching dtypes (else it falls back to the slower composite).
        return F.rms_norm(x, (x.size(-1),), self.weight.to(x.dtype), self.eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, 1, head_dim / 2) for positions (T,), or (B, T, 1, head_dim / 2) for
    per-row positions (B, T): one angle per pair (x_i, x_{i + hd/2}), the "rotate_half" layout of
    Hugging Face's Llama."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = (positions.float()[..., None] * inv_freq).unsqueeze(-2)  # (..., T, 1, hd/2)
    return freqs.cos(), freqs.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    if torch.compiler.is_compiling():  # Dynamo cannot trace out= into strided views; Inductor fuses this anyway
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    out = torch.empty_like(x)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)  # x1 cos - x2 sin
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)  # x2 cos + x1 sin
    return out


class _Rope(torch.autograd.Function):
    """RoPE in two fused passes. A rotation's gradient is the rotation by minus the angle, so
    backward needs only cos and sin, not x (autograd's version of x*cos + rotate_half(x)*sin
    saves x and makes ~10 passes over q and k)."""

    @staticmethod
    def forward(ctx, x, cos, sin):  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        return _rotate(grad.contiguous(), cos, -sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+hd/2}) by position-dependent angles. x: (B, T, nh, hd);
    cos, sin: (T, 1, hd/2) from rope_cos_sin."""
    return _Rope.apply(x, cos.to(x.dtype), sin.to(x.dtype))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        C, hd = cfg.n_embd, cfg.head_dim
        self.wq = nn.Linear(C, self.n_head * hd, bias=False)
        self.wk = nn.Linear(C, self.n_kv_head * hd, bias=False)
        self.wv = nn.Linear(C, self.n_kv_head * hd, bias=False)
        self.wo = nn.Linear(self.n_head * hd, C, bias=False)
        # qk-norm (OLMo 2, Qwen3): bounds attention logits, which keeps training stable at high lr.
        self.q_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | RowKVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim)  # (B, T, nh, hd)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, nkv, hd)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # Rotate while contiguous, then heads first for attention: (B, nh, T, hd), (B, nkv, T, hd).
        q, k = apply_rope(q, cos, sin).transpose(1, 2), apply_rope(k, cos, sin).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = causal_attention(q, k, v, dropout)  # (B, nh, T, hd): fused kernel or plain ops, by plan
        else:
            k, v, mask, causal = cache.attend(layer, k, v)  # (B, nkv, S, hd): every stored position
            # In the cache's dtype (models/cache.py: fp32 under bf16 weights on CPU), back to q's after.
            y = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask, is_causal=causal and T > 1,
                                               dropout_p=dropout, enable_gqa=self.n_kv_head != self.n_head).to(q.dtype)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class SwiGLU(nn.Module):
    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(n_embd, hidden, bias=False)  # gate
        self.w3 = nn.Linear(n_embd, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, n_embd, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ffn: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.ffn = ffn
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | RowKVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, cache, layer))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.block_size = cfg.block_size
        self.label_smoothing = 0.0  # a training setting (train.label_smoothing); the trainer sets it
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([Block(cfg, self.make_ffn(cfg)) for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # Residual projections scaled by 1/sqrt(2 * n_layer), as GPT-2, so the stream's variance stays put.
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def make_ffn(self, cfg: ModelConfig) -> nn.Module:
        return SwiGLU(cfg.n_embd, cfg.ffn_hidden)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights counted once
        return n - self.tok_emb.weight.numel() if non_embedding and not self.cfg.tie_embeddings else n

    def active_params(self) -> int:
        """Parameters one token passes through (all of them for a dense model)."""
        return self.num_params()

    def make_cache(self, batch_size: int, max_len: int, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache; keys and values in `dtype` (default: the weights')."""
        dtype = dtype or self.tok_emb.weight.dtype
        return KVCache(self.cfg.n_layer, batch_size, self.cfg.kv_heads, self.cfg.head_dim, max_len, device, dtype)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | RowKVCache | None = None) -> torch.Tensor:
        B, T = idx.shape
        if cache is None and T > self.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.block_size}")
        pos = cache.positions(T, idx.device) if cache is not None else torch.arange(T, device=idx.device)  # (T,) or (B, T)
        cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_base)
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | RowKVCache | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits (B, T, V), None) without targets; (None, mean cross-entropy) with them (fused
        head + loss, models/loss.py)."""
        h = self.hidden_states(idx, cache)
        if targets is None:
            return self.lm_head(h), None
        smoothing = self.label_smoothing if self.training else 0.0  # evaluation scores the plain cross-entropy
        return None, linear_cross_entropy(h, self.lm_head.weight, targets, label_smoothing=smoothing)


# ---------------------------------------------------------------------------------------------
# Counts, exact from the config (brlm.compute asks for them through models/registry.py; the
# conventions — matmuls only, 2 FLOPs per multiply-add, mean context `ctx` — are in compute/flops.py).
# The decoder_* helpers take the FFN's share as an argument, so moe.py reuses everything else.


def attention_params(cfg: ModelConfig) -> int:
    """wq, wk and wv (n_kv_head heads each), wo, and the q/k norms with qk_norm."""
    d, kvd = cfg.n_embd, cfg.kv_heads * cfg.head_dim
    return d * d + 2 * d * kvd + d * d + (2 * cfg.head_dim if cfg.qk_norm else 0)


def decoder_param_counts(cfg: ModelConfig, vocab_size: int, ffn: int, ffn_active: int) -> dict[str, int]:
    """Parameters of a Llama-style model whose FFN holds `ffn` parameters per layer, `ffn_active` of
    them used by each token: total (tied weights once), embedding, active, non_embedding."""
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    head = 0 if cfg.tie_embeddings else V * d
    attn = attention_params(cfg)
    norms = 2 * d
    emb = V * d
    total = emb + L * (attn + norms + ffn) + d + head
    active = emb + L * (attn + norms + ffn_active) + d + head
    return {"total": total, "embedding": emb, "active": active, "non_embedding": total - emb}


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    ffn = 3 * cfg.n_embd * cfg.ffn_hidden  # SwiGLU w1, w3, w2
    return decoder_param_counts(cfg, vocab_size, ffn, ffn)


def attention_flops(cfg: ModelConfig, ctx: float) -> dict[str, float]:
    """Attention FLOPs per token (all layers), each query meeting `ctx` keys on average."""
    d, L = cfg.n_embd, cfg.n_layer
    kvd = cfg.kv_heads * cfg.head_dim
    qd = cfg.n_head * cfg.head_dim  # == d
    return {
        "attention_proj": float(L * 2 * d * (qd + 2 * kvd + d)),  # q, k, v in; o out
        "attention_scores": L * 2 * 2 * qd * ctx,  # Q·Kᵀ and softmax·V, each 2·n_head·head_dim·ctx
    }


def forward_flops(cfg: ModelConfig, vocab_size: int, ctx: float) -> dict[str, float]:
    """Forward FLOPs per token by component (all layers), each query meeting `ctx` keys on average."""
    d, L = cfg.n_embd, cfg.n_layer
    return {
        **attention_flops(cfg, ctx),
        "mlp": float(L * 2 * 3 * d * cfg.ffn_hidden),  # gate, up, down
        "lm_head": float(2 * d * vocab_size),
    }


def decoder_activations(cfg: ModelConfig, seq_len: int, attention_impl: str, ffn: int) -> dict[str, float]:
    """Saved-for-backward elements per token of a Llama-style model whose FFN sublayer (norm included)
    saves `ffn`: one layer's, the final norm's (logits excluded), dropout mask bytes (all layers), and
    the width the head reads."""
    d, L = cfg.n_embd, cfg.n_layer
    kvd = cfg.kv_heads * cfg.head_dim
    attn = d + d + d + 2 * kvd + d  # norm input, norm output (= q/k/v input), q, k, v, attention output
    layer = float(attn + ffn)
    # Attention and MLP residual dropout masks, embedding dropout (1 B each).
    masks = float(L * 2 * d + d) if cfg.dropout > 0 else 0.0
    # Final norm input and output; with the fused loss its input and d(loss)/d(hidden). What the
    # attention form saves besides (the T×T part) is brlm.models.attention.saved_bytes.
    return {"layer": layer, "head": 2.0 * d, "mask_bytes": masks, "head_width": d, "attention": True}


def activations(cfg: ModelConfig, seq_len: int, attention_impl: str) -> dict[str, float]:
    d = cfg.n_embd
    ffn = d + d + 4 * cfg.ffn_hidden  # norm in/out, gate out, silu out, up out, product
    return decoder_activations(cfg, seq_len, attention_impl, ffn)


def decoder_lora_targets(cfg: ModelConfig, hidden: int, n_ffn: int) -> dict[str, tuple[int, int, int]]:
    """target -> (d_in, d_out, matrices per layer), with `n_ffn` SwiGLUs of width `hidden` per layer."""
    d, kvd = cfg.n_embd, cfg.kv_heads * cfg.head_dim
    return {"q": (d, d, 1), "k": (d, kvd, 1), "v": (d, kvd, 1), "o": (d, d, 1),
            "gate": (d, hidden, n_ffn), "up": (d, hidden, n_ffn), "down": (hidden, d, n_ffn)}


def lora_targets(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    return decoder_lora_targets(cfg, cfg.ffn_hidden, 1)
