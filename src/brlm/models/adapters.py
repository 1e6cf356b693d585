"""PEFT adapters on Hugging Face models, and the fingerprint that ties an adapter to its base.

    fingerprint = base_fingerprint(model)                 # saved in <adapter>/brlm_adapter.json
    model = attach_adapter(hf_model, "runs/sft/adapter", "runs/llama/hf")   # BrlmError on another base

The fingerprint is the architecture, the vocabulary, the width and a hash of the first embedding
rows rounded to bf16 (so a base loaded in fp32 or bf16 matches). LoRA never trains the
embeddings, so the adapted model keeps its base's fingerprint; a different base (another model,
or the Instruct version of the same architecture) fails before PEFT sees mismatched shapes.
Used by brlm.infer.load (`--adapter`) and brlm.posttrain. Needs `pip install 'brlm[hf]'` (peft).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from brlm.errors import BrlmError
from brlm.io.files import read_json

ADAPTER_META = "brlm_adapter.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise BrlmError("LoRA adapters need peft: pip install 'brlm[hf]'") from None
    return peft


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def base_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What identifies a base for its adapters: architecture, sizes and a hash of its first embedding rows."""
    hf = unwrap(model)
    cfg = hf.config
    emb = hf.get_input_embeddings().weight
    rows = emb[: min(64, emb.shape[0])].detach().to("cpu", torch.bfloat16).float().contiguous()
    return {
        "model_type": getattr(cfg, "model_type", None),
        "vocab_size": int(emb.shape[0]),
        "hidden_size": int(emb.shape[1]),
        "num_layers": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None),
        "embedding_sha256": hashlib.sha256(rows.numpy().tobytes()).hexdigest(),
    }


def adapter_folder(path: str | Path) -> Path:
    """An adapter folder, or a post-training run folder holding one in adapter/."""
    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file():
        return p / "adapter"
    if not (p / "adapter_config.json").is_file():
        raise BrlmError(f"--adapter {p}: not a PEFT adapter folder (adapter_config.json missing) nor a post-training run with adapter/")
    return p


def check_fingerprint(adapter_dir: Path, model: nn.Module, base_label: str) -> dict[str, Any]:
    """The adapter's brlm_adapter.json if the base matches; else a BrlmError saying which base it needs."""
    adapter_dir = adapter_folder(adapter_dir)
    meta_path = adapter_dir / ADAPTER_META
    meta = read_json(meta_path) if meta_path.is_file() else {}
    want = meta.get("base_fingerprint")
    if want is not None:
        have = base_fingerprint(model)
        if have != want:
            diff = [k for k in want if want.get(k) != have.get(k)]
            raise BrlmError(f"--adapter {adapter_dir}: trained on a different base ({meta.get('base', '?')}); "
                            f"{base_label} differs in {', '.join(diff)}: pass the base it was trained on")
    return meta


def attach_adapter(model: nn.Module, adapter: str | Path, base_label: str, trainable: bool = False) -> nn.Module:
    """`model` with the adapter applied (a PeftModel), after checking the adapter's base fingerprint."""
    import warnings

    peft = _peft()
    adapter_dir = adapter_folder(adapter)
    check_fingerprint(adapter_dir, model, base_label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PEFT asks is_gradient_checkpointing (renamed in transformers 5)
            return peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise BrlmError(f"--adapter {adapter_dir}: cannot apply it to {base_label} ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None
