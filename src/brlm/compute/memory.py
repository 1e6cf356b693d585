"""Memory needed to train (or run) a model: the seeds' arithmetic, then the terms they left out.

    from brlm.compute.memory import resolve_model, estimate_memory
    est = estimate_memory(resolve_model("llama-3.1-8b"), method="lora", dtype="bf16", lora_rank=64)
    est.total_gb, est.terms, est.assumptions

Units: bytes, reported in decimal GB (1 GB = 10⁹ bytes), as the seeds write them (7·10⁹ × 4 B = 28 GB).

Terms (each can be left out with `terms=`; `SEEDS_TERMS` are the ones the seeds counted):

* `weights`      N × bytes(dtype); QLoRA: the quantised linear weights at 4 bits (NF4, 0.5 B/param),
                 embeddings / head / norms in fp32, as PEFT's prepare_model_for_kbit_training (which
                 brlm's QLoRA path runs) upcasts every non-quantised parameter (seeds: all N at 0.5 B).
* `quant_constants` NF4 keeps one fp32 absmax per block of 64 weights (0.5 bit/param); double
                 quantisation stores those as 8-bit with one fp32 constant per 256 blocks
                 (8/64 + 32/(64·256) = 0.127 bit/param) — Dettmers et al. 2023, §3.
* `adapters`     LoRA parameters r·(d_in + d_out) per target matrix (Hu et al. 2021), in fp32. Their
                 activations: each target saves its A output (r per token) for B's gradient; with
                 LoRA dropout also the dropped copy of its input (d_in, in the compute dtype) and
                 the dropout mask (d_in bytes).
* `grads`        one per trainable parameter, in the dtype of that parameter.
* `optimizer`    per trainable parameter: AdamW 8 B (two fp32 moments), 8-bit Adam 2 B, SGD 0 B,
                 SGD with momentum 4 B.
* `activations`  tensors saved for backward, per token per layer, counted from the layer's code
                 (Korthikanti et al. 2022, "Reducing Activation Recomputation", §4, for a GPT layer
                 34·s·b·h bytes at 16 bit = 16 saved elements of width d + 2 dropout-mask bytes); plus
                 the head: for Hugging Face models the logits, their log-softmax and its gradient in
                 fp32 (3·V per token); for brlm's own models, whose head + loss runs in chunks
                 (models/loss.py), the gradient of the hidden states (d per token), the head
                 weight's gradient (V·d fp32) and one chunk of logits. Attention
                 through fused SDPA / flash kernels saves no T×T matrix; `attention_impl="math"`
                 adds it (1 T×T tensor per head, 3 with dropout); "auto" picks math for training with
                 dropout on CPU, where PyTorch's fused kernel has no dropout, and flash otherwise. Gradient checkpointing keeps only each layer's input and recomputes one
                 layer at a time.
* `load_pages`   CPU QLoRA only: the checkpoint's pages of the quantised layers, read once to quantise
                 them. safetensors maps the checkpoint; when the kept (fp32) parameters are views of that
                 map (checkpoint dtype = compute dtype) the map lives on and so do the pages read, in the
                 process's RSS (clean file pages the kernel may drop under pressure, but counted).
* `allocator`    CPU only: glibc's malloc keeps freed heap memory in the process (its mmap threshold
                 rises to 32 MiB after the first large frees, so every smaller tensor comes from the
                 heap, whose holes are not returned). Budgeted as ALLOCATOR_SHARE (50 %) of the
                 activations held in tensors under 32 MiB (the full-logits buffers of an HF loss are
                 above it at real vocabularies and go back to the OS on free). Measured: 26–104 % of
                 those activations (bench_memory.py and bench_posttrain.py, several sizes); with
                 MALLOC_MMAP_THRESHOLD_=131072 the peak RSS tracks the other terms alone.
* `kv_cache`     generation only: 2 · n_layer · n_kv_head · head_dim · T · batch × bytes(dtype).
* `runtime`      CUDA context, cuBLAS workspace and allocator slack: assumed 0.5 GB on a GPU
                 (0 on CPU, where the Python + torch process is measured separately).
* `overhead`     a flat figure the user (or the seeds, 8 GB for 70B QLoRA) adds.

The per-architecture parts live with the models: each family file in brlm/models/ counts its
parameters, the activations one of its layers saves and its LoRA targets; this module asks for them
through brlm.models.registry.family(cfg.arch).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from brlm.compute.flops import param_counts
from brlm.config import ModelConfig
from brlm.errors import BrlmError
from brlm.models.registry import FAMILIES, family

GB = 1e9
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_BYTES = {"adamw": 8, "adam8bit": 2, "sgd": 0, "sgd-momentum": 4, "none": 0}
METHODS = ("full", "lora", "qlora", "inference")
ALL_TERMS = ("weights", "quant_constants", "load_pages", "adapters", "grads", "optimizer", "activations", "kv_cache",
             "runtime", "allocator")
SEEDS_TERMS = ("weights", "adapters", "grads", "optimizer")
CUDA_RUNTIME_GB = 0.5
# glibc: the dynamic mmap threshold tops out at 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit); smaller
# blocks come from the heap, which keeps freed memory. Share of those activations budgeted for it (CPU).
GLIBC_MMAP_MAX = 32 * 2**20
ALLOCATOR_SHARE = 0.5
NF4_BYTES = 0.5
NF4_CONST_BYTES = {False: 32 / 64 / 8, True: (8 / 64 + 32 / (64 * 256)) / 8}  # per quantised param

# Published architectures (config.json of each Hugging Face repo).
KNOWN: dict[str, tuple[dict[str, Any], int]] = {
    "llama-2-7b": (dict(n_layer=32, n_head=32, n_embd=4096, mlp_hidden=11008, block_size=4096), 32000),
    "llama-2-13b": (dict(n_layer=40, n_head=40, n_embd=5120, mlp_hidden=13824, block_size=4096), 32000),
    "llama-2-70b": (dict(n_layer=80, n_head=64, n_kv_head=8, n_embd=8192, mlp_hidden=28672, block_size=4096), 32000),
    "llama-3.1-8b": (dict(n_layer=32, n_head=32, n_kv_head=8, n_embd=4096, mlp_hidden=14336, block_size=8192), 128256),
    "llama-3.1-70b": (dict(n_layer=80, n_head=64, n_kv_head=8, n_embd=8192, mlp_hidden=28672, block_size=8192), 128256),
    "llama-3.2-1b": (dict(n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, mlp_hidden=8192, block_size=8192, tie_embeddings=True), 128256),
    "llama-3.2-3b": (dict(n_layer=28, n_head=24, n_kv_head=8, n_embd=3072, mlp_hidden=8192, block_size=8192, tie_embeddings=True), 128256),
    "mistral-7b": (dict(n_layer=32, n_head=32, n_kv_head=8, n_embd=4096, mlp_hidden=14336, block_size=8192), 32000),
}
GPT2 = {"gpt2": (dict(n_layer=12, n_head=12, n_embd=768, block_size=1024), 50257)}
# Each table with the config its models share; trained through transformers, whose loss holds the full logits.
PUBLISHED = ((KNOWN, dict(arch="llama", bias=False, tie_embeddings=False)), (GPT2, dict(arch="gpt")))


@dataclass
class ModelSpec:
    """A model to estimate: an architecture (config + vocabulary) or only a parameter count."""

    name: str
    n_params: int
    cfg: ModelConfig | None = None
    vocab_size: int = 0
    micro_batch: int = 1  # a preset's train.batch_size
    fused_loss: bool = False  # brlm's chunked head + loss (no (B, T, V) logits); False: HF-style loss
    checkpoint_dtype: str = ""  # the weights' dtype on disk (config.json), when known: fp32 / bf16 / fp16


def parse_size(text: str) -> int:
    """'7b' / '70B' / '125m' / '8e9' / '8000000000' -> parameter count."""
    m = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)\s*", text.lower())
    if not m:
        raise BrlmError(f"model {text!r}: expected a size (7b, 125m, 8e9), a known architecture ({', '.join(KNOWN)}) or a brlm preset")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2)]
    if value <= 0:
        raise BrlmError(f"model {text!r}: the size must be > 0")
    return int(round(value))


def spec_from_config(name: str, cfg: ModelConfig, vocab_size: int, fused_loss: bool = True) -> ModelSpec:
    """A brlm model (fused_loss=True: trained through models/loss.py) or a published architecture."""
    return ModelSpec(name, param_counts(cfg, vocab_size)["total"], cfg, vocab_size, fused_loss=fused_loss)


def resolve_model(text: str) -> ModelSpec:
    """A known architecture name, a brlm preset (`demo`, `demo:tiny`) or a size (`7b`)."""
    key = text.strip().lower()
    for table, defaults in PUBLISHED:
        if key in table:
            fields, vocab = table[key]
            return spec_from_config(key, ModelConfig(dropout=0.0, **{**defaults, **fields}), vocab, fused_loss=False)
    from brlm.config import list_presets, load_config, read_preset

    preset, _, scale = key.partition(":")
    if preset in list_presets() and (read_preset(preset).get("workflow") or "pretrain") == "pretrain":
        cfg = load_config(preset=preset, scale=scale or None)
        spec = spec_from_config(f"{preset}:{cfg.scale}", cfg.model, cfg.tokenizer.vocab_size)
        spec.micro_batch = cfg.train.batch_size
        return spec
    return ModelSpec(text.strip(), parse_size(text))


# ---------------------------------------------------------------------------------------------
# LoRA

LORA_TARGET_SETS = {"qv": "q,v", "attn": "q,k,v,o", "all": "q,k,v,o,gate,up,down"}


def lora_params(d_in: int, d_out: int, rank: int) -> int:
    """Trainable parameters of one LoRA pair B (d_out×r) · A (r×d_in): r·(d_in + d_out)."""
    return rank * (d_in + d_out)


def lora_target_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    """target -> (d_in, d_out, matrices per layer) for the linear layers LoRA can wrap."""
    targets = family(cfg.arch).lora_targets
    if targets is None:
        able = [name for name, f in FAMILIES.items() if f.lora_targets is not None]
        raise BrlmError(f"model.arch={cfg.arch!r}: LoRA targets are defined for {', '.join(able)}")
    return targets(cfg)


def parse_targets(targets: str) -> list[str]:
    names = [t.strip() for t in LORA_TARGET_SETS.get(targets, targets).split(",") if t.strip()]
    valid = {"q", "k", "v", "o", "gate", "up", "down"}
    bad = [t for t in names if t not in valid]
    if bad or not names:
        raise BrlmError(f"--lora-targets {targets!r}: expected a comma list of {', '.join(sorted(valid))} or one of {', '.join(LORA_TARGET_SETS)}")
    return names


def lora_trainable_params(cfg: ModelConfig, rank: int, targets: str = "qv") -> int:
    shapes = lora_target_shapes(cfg)
    total = 0
    for t in parse_targets(targets):
        if t in shapes:
            d_in, d_out, n = shapes[t]
            total += n * lora_params(d_in, d_out, rank)
    return cfg.n_layer * total


def lora_activation_per_token(cfg: ModelConfig, rank: int, targets: str, dropout: float) -> tuple[float, float]:
    """(saved elements, mask bytes) per token per layer that LoRA adds: each target's A output (r),
    and with dropout the dropped input (d_in) and its mask (d_in bytes)."""
    shapes = lora_target_shapes(cfg)
    elements = masks = 0.0
    for t in parse_targets(targets):
        if t in shapes:
            d_in, _, n = shapes[t]
            elements += n * (rank + (d_in if dropout > 0 else 0))
            masks += n * d_in if dropout > 0 else 0
    return elements, masks


# ---------------------------------------------------------------------------------------------
# Activations


def activation_elements_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int, attention_impl: str = "flash",
                                  fused_loss: bool = False, head_trainable: bool = True, compute_bytes: int = 4) -> dict[str, float]:
    """Saved-for-backward elements per token: per layer (all layers), head (fp32), and mask bytes;
    plus `head_fixed_bytes`, memory of the fused loss that does not grow with the tokens. The
    attention form's T×T part is folded into `layer` for a compute dtype of `compute_bytes`."""
    from brlm.models.attention import saved_bytes
    from brlm.models.loss import default_chunk_rows

    a = dict(family(cfg.arch).activations(cfg, seq_len, attention_impl))
    if a.get("attention"):
        a["layer"] += saved_bytes(cfg.n_head, cfg.n_embd, seq_len, attention_impl, cfg.dropout, compute_bytes,
                                  cfg.kv_heads) / compute_bytes
    if fused_loss:
        # The head weight's gradient (fp32; none when LoRA freezes the head) and one chunk of logits.
        head_fixed = 4.0 * vocab_size * a["head_width"] * head_trainable + 4.0 * default_chunk_rows(vocab_size) * vocab_size
        head = a["head"]  # d(loss)/d(hidden) is kept by the fused loss instead of the logits
    else:
        head_fixed = 0.0
        head = 3.0 * vocab_size + a["head"]  # logits, log-softmax, their gradient (fp32)
    return {"layer": a["layer"], "layers": cfg.n_layer * a["layer"], "head": head, "mask_bytes": a["mask_bytes"],
            "head_fixed_bytes": head_fixed}


