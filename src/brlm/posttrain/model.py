"""The model side of post-training: which base, loaded how, with which adapters.

    folder, origin = resolve_base("runs/llama-tiny")      # a brlm run is exported to <run>/hf first
    check_base_folder(folder)                             # weights and tokenizer present, or one line
    model = load_base(folder, cfg)                         # NF4 + double quant for qlora (bitsandbytes)
    model = add_lora(model, cfg.lora)                      # PEFT; unknown module -> lists the linear ones
    save_adapter(model, "runs/sft/adapter", info)          # + brlm_adapter.json: the base's fingerprint
    merged = merge_adapter(folder, "runs/sft/adapter", "runs/sft/merged")

`--base` is a brlm run (exported once with brlm.models.export_hf, reused while its checkpoint is
unchanged), a post-training run (its merged model), a local Hugging Face folder, or a hub id. Hub
ids are downloaded with huggingface_hub; without the network the error names the id and how to
pass a local folder instead.

An adapter records a fingerprint of the base it was trained on (architecture, vocabulary and a
hash of the first embedding rows, rounded to bf16 so fp32 and bf16 loads agree). Applying it to
another base is a BrlmError saying which base it needs, before PEFT sees mismatched shapes.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from brlm.config.posttrain import FinetuneConfig, LoraConfig, PosttrainConfig, QuantConfig
from brlm.errors import BrlmError, ConfigError
from brlm.io.files import atomic_dir, read_json, write_json
from brlm.io.logging import info
from brlm.models.adapters import ADAPTER_META, attach_adapter, base_fingerprint, unwrap  # noqa: F401 (used by the trainer)
from brlm.posttrain import deps

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Which base


def resolve_base(spec: str, checkpoint: str = "best", key: str = "finetune.base") -> tuple[Path, str]:
    """(local Hugging Face folder, what it is: 'brlm run', 'post-training run', 'folder' or 'hub')."""
    if not spec:
        raise ConfigError(f"{key} is empty: give a brlm run folder, a Hugging Face model folder or a hub id (--base)")
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise BrlmError(f"{key}={spec}: not a folder (expected a brlm run, a Hugging Face model folder or a hub id)")
        if (p / "config.json").is_file():
            return p, "folder"
        if (p / "posttrain.json").is_file() or (p / "adapter").is_dir():
            for sub in ("merged", "model"):
                if (p / sub / "config.json").is_file():
                    return p / sub, "post-training run"
            raise BrlmError(f"{key}={spec}: a post-training run without a merged model; run `brlm finetune merge {spec}` first")
        if (p / "checkpoints").is_dir() and (p / "tokenizer").is_dir():
            return export_brlm_run(p, checkpoint), "brlm run"
        raise BrlmError(f"{key}={spec}: neither a brlm run (checkpoints/, tokenizer/), a post-training run nor a "
                        "Hugging Face model folder (config.json)")
    if HUB_ID.match(spec) and not spec.startswith((".", "/")):
        return download_hub(spec, key), "hub"
    raise BrlmError(f"{key}={spec}: folder not found (expected a brlm run, a Hugging Face model folder or a hub id like owner/name)")


def export_brlm_run(run: Path, checkpoint: str = "best") -> Path:
    """The run's Hugging Face export (<run>/hf), written now unless an export of the same checkpoint is there."""
    from brlm.infer.export import export_run
    from brlm.models.checkpoint import find_checkpoint, verify_checkpoint
    from brlm.models.export_hf import MANIFEST

    out = run / "hf"
    step = find_checkpoint(run / "checkpoints", checkpoint)
    meta = verify_checkpoint(run / "checkpoints", step)
    manifest = out / MANIFEST
    if manifest.is_file():
        m = read_json(manifest)
        if m.get("step") == step and m.get("checkpoint_files") == meta.get("files"):
            return out
    info(f"base: exporting {run} (step {step}) to Hugging Face format in {out}")
    export_run(run, out, checkpoint=str(step))
    return out


