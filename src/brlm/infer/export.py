"""A run as the formats other engines load: a Hugging Face folder (and a GGUF file).

    from brlm.infer.export import export_run
    manifest = export_run("runs/demo", "exported/demo-hf", checkpoint="best")

The model comes through the one loader (brlm.infer.load); the per-family weight and config
mapping is brlm.models.export_hf, the tokenizer conversion brlm.tokenizers.hf. The folder is
written beside its destination and renamed into place (brlm.io.files.atomic_dir).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import brlm
from brlm.errors import BrlmError
from brlm.infer.load import load_run
from brlm.io.files import atomic_dir, file_sha256, read_json, write_json
from brlm.io.run_folder import RunPaths
from brlm.models.checkpoint import checkpoint_steps, find_checkpoint, verify_checkpoint
from brlm.models.export_hf import MANIFEST, hf_target, require_transformers, save_hf_model, special_token_ids
from brlm.tokenizers.hf import save_hf_tokenizer


def export_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "best") -> dict[str, Any]:
    """Export a run's checkpoint (best, last or a step) and tokenizer as a Hugging Face folder
    (default <run>/hf). Returns the manifest written as export.json."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    out = Path(out) if out else paths.root / "hf"
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise BrlmError(f"{out}: exists and is not an earlier export ({MANIFEST} missing); choose another --out")
    step = find_checkpoint(paths.checkpoints, checkpoint)
    if step not in (have := checkpoint_steps(paths.checkpoints)):
        raise BrlmError(f"--checkpoint {checkpoint}: no checkpoint at step {step} in {paths.checkpoints}; have {have}")
    verify_checkpoint(paths.checkpoints, step)  # refuse a truncated or corrupted checkpoint
    lm = load_run(paths.root, str(step))
    model, meta = lm.model, lm.meta
    target = hf_target(model)  # refuses (rnn, unknown arch) before anything is written
    require_transformers()
    ids = special_token_ids(paths.tokenizer)
    tok_vocab = ids.pop("vocab_size")
    if tok_vocab > model.vocab_size:
        raise BrlmError(f"{paths.tokenizer}: tokenizer has {tok_vocab} ids but the model only {model.vocab_size}")
    with atomic_dir(out) as tmp:
        save_hf_model(model, tmp, ids, (meta.get("config") or {}).get("sample"))
        save_hf_tokenizer(paths.tokenizer, tmp, model_max_length=model.cfg.block_size)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        tok_meta = read_json(paths.tokenizer / "tokenizer.json")
        manifest = {
            "source_run": str(paths.root.resolve()),
            "checkpoint": checkpoint,
            "step": step,
            "checkpoint_files": meta.get("files", {}),
            "arch": model.cfg.arch,
            "hf_architecture": target.architecture,
            "model": dataclasses.asdict(model.cfg),
            "vocab_size": model.vocab_size,
            "tokenizer": {"kind": tok_meta.get("kind"), "sha256": tok_meta.get("sha256")},
            "brlm_version": brlm.__version__,
            "transformers_version": require_transformers().__version__,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def export_gguf_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "best",
                    dtype: str = "f16") -> dict[str, Any]:
    """A run's llama checkpoint and SentencePiece tokenizer as one GGUF file (default
    <run>/model-<dtype>.gguf) for llama.cpp / Ollama; brlm.models.export_gguf has the mapping."""
    from brlm.models.export_gguf import gguf_arch, require_gguf, write_gguf
    from brlm.tokenizers.gguf import gguf_vocab

    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    step = find_checkpoint(paths.checkpoints, checkpoint)
    if step not in (have := checkpoint_steps(paths.checkpoints)):
        raise BrlmError(f"--checkpoint {checkpoint}: no checkpoint at step {step} in {paths.checkpoints}; have {have}")
    verify_checkpoint(paths.checkpoints, step)
    lm = load_run(paths.root, str(step))
    gguf_arch(lm.model)  # refuses gpt / moe / rnn before anything else
    require_gguf()
    vocab = gguf_vocab(paths.tokenizer, lm.model.vocab_size)
    out = Path(out) if out else paths.root / f"model-{dtype}.gguf"
    summary = write_gguf(lm.model, vocab, out, dtype, name=paths.root.name,
                         extra={"brlm.source_run": str(paths.root.resolve()), "brlm.step": str(step),
                                "brlm.version": brlm.__version__})
    return {**summary, "out": str(out), "step": step, "bytes": out.stat().st_size}
