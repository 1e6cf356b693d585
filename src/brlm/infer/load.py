"""One loader for every verb: a brlm run folder, a local Hugging Face model folder, or either of
them with a PEFT adapter -> (model, tokenizer, metadata).

    from brlm.infer.load import load_model
    lm = load_model("runs/demo", checkpoint="best", device="cpu")
    lm = load_model("runs/llama", adapter="runs/sft-tiny/adapter")    # base + adapter (brlm finetune)
    lm = load_model("runs/sft-tiny")                                   # a post-training run: its base + adapter
    lm.model(idx)                       # brlm's protocol: (logits (B, T, V), None)
    lm.tokenizer.encode("Olá")          # encode / decode / token_bytes / piece / eos_id
    lm.meta["step"], lm.meta["tokenizer_sha256"]

`model` answers like brlm's own models whatever it came from, so sampling, guardrails and the
intrinsic evaluation never ask where a model came from. A run is recognised by its
`checkpoints/` and `tokenizer/` folders, a Hugging Face folder by its `config.json`, a
post-training run by its `posttrain.json`. An adapter is checked against the base it was trained on
(brlm.models.adapters) and applied to the unquantised base: a QLoRA adapter then runs over the
full-precision weights its NF4 base was rounded from.

`quantize="int8"`: dynamic int8 linears for CPU inference (brlm.infer.quantize), applied last so
it sees the merged adapter weights; `meta["quantize"]` records it.
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

    _engine: Any = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def engine(self, max_batch: int) -> Any:
        """brlm's batched static-cache decode engine for this model, made once per batch size and
        reused (its cache is allocated once); lives and dies with this LoadedModel."""
        from brlm.infer.engine import Engine

        if self._engine is None or self._engine.max_batch != max_batch:
            self._engine = None  # free the old cache before allocating the new one
            self._engine = Engine(self.model, max_batch=max_batch, device=next(self.model.parameters()).device)
        return self._engine


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


def is_posttrain_folder(path: str | Path) -> bool:
    return (Path(path) / "posttrain.json").is_file()


def _hf_base(source: Path, checkpoint: str, device: str | torch.device) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    """(transformers model, tokenizer, meta) of a brlm run (converted in memory) or a Hugging Face folder."""
    if is_run_folder(source) and not is_hf_folder(source):
        from brlm.models.export_hf import to_hf

        lm = load_run(source, checkpoint, device)
        tok = lm.tokenizer
        ids = {"bos_token_id": tok.bos_id if tok.bos_id >= 0 else None, "eos_token_id": tok.eos_id, "pad_token_id": None}
        return to_hf(lm.model, ids).to(device), tok, lm.meta
    lm = load_hf_folder(source, device)
    return lm.model.model, lm.tokenizer, lm.meta


def load_with_adapter(source: str | Path, adapter: str | Path, checkpoint: str = "best",
                      device: str | torch.device = "cpu", merge: bool = True) -> LoadedModel:
    """A base (brlm run or Hugging Face folder) with a PEFT adapter applied; `merge` folds it into
    the weights (same logits, no per-layer adapter cost when decoding)."""
    from brlm.models.adapters import adapter_folder, attach_adapter
    from brlm.models.hf import HFCausalLM

    p = Path(source)
    if not p.exists():
        raise BrlmError(f"{p}: base model not found (expected a brlm run folder or a Hugging Face model folder)")
    adapter_dir = adapter_folder(adapter)
    base, tok, meta = _hf_base(p, checkpoint, device)
    model = attach_adapter(base, adapter_dir, str(p)).to(device).eval()
    if merge:
        model = model.merge_and_unload()
    return LoadedModel(HFCausalLM(model).eval(), tok, {**meta, "adapter": str(adapter_dir.resolve()),
                                                        "checkpoint": f"{meta.get('checkpoint')}+adapter:{adapter_dir}"})


def load_posttrain_run(run: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A post-training run's model: its base with its adapter, or its fully fine-tuned model."""
    from brlm.io.files import read_json

    if (run / "model" / "config.json").is_file():
        return load_hf_folder(run / "model", device)
    base = run / "base.json"
    if not base.is_file():
        raise BrlmError(f"{run}: post-training run without base.json; it has not started training")
    return load_with_adapter(read_json(base)["folder"], run, device=device)


def load_model(source: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
               adapter: str | Path | None = None, quantize: str | None = None) -> LoadedModel:
    """A brlm run folder, a local Hugging Face folder or a post-training run, whichever `source` is;
    with `adapter`, that base with the adapter merged in; with `quantize`, int8 (module docstring)."""
    p = Path(source)
    if not p.exists():
        raise BrlmError(f"{p}: model not found (expected a brlm run folder or a Hugging Face model folder)")
    if adapter is not None:
        lm = load_with_adapter(p, adapter, checkpoint, device)
    elif is_posttrain_folder(p):
        lm = load_posttrain_run(p, device)
    elif is_run_folder(p):
        lm = load_run(p, checkpoint, device)
    elif is_hf_folder(p):
        lm = load_hf_folder(p, device)
    else:
        raise BrlmError(f"{p}: neither a brlm run folder (checkpoints/, config.yaml) nor a Hugging Face model folder (config.json)")
    if quantize:
        from brlm.infer.quantize import quantize_model

        quantize_model(lm.model, quantize)
        lm.meta["quantize"] = quantize
    return lm