def download_hub(repo_id: str, key: str = "finetune.base") -> Path:
    """A hub model from the local cache, else downloaded; offline -> one line saying what to do."""
    try:
        import huggingface_hub as hub
    except ImportError:
        raise BrlmError(f"{key}={repo_id}: a hub id needs huggingface_hub: pip install 'brlm[hf]'") from None
    how = (f"download it where there is network (`hf download {repo_id} --local-dir DIR`, or "
           f"`huggingface-cli download {repo_id} --local-dir DIR`) and pass --base DIR")
    with contextlib.suppress(Exception):
        return Path(hub.snapshot_download(repo_id, local_files_only=True))
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise BrlmError(f"{key}={repo_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {how}")
    try:
        return Path(hub.snapshot_download(repo_id))
    except Exception as e:  # network errors, gated repos, missing repos: all end the same way for the user
        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise BrlmError(f"{key}={repo_id}: cannot download from the Hugging Face Hub ({e.__class__.__name__}: "
                        f"{reason[:160]}); {how}") from None


def check_base_folder(folder: Path, key: str = "finetune.base") -> None:
    """A Hugging Face folder with a config, weights and a tokenizer; else one line naming what is missing."""
    if not (folder / "config.json").is_file():
        raise BrlmError(f"{key}={folder}: not a Hugging Face model folder (config.json missing)")
    if not any((folder / w).is_file() for w in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise BrlmError(f"{key}={folder}: no weights (expected {' or '.join(WEIGHT_FILES[:2])})")
    has_tok = any((folder / t).is_file() for t in TOKENIZER_FILES)
    if not has_tok:
        raise BrlmError(f"{key}={folder}: no tokenizer (expected tokenizer.json or tokenizer.model); a brlm export writes one")


def read_hf_config(folder: Path) -> dict[str, Any]:
    return read_json(folder / "config.json")


# ---------------------------------------------------------------------------------------------
# Loading


def compute_dtype(fc: FinetuneConfig, device: torch.device) -> torch.dtype:
    """finetune.dtype 'auto': bf16 on GPUs that support it, fp32 elsewhere (CPUs emulate bf16 slowly
    unless they have AMX, and fp32 keeps the tiny CPU runs exact)."""
    if fc.dtype != "auto":
        return DTYPES[fc.dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    tf = deps.transformers()
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise BrlmError(f"{folder}: cannot load the tokenizer ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None
    return tok


def pad_id(tok: Any) -> int:
    """Padding never carries a target, so any id works; the tokenizer's pad, else eos."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def quantization_config(qc: QuantConfig, dtype: torch.dtype) -> Any:
    """bitsandbytes 4-bit: NF4 (or FP4) with double quantisation, dequantised to the compute dtype."""
    tf = deps.transformers()
    deps.bitsandbytes()
    compute = dtype if qc.compute_dtype == "auto" else DTYPES[qc.compute_dtype]
    return tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qc.quant_type,
                                 bnb_4bit_use_double_quant=qc.double_quant, bnb_4bit_compute_dtype=compute)


def load_base(folder: Path, cfg: PosttrainConfig, device: torch.device, quantize: bool | None = None) -> nn.Module:
    """The base causal LM on `device`: 4-bit NF4 for qlora (unless quantize=False), else in the compute dtype."""
    tf = deps.transformers()
    fc = cfg.finetune
    dtype = compute_dtype(fc, device)
    kwargs: dict[str, Any] = dict(local_files_only=True, dtype=dtype, attn_implementation=fc.attn_implementation,
                                  trust_remote_code=fc.trust_remote_code)
    if quantize if quantize is not None else fc.method == "qlora":
        kwargs["quantization_config"] = quantization_config(cfg.quant, dtype)
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else str(device)}
    try:
        with quiet_transformers():
            model = tf.AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise BrlmError(f"{folder}: cannot load the model ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None
    if "device_map" not in kwargs:
        model = model.to(device)
    for m in model.modules():
        # bitsandbytes repacks a 4-bit weight for its AVX512-BF16 CPU kernel the first time the layer
        # runs in eval mode without gradients (e.g. a validation pass), dropping double quantisation;
        # that kernel has no autograd, so training after it would silently lose the gradient
        # through the frozen base. Keep the training layout throughout.
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-tensor 'Loading weights' bars from transformers: brlm prints its own progress."""
    tf = deps.transformers()
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers LoRA can wrap (nn.Linear, bitsandbytes 4/8-bit, GPT-2 Conv1D),
    without the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, m in model.named_modules():
        kind = type(m).__name__
        parts = name.split(".")
        if m is head or not name or any(p.startswith("lora_") or p == "base_layer" for p in parts):
            continue  # the pieces inside a LoRA layer are not targets of their own
        if isinstance(m, nn.Linear) or kind in ("Linear4bit", "Linear8bitLt", "Conv1D") or hasattr(m, "base_layer"):
            names.add(parts[-1])
    return sorted(names)


def prepare_for_training(model: nn.Module, cfg: PosttrainConfig) -> nn.Module:
    """Gradient checkpointing (non-reentrant: no input-grad hooks needed) and, for qlora, PEFT's
    k-bit preparation (frozen base, norms and head in fp32)."""
    import warnings

    gc = cfg.train.gradient_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames it activation_checkpointing_*
        if cfg.finetune.method == "qlora":
            peft = deps.peft()
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                         gradient_checkpointing_kwargs={"use_reentrant": False})
        elif gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
    return model


def lora_targets(model: nn.Module, lc: LoraConfig) -> str | list[str]:
    if lc.target_modules.strip() == "all-linear":
        return "all-linear"
    wanted = [t.strip() for t in lc.target_modules.split(",") if t.strip()]
    have = linear_module_names(model)
    head = [n.split(".")[-1] for n, m in model.named_modules() if n and m is model.get_output_embeddings()]
    unknown = [t for t in wanted if t not in have + head]  # the head only when named (all-linear leaves it out)
    if unknown:
        raise ConfigError(f"lora.target_modules: {', '.join(unknown)} not in this model; its linear modules are "
                          f"{', '.join(have)} (or use all-linear)")
    return wanted


def add_lora(model: nn.Module, lc: LoraConfig) -> nn.Module:
    """PEFT LoRA adapters on the target modules; everything else frozen."""
    peft = deps.peft()
    config = peft.LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, bias=lc.bias,
                             target_modules=lora_targets(model, lc), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def build_model(folder: Path, cfg: PosttrainConfig, device: torch.device) -> nn.Module:
    """The model to train: the base (quantised for qlora), prepared, with adapters unless method=full."""
    import warnings

    model = load_base(folder, cfg, device)
    model = prepare_for_training(model, cfg)
    if cfg.finetune.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT asks is_gradient_checkpointing (renamed in transformers 5)
        return add_lora(model, cfg.lora)


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    return unwrap(model)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---------------------------------------------------------------------------------------------
# Fingerprints, adapters, merge


def save_trained(model: nn.Module, out: Path, tok: Any, meta: dict[str, Any],
                 state_dict: dict[str, Any] | None = None) -> None:
    """The adapter (PEFT's adapter_config.json + adapter_model.safetensors), or for full fine-tuning
    the whole model with its tokenizer, plus brlm_adapter.json; written atomically as one folder.
    `state_dict`: the full (gathered) weights of an FSDP-sharded model."""
    with atomic_dir(out) as tmp:
        with quiet_transformers():
            extra = {} if state_dict is None else {"state_dict": state_dict}
            model.save_pretrained(str(tmp), safe_serialization=True, **extra)
        if not hasattr(model, "peft_config"):
            tok.save_pretrained(str(tmp))
        write_json(tmp / ADAPTER_META, meta)


def merge_adapter(base_folder: Path, adapter_dir: Path, out: Path, cfg: PosttrainConfig) -> dict[str, Any]:
    """Base (unquantised, in the compute dtype) + adapter merged into plain weights, written as a
    Hugging Face folder with the base's tokenizer. A QLoRA adapter merges into the full-precision
    base, as the QLoRA paper does; its logits then differ from the NF4 model's by the rounding of NF4."""
    from brlm.io.files import file_sha256

    device = torch.device("cpu")
    base = load_base(base_folder, cfg, device, quantize=False)
    model = attach_adapter(base, adapter_dir, str(base_folder))
    merged = model.merge_and_unload()
    tok = load_tokenizer(base_folder, cfg.finetune.trust_remote_code)
    with atomic_dir(out) as tmp:
        with quiet_transformers():
            merged.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        manifest = {"base": str(base_folder), "adapter": str(adapter_dir),
                    "files": {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
        write_json(tmp / "merge.json", manifest)
    return manifest