# ---------------------------------------------------------------------------------------------
# The estimate


@dataclass
class MemoryEstimate:
    model: str
    method: str
    n_params: int
    trainable_params: int
    terms: dict[str, float]  # bytes
    settings: dict[str, Any]
    assumptions: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> float:
        return sum(self.terms.values())

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GB

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["terms_gb"] = {k: v / GB for k, v in self.terms.items()}
        d["total_gb"] = self.total_gb
        return d


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise BrlmError(f"{name}={value!r}: expected one of {', '.join(choices)}")


ATTENTION_IMPLS = ("auto", "flash", "math", "plain")


def _auto_attention(model: ModelSpec, method: str, dtype: str, seq_len: int | None, micro_batch: int,
                    device: str) -> tuple[str, str | None]:
    """The attention form a run of this shape would train with, and a note saying why. On CPU the
    trainer takes the plain form where choose_attention_plan measured it faster on this machine
    (read from its cache here, not measured); otherwise PyTorch's fused kernel, which has no
    dropout on CPU and so takes its math path when training with dropout."""
    cfg = model.cfg
    if cfg is None or method == "inference" or device != "cpu":
        return "flash", None
    fused = "math" if cfg.dropout > 0 else "flash"
    if method == "full" and dtype in ("fp32", "bf16"):
        import torch

        from brlm.models.attention import measured_form

        T = seq_len or cfg.block_size
        form = measured_form(micro_batch, cfg.n_head, T, cfg.head_dim, cfg.n_layer,
                             torch.float32 if dtype == "fp32" else torch.bfloat16)
        if form == "plain":
            return "plain", "attention: the plain form (q·kᵀ, softmax, ·v in the compute dtype), which training measured faster on this machine"
        if form is None:
            note = ("attention: no measured plan for this shape on this machine; where training measures "
                    "the plain form faster it takes it (estimate with --attention plain for that case)")
            return fused, note
    return fused, None


