"""One loader for every verb: a brlm run folder or a local Hugging Face model folder ->
(model, tokenizer, metadata).

    from brlm.infer.load import load_model
    lm = load_model("runs/demo", checkpoint="best", device="cpu")
    lm.model(idx)                       # brlm's protocol: (logits (B, T, V), None)
    lm.tokenizer.encode("Olá")          # encode / decode / token_bytes / piece / eos_id
    lm.meta["step"], lm.meta["tokenizer_sha256"]

`model` answers like brlm's own models whatever it came from, so sampling, guardrails and the
intrinsic evaluation never ask where a model came from. A run is recognised by its
`checkpoints/` and `tokenizer/` folders, a Hugging Face folder by its `config.json`.

Two options every verb gets through here:
* `adapter=DIR`: a PEFT (LoRA) adapter folder, merged into the base's weights after loading (the
  base is a Hugging Face folder, or a run converted in memory to its `brlm export hf` model);
* `quantize="int8"`: dynamic int8 linears for CPU inference (brlm.infer.quantize), applied last so
  it sees the merged weights; `meta["quantize"]` records it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from brlm.errors import BrlmError
from brlm.io.files import read_manifest
from brlm.io.run_folder import RunPaths
from brlm.models.checkpoint import load_checkpoint
from brlm.tokenizers.base import Tokenizer, load_tokenizer


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Tokenizer
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta["kind"]


def is_run_folder(path: str | Path) -> bool:
    p = RunPaths(Path(path))
    return p.checkpoints.is_dir() or p.config.is_file()


def is_hf_folder(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> LoadedModel:
    """A brlm run's checkpoint (`best`, `last` or a step) and its tokenizer."""
    paths = RunPaths(Path(run_dir))
    model, meta = load_checkpoint(paths.checkpoints, checkpoint, device=str(device))
    tok = load_tokenizer(paths.tokenizer)  # verifies the model file against the tokenizer's manifest
    trained_with, have = meta.get("tokenizer_sha256"), (read_manifest(paths.tokenizer) or {}).get("sha256")
    if trained_with and have and trained_with != have:
        raise BrlmError(f"{paths.tokenizer}: tokenizer {have[:12]} is not the one checkpoint {meta.get('step')} was trained "
                        f"with ({trained_with[:12]}); retrain the model (`brlm train`) or restore that tokenizer")
    return LoadedModel(model, tok, {**meta, "kind": "run", "source": str(paths.root), "checkpoint": checkpoint})


def load_hf_folder(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A local Hugging Face causal LM folder (offline), wrapped in brlm's protocols."""
    from brlm.models.hf import load_hf

    model, tok = load_hf(folder, device)
    vocab = sorted(tok.tok.get_vocab().items())
    sha = hashlib.sha256(str(vocab).encode()).hexdigest()
    source = str(Path(folder).resolve())
    return LoadedModel(model, tok, {"kind": "hf", "source": source, "checkpoint": f"hf:{source}", "step": None,
                                    "tokenizer_sha256": f"hf:{sha}"})


def attach_adapter(lm: LoadedModel, adapter: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """`lm` with a PEFT adapter merged in. A run's model goes through its Hugging Face form (the
    names PEFT adapters are trained on, brlm.models.export_hf.to_hf); its tokenizer is unchanged."""
    from brlm.models.hf import HFCausalLM, merge_peft_adapter

    model = lm.model
    if lm.kind == "run":
        from brlm.models.export_hf import to_hf

        tok = lm.tokenizer
        pad = getattr(tok, "pad_id", None)
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
               "pad_token_id": pad if pad is not None and pad >= 0 else None}
        model = HFCausalLM(to_hf(model, ids))
    model.model = merge_peft_adapter(model.model, adapter)
    return LoadedModel(model.to(device).eval(), lm.tokenizer, {**lm.meta, "adapter": str(Path(adapter).resolve())})


def load_model(source: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
               adapter: str | Path | None = None, quantize: str | None = None) -> LoadedModel:
    """A brlm run folder or a local Hugging Face folder, whichever `source` is; optionally with a
    PEFT adapter merged in and / or quantised (see the module docstring)."""
    p = Path(source)
    if not p.exists():
        raise BrlmError(f"{p}: model not found (expected a brlm run folder or a Hugging Face model folder)")
    if is_run_folder(p):
        lm = load_run(p, checkpoint, device)
    elif is_hf_folder(p):
        lm = load_hf_folder(p, device)
    else:
        raise BrlmError(f"{p}: neither a brlm run folder (checkpoints/, config.yaml) nor a Hugging Face model folder (config.json)")
    if adapter:
        lm = attach_adapter(lm, adapter, device)
    if quantize:
        from brlm.infer.quantize import quantize_model

        quantize_model(lm.model, quantize)
        lm.meta["quantize"] = quantize
    return lm
