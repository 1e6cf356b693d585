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

The formulas live with the models: each family file in brlm/models/ (gpt.py, llama.py, moe.py,
rnn.py) counts its own parameters and FLOPs per component, and this module asks for them through
brlm.models.registry.family(cfg.arch); it adds the conventions (causal context, 3 × forward, 6·N).
"""

from __future__ import annotations

from brlm.config import ModelConfig
from brlm.errors import BrlmError
from brlm.models.registry import family

# Forward FLOPs by component, in the order cost.json lists them; a family's missing ones are 0.
COMPONENTS = ("embeddings", "attention_proj", "attention_scores", "mlp", "router", "recurrent", "lm_head")


def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of a model built from `cfg`: total (tied weights once), embedding, active per token.

    `active` differs from `total` only for MoE (router + top-k experts instead of all experts).
    """
    return family(cfg.arch).param_counts(cfg, vocab_size)


def forward_flops_breakdown(
    cfg: ModelConfig, vocab_size: int, seq_len: int | None = None, attention: str = "causal"
) -> dict[str, float]:
    """Forward FLOPs per token by component (all layers summed), for windows of `seq_len` tokens."""
    counts = family(cfg.arch)
    if attention not in ("causal", "full"):
        raise BrlmError(f"attention={attention!r}: expected 'causal' or 'full'")
    T = seq_len or cfg.block_size
    if T < 1:
        raise BrlmError(f"seq_len={T}: expected an integer >= 1")
    ctx = (T + 1) / 2 if attention == "causal" else float(T)
    out = dict.fromkeys(COMPONENTS, 0.0)  # embeddings stay 0: lookups are gathers
    out.update(counts.forward_flops(cfg, vocab_size, ctx))
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

