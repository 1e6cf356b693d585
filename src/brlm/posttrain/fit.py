"""Will this post-training run fit? `brlm estimate`'s memory model, asked before the base is loaded.

    est = fit_check(folder, cfg, device)     # the estimate; BrlmError with the figures if it does not fit

The base's config.json is mapped onto brlm's ModelConfig (Llama-style and GPT-2 models; others
are counted by parameters only), so brlm.compute.memory counts weights (NF4 + constants for
QLoRA), adapters, gradients, AdamW states and activations (with or without checkpointing, with
brlm's fused loss or the full logits) exactly as `brlm estimate memory` prints them; on CPU also
the checkpoint pages QLoRA keeps mapped and glibc's allocator allowance (brlm.compute.memory). The same
mapping gives the FLOPs per token of the cost ledger (brlm.compute.flops).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from brlm.compute import memory as mem
from brlm.compute.flops import forward_flops_per_token, param_counts
from brlm.config import ModelConfig
from brlm.config.posttrain import PosttrainConfig
from brlm.errors import BrlmError, ConfigError
from brlm.io.files import read_json

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
TARGET_NAMES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                "down_proj": "down", "c_attn": "q,k,v", "c_proj": "o,down", "c_fc": "up"}


def model_config_from_hf(hf: dict[str, Any], seq_len: int) -> tuple[ModelConfig, int] | None:
    """(brlm ModelConfig, vocab size) for the architectures brlm can count; None for others."""
    kind = hf.get("model_type")
    try:
        if kind in LLAMA_LIKE:
            heads = int(hf["num_attention_heads"])
            cfg = ModelConfig(arch="llama", n_layer=int(hf["num_hidden_layers"]), n_head=heads,
                              n_kv_head=int(hf.get("num_key_value_heads") or heads), n_embd=int(hf["hidden_size"]),
                              mlp_hidden=int(hf["intermediate_size"]), block_size=seq_len, dropout=0.0, bias=False,
                              tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qk_norm=kind == "qwen3")
            return cfg, int(hf["vocab_size"])
        if kind == "gpt2":
            cfg = ModelConfig(arch="gpt", n_layer=int(hf["n_layer"]), n_head=int(hf["n_head"]), n_embd=int(hf["n_embd"]),
                              mlp_hidden=int(hf.get("n_inner") or 4 * int(hf["n_embd"])), block_size=seq_len,
                              dropout=0.0, tie_embeddings=bool(hf.get("tie_word_embeddings", True)))
            return cfg, int(hf["vocab_size"])
    except (KeyError, TypeError, ValueError, ConfigError):
        return None
    return None


def estimate_targets(target_modules: str) -> str:
    if target_modules.strip() == "all-linear":
        return "all"
    out: list[str] = []
    for name in target_modules.split(","):
        for t in TARGET_NAMES.get(name.strip(), "").split(","):
            if t and t not in out:
                out.append(t)
    return ",".join(out) or "all"


def _weights_params(folder: Path) -> int | None:
    """Parameter count from safetensors headers (no tensor is read)."""
    try:
        from safetensors import safe_open
    except ImportError:
        return None
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                total += int(torch.Size(st.get_slice(k).get_shape()).numel())
    return total


HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def model_spec(folder: Path, seq_len: int, fused_loss: bool) -> mem.ModelSpec:
    hf = read_json(folder / "config.json")
    mapped = model_config_from_hf(hf, seq_len)
    name = str(folder)
    if mapped is not None:
        cfg, vocab = mapped
        stored = HF_DTYPES.get(str(hf.get("dtype") or hf.get("torch_dtype") or ""), "")
        return mem.ModelSpec(name, param_counts(cfg, vocab)["total"], cfg, vocab, fused_loss=fused_loss,
                             checkpoint_dtype=stored)
    n = _weights_params(folder)
    if n is None:
        raise BrlmError(f"{folder}: cannot count the model's parameters for the fit check; set train.fit_check=false")
    return mem.ModelSpec(name, n)


def train_flops_per_token(folder: Path, cfg: PosttrainConfig, trainable: int, n_params: int) -> tuple[float, float]:
    """(training FLOPs per token, forward FLOPs per token). Frozen weights cost forward + the
    gradient of their input (2 x forward); trained ones add their weight gradient (3 x forward);
    LoRA adapters are 6 FLOPs per parameter per token. Attention scores are counted for the
    architectures brlm maps (others: 2 FLOPs per parameter forward)."""
    hf = read_json(folder / "config.json")
    mapped = model_config_from_hf(hf, cfg.finetune.seq_len)
    fwd = forward_flops_per_token(*mapped) if mapped is not None else 2.0 * n_params
    if cfg.finetune.method == "full":
        return 3.0 * fwd, fwd
    return 2.0 * fwd + 6.0 * trainable, fwd


def device_capacity(cfg: PosttrainConfig, device: torch.device) -> tuple[float, str]:
    if cfg.train.memory_limit_gb > 0:
        return cfg.train.memory_limit_gb * mem.GB, f"{cfg.train.memory_limit_gb:g} GB (train.memory_limit_gb)"
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return float(total), f"{torch.cuda.get_device_name(device)}: {total / mem.GB:.1f} GB"
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return float(pages * size), f"this machine's RAM: {pages * size / mem.GB:.1f} GB"
    except (ValueError, OSError, AttributeError):
        return float("inf"), "unknown RAM"


def estimate(spec: mem.ModelSpec, cfg: PosttrainConfig, device: torch.device, **changes: Any) -> mem.MemoryEstimate:
    fc, tc = cfg.finetune, cfg.train
    method = changes.pop("method", fc.method)
    dtype = "bf16" if fc.dtype in ("bf16", "fp16") or (fc.dtype == "auto" and device.type == "cuda") else "fp32"
    kw: dict[str, Any] = dict(method=method, dtype=dtype, optimizer="adamw", lora_rank=cfg.lora.r,
                              lora_targets=estimate_targets(cfg.lora.target_modules), lora_dropout=cfg.lora.dropout, double_quant=cfg.quant.double_quant,
                              seq_len=fc.seq_len, micro_batch=tc.batch_size * (2 if fc.task == "dpo" else 1),
                              checkpointing=tc.gradient_checkpointing, device="cuda" if device.type == "cuda" else "cpu")
    if spec.cfg is None and method in ("lora", "qlora"):
        kw["lora_params_override"] = 0  # unknown architecture: adapters are small next to the base
    kw.update(changes)
    return mem.estimate_memory(spec, **kw)


def fit_check(folder: Path, cfg: PosttrainConfig, device: torch.device) -> dict[str, Any]:
    """The estimate for this run; a BrlmError with the figures and the changes that would fit when it does not."""
    spec = model_spec(folder, cfg.finetune.seq_len, cfg.finetune.fused_loss)
    capacity, where = device_capacity(cfg, device)
    est = estimate(spec, cfg, device)
    out = {"fits": est.total_bytes <= capacity, "capacity_bytes": capacity, "capacity": where, "estimate": est.to_dict()}
    if out["fits"]:
        return out
    options = []
    if cfg.train.batch_size > 1:
        options.append(("train.batch_size=1", dict(micro_batch=1)))
    if not cfg.train.gradient_checkpointing:
        options.append(("train.gradient_checkpointing=true", dict(checkpointing=True)))
    if cfg.finetune.method != "qlora" and spec.cfg is not None:
        options.append(("finetune.method=qlora", dict(method="qlora")))
    options.append((f"finetune.seq_len={cfg.finetune.seq_len // 2}", dict(seq_len=max(8, cfg.finetune.seq_len // 2))))
    both = dict(micro_batch=1, checkpointing=True, **({"method": "qlora"} if spec.cfg is not None else {}))
    options.append(("batch 1 + checkpointing + qlora", both))
    fits = []
    for label, change in options:
        e = estimate(spec, cfg, device, **change)
        if e.total_bytes <= capacity:
            fits.append(f"{label} ({e.total_gb:.2f} GB)")
    terms = ", ".join(f"{k} {v / mem.GB:.2f}" for k, v in est.terms.items() if v)
    hint = f"would fit with {'; '.join(fits)}" if fits else "nothing here fits: a bigger device or a smaller model"
    raise BrlmError(f"{spec.name}: needs ~{est.total_gb:.2f} GB ({terms} GB) but {where}; {hint} "
                    "(or train.fit_check=false to try anyway)")
