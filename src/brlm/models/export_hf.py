"""brlm checkpoints as Hugging Face transformers folders (`brlm export hf RUN --out DIR`).

Each family maps onto the transformers class whose forward pass is the same function, weight for
weight, or is refused with a BrlmError that says why (EXPORTERS, keyed by arch):

* gpt -> GPT2LMHeadModel. brlm's MLP uses exact (erf) GELU, so `activation_function="gelu"`,
  not GPT-2's tanh "gelu_new". GPT-2's Conv1D stores (in, out): weights are transposed. GPT-2 always
  has biases; with `model.bias=false` they are written as zeros, which is the same function
  (fine-tuning in transformers would then train them).
* llama -> LlamaForCausalLM (RoPE base, RMSNorm eps, GQA heads, tied or untied head). With
  `model.qk_norm=true` -> Qwen3ForCausalLM instead: Llama has no qk-norm, and Qwen3 RMS-normalises
  each query / key head over head_dim before RoPE with eps=rms_norm_eps, exactly as brlm does.
* moe -> MixtralForCausalLM: softmax over all experts in fp32, top-k, weights renormalised over the
  chosen k, SwiGLU experts, no shared expert, no capacity limit: brlm's MoEFFN. With qk-norm ->
  Qwen3MoeForCausalLM with norm_topk_prob=true and every layer sparse (same routing).
  brlm's auxiliary losses are training-only and do not change the logits. The expert tensors are
  mapped onto transformers 5's fused layout (gate_up_proj / down_proj); save_pretrained writes them
  back per expert (w1 / w2 / w3), the layout older transformers read.
* rnn -> refused: transformers has no LSTM / GRU causal LM.

Dropout is carried where the target has the same sites (GPT-2); Llama-style targets have only
attention dropout, set to 0, since brlm's residual dropout has no counterpart there.

    from brlm.infer.export import export_run          # the run-level workflow around these functions
    manifest = export_run("runs/demo", "runs/demo/hf", checkpoint="best")

Needs `pip install 'brlm[hf]'` (transformers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from brlm.config import ModelConfig
from brlm.errors import BrlmError
from brlm.io.files import read_json, write_json

MANIFEST = "export.json"


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise BrlmError("exporting to Hugging Face needs transformers: pip install 'brlm[hf]'") from None
    return transformers


@dataclass
class HFTarget:
    """One brlm model as a transformers class: its name, config values and state dict (the names
    of the transformers model in memory)."""

    architecture: str
    model_type: str
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]


def _rename(sd: dict[str, torch.Tensor], rules: list[tuple[str, str]], arch: str) -> dict[str, torch.Tensor]:
    """Rename every brlm parameter by the first matching (regex, replacement); a parameter no rule
    knows is an error, so a new brlm weight can never be dropped silently."""
    out = {}
    for name, t in sd.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, repl, name)] = t
                break
        else:
            raise BrlmError(f"model.arch={arch}: parameter {name!r} has no Hugging Face counterpart; cannot export")
    return out


def _common(cfg: ModelConfig, vocab_size: int) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "tie_word_embeddings": cfg.tie_embeddings, "dtype": "float32"}


def _gpt(model: nn.Module, cfg: ModelConfig, vocab_size: int) -> HFTarget:
    sd = dict(model.state_dict())
    if not cfg.bias:
        # GPT-2 cannot drop its biases; zeros compute the same function.
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and m.bias is None and name != "lm_head":
                sd[f"{name}.bias"] = torch.zeros(m.out_features, dtype=m.weight.dtype)
            elif isinstance(m, nn.LayerNorm) and m.bias is None:
                sd[f"{name}.bias"] = torch.zeros(m.normalized_shape, dtype=m.weight.dtype)
    for name in list(sd):
        if re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", name):
            sd[name] = sd[name].t().contiguous()  # Conv1D: (in, out)
    weights = _rename(sd, [(r"lm_head\.weight", "lm_head.weight"), (r"(wte|wpe|ln_f|h\.\d+)\.(.*)", r"transformer.\1.\2")], "gpt")
    config = {
        **_common(cfg, vocab_size),
        "n_positions": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_inner": cfg.ffn_hidden, "activation_function": "gelu", "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
    }
    return HFTarget("GPT2LMHeadModel", "gpt2", config, weights)


_LLAMA_RULES = [
    (r"tok_emb\.weight", "model.embed_tokens.weight"),
    (r"norm\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"layers\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"layers\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"layers\.(\d+)\.attn\.wq\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"layers\.(\d+)\.attn\.wk\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"layers\.(\d+)\.attn\.wv\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"layers\.(\d+)\.attn\.wo\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"layers\.(\d+)\.attn\.(q_norm|k_norm)\.weight", r"model.layers.\1.self_attn.\2.weight"),
    (r"layers\.(\d+)\.ffn\.w1\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"layers\.(\d+)\.ffn\.w3\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"layers\.(\d+)\.ffn\.w2\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]


def _llama_config(cfg: ModelConfig, vocab_size: int) -> dict[str, Any]:
    return {
        **_common(cfg, vocab_size),
        "hidden_size": cfg.n_embd, "intermediate_size": cfg.ffn_hidden, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
        "hidden_act": "silu", "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_base)},
        "rope_theta": float(cfg.rope_base),  # transformers < 5 reads this key
        "attention_bias": False, "attention_dropout": 0.0,
    }


def _llama(model: nn.Module, cfg: ModelConfig, vocab_size: int) -> HFTarget:
    weights = _rename(model.state_dict(), _LLAMA_RULES, "llama")
    config = _llama_config(cfg, vocab_size)
    if cfg.qk_norm:
        config.update(use_sliding_window=False, sliding_window=None)
        return HFTarget("Qwen3ForCausalLM", "qwen3", config, weights)
    return HFTarget("LlamaForCausalLM", "llama", {**config, "mlp_bias": False}, weights)


def _moe(model: nn.Module, cfg: ModelConfig, vocab_size: int) -> HFTarget:
    sd = dict(model.state_dict())
    # transformers keeps experts as 3-D tensors: gate_up_proj (E, 2H, C) = [w1; w3], down_proj (E, C, H) = w2.
    fused: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_layer):
        w1, w3, w2 = ([sd.pop(f"layers.{i}.ffn.experts.{e}.{w}.weight") for e in range(cfg.n_expert)]
                      for w in ("w1", "w3", "w2"))
        fused[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack([torch.cat([a, b]) for a, b in zip(w1, w3)])
        fused[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(w2)
    rules = _LLAMA_RULES + [(r"layers\.(\d+)\.ffn\.router\.weight", r"model.layers.\1.mlp.gate.weight")]
    weights = {**_rename(sd, rules, "moe"), **fused}
    config = {**_llama_config(cfg, vocab_size), "num_experts_per_tok": cfg.expert_top_k,
              "router_aux_loss_coef": cfg.aux_loss_coef, "output_router_logits": False}
    if cfg.qk_norm:
        config.update(num_experts=cfg.n_expert, moe_intermediate_size=cfg.expert_ffn_hidden, norm_topk_prob=True,
                      decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False, sliding_window=None)
        return HFTarget("Qwen3MoeForCausalLM", "qwen3_moe", config, weights)
    config.update(num_local_experts=cfg.n_expert, intermediate_size=cfg.expert_ffn_hidden,
                  router_jitter_noise=0.0, sliding_window=None)
    return HFTarget("MixtralForCausalLM", "mixtral", config, weights)


def _rnn(model: nn.Module, cfg: ModelConfig, vocab_size: int) -> HFTarget:
    raise BrlmError("model.arch=rnn: transformers has no LSTM/GRU causal LM to export to; "
                    "export supports gpt, llama and moe (use `brlm sample` for rnn runs)")


# arch -> f(model, cfg, vocab_size) -> HFTarget. Adding a family means adding its mapping here.
EXPORTERS: dict[str, Callable[[nn.Module, ModelConfig, int], HFTarget]] = {
    "gpt": _gpt,
    "llama": _llama,
    "moe": _moe,
    "rnn": _rnn,
}


def hf_target(model: nn.Module) -> HFTarget:
    cfg: ModelConfig = model.cfg
    if cfg.arch not in EXPORTERS:
        raise BrlmError(f"model.arch={cfg.arch!r}: no Hugging Face export; supported: {', '.join(sorted(EXPORTERS))}")
    return EXPORTERS[cfg.arch](model, cfg, model.vocab_size)


def to_hf(model: nn.Module, token_ids: dict[str, int | None] | None = None) -> nn.Module:
    """The transformers model (eval mode, fp32) computing the same logits as the brlm `model`.

    token_ids: {"bos_token_id", "eos_token_id", "pad_token_id"} for its config (None: not set)."""
    tf = require_transformers()
    target = hf_target(model)
    config = tf.AutoConfig.for_model(target.model_type, **target.config, **(token_ids or {}))
    config.architectures = [target.architecture]
    hf = getattr(tf, target.architecture)(config)
    missing, unexpected = hf.load_state_dict({k: v.detach().float() for k, v in target.weights.items()}, strict=False)
    buffers = {name for name, _ in hf.named_buffers()}  # e.g. GPT-2's causal mask in older transformers
    missing = [m for m in missing if m not in buffers]
    if missing or unexpected:
        raise BrlmError(f"model.arch={model.cfg.arch}: weights do not fit {target.architecture} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return hf.float().eval()


def generation_config(token_ids: dict[str, int | None], sample: dict[str, Any] | None = None) -> dict[str, Any]:
    """generation_config.json values: the special ids and the run's sampling settings (sample.*)."""
    out: dict[str, Any] = {k: v for k, v in token_ids.items() if v is not None}
    if out.get("pad_token_id") is None and "eos_token_id" in out:
        out["pad_token_id"] = out["eos_token_id"]  # no pad token: pad with eos, as GPT-2 does
    s = sample or {}
    if s.get("temperature", 0) > 0:
        out.update(do_sample=True, temperature=s["temperature"])
        if s.get("top_k"):
            out["top_k"] = s["top_k"]
        if s.get("top_p", 1.0) < 1.0:
            out["top_p"] = s["top_p"]
    if s.get("repetition_penalty", 1.0) != 1.0:
        out["repetition_penalty"] = s["repetition_penalty"]
    if s.get("max_new_tokens"):
        out["max_new_tokens"] = s["max_new_tokens"]
    return out