def estimate_memory(
    model: ModelSpec,
    method: str = "full",
    dtype: str = "fp32",
    optimizer: str = "adamw",
    lora_rank: int = 8,
    lora_targets: str = "qv",
    lora_dropout: float = 0.0,
    lora_params_override: int | None = None,
    double_quant: bool = True,
    seq_len: int | None = None,
    micro_batch: int = 1,
    checkpointing: bool = False,
    attention_impl: str = "auto",
    device: str = "cuda",
    terms: tuple[str, ...] = ALL_TERMS,
    overhead_gb: float = 0.0,
) -> MemoryEstimate:
    _check_choice("--method", method, METHODS)
    _check_choice("--dtype", dtype, tuple(DTYPE_BYTES))
    _check_choice("--optimizer", optimizer, tuple(OPTIMIZER_BYTES))
    _check_choice("--attention", attention_impl, ATTENTION_IMPLS)
    auto_note = None
    if attention_impl == "auto":
        attention_impl, auto_note = _auto_attention(model, method, dtype, seq_len, micro_batch, device)
    for name, value in (("--lora-rank", lora_rank), ("--micro-batch", micro_batch)):
        if value < 1:
            raise BrlmError(f"{name}={value}: expected an integer >= 1")
    if overhead_gb < 0:
        raise BrlmError(f"--overhead-gb={overhead_gb}: expected a number >= 0")
    cfg, N = model.cfg, model.n_params
    T = seq_len or (cfg.block_size if cfg else 2048)
    if T < 1:
        raise BrlmError(f"--seq-len={T}: expected an integer >= 1")
    bpp = DTYPE_BYTES[dtype]
    notes: list[str] = ["1 GB = 1e9 bytes"]
    out: dict[str, float] = dict.fromkeys(ALL_TERMS, 0.0)

    # Trainable parameters and weights.
    adapters = 0
    if method in ("lora", "qlora"):
        if lora_params_override is not None:
            adapters = int(lora_params_override)
        elif cfg is not None:
            adapters = lora_trainable_params(cfg, lora_rank, lora_targets)
        else:
            raise BrlmError(f"model {model.name!r}: LoRA parameters need an architecture (a known name or a preset) or --lora-params")
    trainable = N if method == "full" else adapters if method in ("lora", "qlora") else 0

    if method == "qlora":
        if cfg is not None:
            # bitsandbytes quantises the Linear layers of the blocks; embeddings, head and norms stay bf16.
            p = param_counts(cfg, model.vocab_size)
            kept = p["embedding"] + (0 if cfg.tie_embeddings else model.vocab_size * cfg.n_embd)
            kept += cfg.n_layer * 2 * cfg.n_embd + cfg.n_embd
            quantised = N - kept
            notes.append("QLoRA: linear layers of the blocks in NF4; embeddings, LM head and norms in fp32 "
                         "(PEFT's k-bit preparation upcasts them)")
        else:
            quantised, kept = N, 0
            notes.append("QLoRA without an architecture: all parameters at 4 bits (the seeds' arithmetic)")
        out["weights"] = quantised * NF4_BYTES + kept * 4
        if device == "cpu" and kept and model.checkpoint_dtype == dtype:
            out["load_pages"] = quantised * DTYPE_BYTES[model.checkpoint_dtype]
            notes.append(f"CPU: the checkpoint's {model.checkpoint_dtype} pages of the quantised layers stay mapped "
                         "(the kept parameters are views of the checkpoint's memory map)")
        out["quant_constants"] = quantised * NF4_CONST_BYTES[double_quant]
    else:
        out["weights"] = N * bpp
    if method in ("lora", "qlora"):
        out["adapters"] = adapters * 4
        notes.append("LoRA adapters, their gradients and optimizer states in fp32")
    grad_bytes = bpp if method == "full" else 4
    out["grads"] = trainable * grad_bytes
    out["optimizer"] = trainable * OPTIMIZER_BYTES[optimizer]

    # Activations and the KV cache need an architecture.
    act_bytes = bpp  # activations in the compute dtype (for QLoRA: the bf16/fp16 compute dtype)
    if cfg is not None and method != "inference":
        a = activation_elements_per_token(cfg, model.vocab_size, T, attention_impl, model.fused_loss,
                                          head_trainable=method == "full", compute_bytes=act_bytes)
        layer, mask_bytes = a["layer"], a["mask_bytes"]
        if method in ("lora", "qlora") and lora_params_override is None:
            extra, extra_masks = lora_activation_per_token(cfg, lora_rank, lora_targets, lora_dropout)
            layer += extra
            mask_bytes += cfg.n_layer * extra_masks if not checkpointing else extra_masks
            notes.append(f"LoRA activations: A outputs{' + dropped inputs and masks' if lora_dropout > 0 else ''}")
        tokens = micro_batch * T
        if checkpointing:
            layers = cfg.n_layer * cfg.n_embd + layer  # each layer's input + one layer recomputed
            notes.append("gradient checkpointing: each layer's input kept, one layer recomputed at a time")
        else:
            layers = cfg.n_layer * layer
        out["activations"] = tokens * (layers * act_bytes + a["head"] * 4 + mask_bytes) + a["head_fixed_bytes"]
        if device == "cpu":
            # The heap holds every activation tensor under glibc's 32 MiB mmap ceiling; the full logits of an
            # HF loss (one (B·T, V) fp32 tensor each) go above it at real vocabularies and back to the OS.
            logits = 0.0 if model.fused_loss else 3.0 * model.vocab_size * 4 * tokens
            heap = out["activations"] - (logits if logits / 3 >= GLIBC_MMAP_MAX else 0.0)
            out["allocator"] = ALLOCATOR_SHARE * heap
            notes.append(f"CPU: glibc allocator allowance {ALLOCATOR_SHARE:.0%} of the activations held on its heap "
                         "(none with MALLOC_MMAP_THRESHOLD_=131072)")
        if auto_note:
            notes.append(auto_note)
        notes.append(f"activations for micro-batch {micro_batch} × {T} tokens, {attention_impl} attention, in {act_bytes} B/element; "
                     + ("chunked head + loss (no full logits)" if model.fused_loss else "logits in fp32"))
    elif method != "inference":
        notes.append("activations not counted: give an architecture (known name or preset) for them")
    if method == "inference":
        if cfg is None:
            raise BrlmError(f"model {model.name!r}: the KV cache needs an architecture (a known name or a preset)")
        out["kv_cache"] = 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * T * micro_batch * bpp
        out["activations"] = micro_batch * (model.vocab_size * 4 + 4 * cfg.n_embd * bpp)  # one step's logits
        notes.append(f"KV cache for {micro_batch} sequence(s) of {T} tokens in {dtype}")
    if device == "cuda":
        out["runtime"] = CUDA_RUNTIME_GB * GB
        notes.append(f"CUDA context + cuBLAS workspace + allocator slack assumed {CUDA_RUNTIME_GB} GB")

    kept_terms = {k: v for k, v in out.items() if k in terms}
    left_out = [k for k in ALL_TERMS if k not in terms]
    if left_out:
        notes.append("left out on request: " + ", ".join(left_out))
    if overhead_gb:
        kept_terms["overhead"] = overhead_gb * GB
    settings = dict(method=method, dtype=dtype, optimizer=optimizer, seq_len=T, micro_batch=micro_batch,
                    checkpointing=checkpointing, attention_impl=attention_impl, device=device)
    if method in ("lora", "qlora"):
        settings.update(lora_rank=lora_rank, lora_targets=lora_targets, lora_dropout=lora_dropout)
    if method == "qlora":
        settings["double_quant"] = double_quant
    return MemoryEstimate(model.name, method, N, trainable, kept_terms, settings, notes)
