"""FLOPs per token, counted exactly from a ModelConfig, next to the 6·N approximation; and MFU.

    from brlm.compute.flops import flops_per_token, mfu
    fpt = flops_per_token(cfg.model, vocab_size)        # training FLOPs per token (forward + backward)
    mfu(tokens_per_s, fpt, peak_flops_per_s)             # model FLOPs utilisation, 0..1

Conventions (the same as Kaplan et al. 2020 §2.1, Hoffmann et al. 2022 app. F and PaLM app. B):

* Only matrix multiplications count; one multiply-add is 2 FLOPs. Biases, norms, activations,
  softmax and residual adds are O(d) per token (< 1 % at any useful size) and left out, so a count
  by hand is a sum of `2 · rows · cols` terms.
* Embedding lookups are gathers: 0 FLOPs. The LM head is a matmul: 2·d·V.
* Attention scores (Q·Kᵀ and the weighted sum over V) are counted **causally**: the query at
  position t (1-based) meets t keys, so over a window of T tokens the mean context is (T+1)/2 and
  each costs 2·2·n_head·head_dim·(T+1)/2 FLOPs per token per layer. `attention="full"` counts T
  keys for every query (what a kernel that does not skip masked blocks computes).
* Training = forward + backward = 3 × forward (the backward pass costs two matmuls per forward one).
  Activation recomputation (gradient checkpointing) is *not* counted: MFU uses model FLOPs.
* MoE counts the router and the `expert_top_k` experts each token is routed to, not all experts.

Families that do not have a model class yet (llama, moe, rnn) are counted from the config fields
with the structure described in brlm's design (Llama: RMSNorm, GQA, SwiGLU, no biases; MoE: a
Llama block whose FFN is a router + SwiGLU experts; rnn: embedding -> stacked LSTM/GRU -> head).
"""

from __future__ import annotations

from brlm.config import ModelConfig
from brlm.errors import BrlmError


def _check_arch(cfg: ModelConfig) -> None:
    if cfg.arch not in ("gpt", "llama", "moe", "rnn"):
        raise BrlmError(f"model.arch={cfg.arch!r}: no FLOPs/parameter formula; expected gpt, llama, moe or rnn")


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of a model built from `cfg`: total (tied weights once), embedding, active per token.

    `active` differs from `total` only for MoE (router + top-k experts instead of all experts).
    """
    _check_arch(cfg)
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    head = 0 if cfg.tie_embeddings else V * d
    if cfg.arch == "rnn":
        h = cfg.rnn_hidden
        gates = 4 if cfg.rnn_cell == "lstm" else 3
        rec = sum(gates * h * ((d if i == 0 else h) + h) + 2 * gates * h for i in range(L))  # W_ih, W_hh, b_ih, b_hh
        norms = 2 * h * L if cfg.rnn_layernorm else 0
        # The head (with a bias) reads the hidden state; it shares the embedding only when widths match.
        head = (0 if (cfg.tie_embeddings and h == d) else V * h) + V
        emb = V * d
        total = emb + rec + norms + head
        return {"total": total, "embedding": emb, "active": total, "non_embedding": total - emb}
    if cfg.arch == "gpt":
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
    kvd = cfg.kv_heads * cfg.head_dim
    attn = d * d + 2 * d * kvd + d * d + (2 * cfg.head_dim if cfg.qk_norm else 0)
    norms = 2 * d
    if cfg.arch == "llama":
        ffn = ffn_active = 3 * d * cfg.ffn_hidden
    else:  # moe
        eh = cfg.expert_ffn_hidden
        ffn = d * cfg.n_expert + cfg.n_expert * 3 * d * eh
        ffn_active = d * cfg.n_expert + cfg.expert_top_k * 3 * d * eh
    emb = V * d
    total = emb + L * (attn + norms + ffn) + d + head
    active = emb + L * (attn + norms + ffn_active) + d + head
    return {"total": total, "embedding": emb, "active": active, "non_embedding": total - emb}


def forward_flops_breakdown(
    cfg: ModelConfig, vocab_size: int, seq_len: int | None = None, attention: str = "causal"
) -> dict[str, float]:
    """Forward FLOPs per token by component (all layers summed), for windows of `seq_len` tokens."""
    _check_arch(cfg)
    if attention not in ("causal", "full"):
        raise BrlmError(f"attention={attention!r}: expected 'causal' or 'full'")
    T = seq_len or cfg.block_size
    if T < 1:
        raise BrlmError(f"seq_len={T}: expected an integer >= 1")
    d, V, L = cfg.n_embd, vocab_size, cfg.n_layer
    ctx = (T + 1) / 2 if attention == "causal" else float(T)
    out = {"embeddings": 0.0, "attention_proj": 0.0, "attention_scores": 0.0, "mlp": 0.0, "router": 0.0, "recurrent": 0.0}
    if cfg.arch == "rnn":
        h = cfg.rnn_hidden
        gates = 4 if cfg.rnn_cell == "lstm" else 3
        out["recurrent"] = float(sum(2 * gates * h * ((d if i == 0 else h) + h) for i in range(L)))
        out["lm_head"] = float(2 * h * V)
        return out
    kvd = cfg.kv_heads * cfg.head_dim
    qd = cfg.n_head * cfg.head_dim  # == d
    out["attention_proj"] = float(L * 2 * d * (qd + 2 * kvd + d))  # q, k, v in; o out
    out["attention_scores"] = L * 2 * 2 * qd * ctx  # Q·Kᵀ and softmax·V, each 2·n_head·head_dim·ctx
    if cfg.arch == "gpt":
        out["mlp"] = float(L * 2 * 2 * d * cfg.ffn_hidden)  # c_fc, c_proj
    elif cfg.arch == "llama":
        out["mlp"] = float(L * 2 * 3 * d * cfg.ffn_hidden)  # gate, up, down
    else:
        out["router"] = float(L * 2 * d * cfg.n_expert)
        out["mlp"] = float(L * cfg.expert_top_k * 2 * 3 * d * cfg.expert_ffn_hidden)
    out["lm_head"] = float(2 * d * V)
    return out


def forward_flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int | None = None, attention: str = "causal") -> float:
    return sum(forward_flops_breakdown(cfg, vocab_size, seq_len, attention).values())


def flops_per_token(
    model_cfg: ModelConfig, vocab_size: int, seq_len: int | None = None, attention: str = "causal", training: bool = True
) -> float:
    """Training FLOPs per token (3 × forward), or forward only with `training=False`."""
    fwd = forward_flops_per_token(model_cfg, vocab_size, seq_len, attention)
    return 3 * fwd if training else fwd


def flops_per_token_6n(model_cfg: ModelConfig, vocab_size: int) -> float:
    """Kaplan's approximation C ≈ 6·N per training token, N = parameters a token touches (MoE: active)."""
    return 6.0 * param_counts(model_cfg, vocab_size)["active"]


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak (PaLM, Chowdhery et al. 2022)."""
    if peak_flops_per_s <= 0:
        raise BrlmError(f"peak_flops_per_s={peak_flops_per_s!r}: expected a number > 0")
    return tokens_per_s * flops_per_token / peak_flops_per_s