def save_hf_model(model: nn.Module, out_dir: str | Path, token_ids: dict[str, int | None],
                  sample: dict[str, Any] | None = None) -> None:
    """model.safetensors, config.json and generation_config.json for a brlm model in out_dir."""
    tf = require_transformers()
    hf = to_hf(model, token_ids)
    hf.generation_config = tf.GenerationConfig(**generation_config(token_ids, sample))
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()  # no "Writing model shards" bar for a one-file model
    try:
        hf.save_pretrained(str(out_dir))  # safetensors (the default since transformers 4.35; the only format in 5)
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    if not any(Path(out_dir).glob("*.safetensors")):
        raise BrlmError(f"{out_dir}: transformers {tf.__version__} did not write safetensors; need transformers>=4.35")
    config_path = Path(out_dir) / "config.json"
    config = read_json(config_path)
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        # transformers 5 writes the base only inside rope_parameters; 4.x reads the top-level key
        # and would silently fall back to 10000.
        write_json(config_path, {**config, "rope_theta": rope["rope_theta"]})


def special_token_ids(tokenizer_dir: Path) -> dict[str, int | None]:
    from brlm.tokenizers.base import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    pad = getattr(tok, "pad_id", None)
    if pad is None and hasattr(tok, "sp"):
        pad = tok.sp.pad_id()
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
            "pad_token_id": pad if pad is not None and pad >= 0 else None, "vocab_size": tok.vocab_size}
