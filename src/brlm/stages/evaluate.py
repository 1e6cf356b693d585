"""The evaluation workflow: stages that read a trained model and write figures into the run folder.

    eval -> sample -> guardrails

Every stage is `stage(cfg, paths) -> dict` (the figures it wrote) and reaches its model through
the one loader, `brlm.infer.load`, so a brlm checkpoint and a Hugging Face folder are scored by
the same code. `brlm run` calls them after training; `brlm eval` and `brlm sample` call one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from brlm.config import RunConfig
from brlm.data.loader import Windows
from brlm.data.prepare import iter_split_texts
from brlm.data.shards import open_shard
from brlm.errors import BrlmError
from brlm.eval.guardrails import aggregate, jsonl_texts, sample_guardrails, training_vocabulary
from brlm.eval.intrinsic import doc_groups, evaluate_windows, read_doc_categories, select_windows, token_chars
from brlm.eval.samples import generate_samples
from brlm.infer.load import LoadedModel, load_hf_folder, load_model, load_run
from brlm.io.files import read_json, read_manifest, write_json
from brlm.io.logging import info
from brlm.io.machine import resolve_device
from brlm.io.run_folder import RunPaths
from brlm.stages.workflow import Stage


def tokenize_documents(tok: Any, texts: list[str]) -> np.ndarray:
    """Documents followed by the end-of-text id, as brlm's shards lay them out."""
    ids: list[int] = []
    for t in texts:
        ids += tok.encode(t) + [tok.eos_id]
    return np.asarray(ids, dtype=np.int64)


def _validation_tokens(cfg: RunConfig, paths: RunPaths, lm: LoadedModel) -> tuple[np.ndarray, str, int]:
    """(tokens, their hash, window length): the run's own shard for a run's model; for any other
    model the validation documents tokenized with that model's tokenizer."""
    if lm.kind == "run":
        return open_shard(paths.shards / "val.bin"), read_json(paths.shards / "manifest.json")["key"], lm.model.block_size
    if lm.tokenizer.eos_id < 0:
        raise BrlmError(f"--hf {lm.meta['source']}: the tokenizer has no end-of-text token (eos_token); cannot mark document ends")
    tokens = tokenize_documents(lm.tokenizer, list(iter_split_texts(paths.data, "val")))
    return tokens, hashlib.sha256(tokens.tobytes()).hexdigest(), min(lm.model.block_size, cfg.model.block_size)


def _text_tokens(cfg: RunConfig, lm: LoadedModel, text: str | Path, text_field: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Any text `brlm data prepare` reads, cleaned with the run's own cleaning config (every
    non-empty document kept: it is the user's held-out set), tokenized as the shards are."""
    from collections import Counter

    from brlm.data.clean import Cleaner
    from brlm.data.sources import read_documents

    if lm.tokenizer.eos_id < 0:
        raise BrlmError(f"--hf {lm.meta['source']}: the tokenizer has no end-of-text token (eos_token); cannot mark document ends")
    cleaner = Cleaner(dataclasses.replace(cfg.data, min_doc_chars=1), cfg.clean)
    stats: Counter = Counter()
    texts, dropped = [], 0
    for doc in read_documents(str(text), text_field, cfg.data.txt_mode, stats, cfg.data.id_field):
        cleaned = cleaner(doc.text)
        if cleaned:
            texts.append(cleaned)
        else:
            dropped += 1
    if not texts:
        raise BrlmError(f"--text {text}: no text left after the run's cleaning ({dropped} documents read, field {text_field!r})")
    info(f"eval: --text {text}: {len(texts)} documents ({dropped} emptied by the run's cleaning, clean.preset={cfg.clean.preset})")
    return tokenize_documents(lm.tokenizer, texts), {"text_source": str(text), "text_field": text_field, "documents": len(texts),
                                                     "documents_emptied": dropped, "cleaning_preset": cfg.clean.preset}


def stage_eval(cfg: RunConfig, paths: RunPaths, checkpoint: str = "best", hf: str | Path | None = None,
               out: Path | None = None, text: str | Path | None = None, text_field: str = "text",
               quantize: str | None = None, adapter: str | Path | None = None) -> dict[str, Any]:
    """Intrinsic metrics on a fixed, hashed set of windows: the run's checkpoint, or with `hf` a
    Hugging Face folder, scored on the run's validation documents (-> eval.json / eval_hf.json) or,
    with `text`, on any corpus cleaned the run's way (-> eval_text.json / eval_hf_text.json).
    With `adapter`, that model with a PEFT adapter merged in (-> eval_adapter*.json);
    quantize="int8" scores the int8 model on the same windows (-> eval_int8.json, eval_hf_int8.json, …)."""
    device = resolve_device(cfg.train.device)
    if adapter is not None:
        from brlm.infer.load import load_with_adapter

        if hf is None and read_manifest(paths.shards) is None:
            raise BrlmError(f"{paths.shards}: no shards here yet; run `brlm train` for this run first")
        lm = load_with_adapter(hf if hf is not None else paths.root, adapter, checkpoint, device)
        if hf is not None:
            lm.meta["kind"] = "hf"
    elif hf is not None:
        val_jsonl = paths.data / "val.jsonl"
        if text is None and not val_jsonl.is_file():
            raise BrlmError(f"{val_jsonl}: no validation split; run `brlm data prepare` for this run first")
        lm = load_hf_folder(hf, device)
    else:
        if read_manifest(paths.shards) is None:
            raise BrlmError(f"{paths.shards}: no shards here yet; run `brlm train` for this run first")
        lm = load_run(paths.root, checkpoint, device)
    if quantize:
        from brlm.infer.quantize import quantize_model

        quantize_model(lm.model, quantize)
        lm.meta["quantize"] = quantize
    extra: dict[str, Any] = {}
    if text is not None:
        tokens, extra = _text_tokens(cfg, lm, text, text_field)
        data_hash = hashlib.sha256(tokens.tobytes()).hexdigest()
        block = lm.model.block_size if lm.kind == "run" else min(lm.model.block_size, cfg.model.block_size)
    else:
        tokens, data_hash, block = _validation_tokens(cfg, paths, lm)
    if len(tokens) <= block:
        raise BrlmError(f"{text or paths.data}: {len(tokens)} tokens, not enough for one window of {block + 1}; give more text")
    stride = cfg.eval.stride or block
    val = Windows(tokens, block, stride, name="validation")
    store = Path(cfg.eval.windows_cache) if cfg.eval.windows_cache else paths.root / "eval_windows"
    idx, windows_sha = select_windows(len(val), cfg.eval.max_windows, data_hash, block, stride, store)
    groups = names = None
    cats = None if text is not None else read_doc_categories(paths.data / "val.jsonl", cfg.eval.category_field)
    if cats:
        groups, names = doc_groups(tokens, lm.tokenizer.eos_id, cats)
    result = evaluate_windows(lm.model, val, idx, lm.tokenizer.token_bytes(), batch_size=cfg.eval.batch_size, device=device,
                              token_chars=token_chars(lm.tokenizer), groups=groups, group_names=names)
    result.update(
        checkpoint=lm.meta["checkpoint"],
        step=lm.meta.get("step"),
        block_size=block,
        stride=stride,
        windows_sha256=windows_sha,
        tokenizer_sha256=lm.meta.get("tokenizer_sha256"),
        **extra,
        **({"quantize": quantize} if quantize else {}),
    )
    default = ("eval" + ("_adapter" if adapter is not None else "") + ("_hf" if hf is not None else "")
               + ("_text" if text is not None else "") + (f"_{quantize}" if quantize else "") + ".json")
    result["file"] = str(out or paths.root / default)
    write_json(result["file"], result)
    info(
        f"eval{' (adapter)' if adapter is not None else ''}{' (hf)' if hf is not None else ''}{' (text)' if text is not None else ''}: "
        f"loss {result['loss']:.4f} | ppl {result['perplexity']:.2f} | "
        f"acc {result['accuracy']:.4f} | bits/byte {result['bits_per_byte']:.4f} | bits/char {result['bits_per_char']:.4f} "
        f"on {result['windows']} windows ({result['tokens_per_s'] or 0:,.0f} tokens/s)"
    )
    return result


def read_prompts(source: str) -> list[str]:
    from importlib import resources

    if source == "builtin:prompts":
        text = (resources.files("brlm") / "resources" / "prompts.txt").read_text(encoding="utf-8")
    else:
        p = Path(source)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BrlmError(f"{p}: prompts file not found (sample.prompts)") from None
        except UnicodeDecodeError as e:
            raise BrlmError(f"{p}: prompts file is not valid UTF-8 (byte {e.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise BrlmError(f"{source}: no prompts (expected one prompt per line)")
    return prompts


def stage_sample(cfg: RunConfig, paths: RunPaths, prompts: list[str] | None = None, checkpoint: str = "best",
                 out: Path | None = None, quantize: str | None = None, adapter: str | Path | None = None) -> dict[str, Any]:
    """Continuations of the prompts (default: the standard ones) -> samples.json; returns {"samples": rows}.
    With `adapter` the model is the run with that PEFT adapter merged in; quantize="int8": dynamic
    int8 linears (brlm.infer.quantize)."""
    sc = cfg.sample
    device = resolve_device(cfg.train.device)
    lm = load_model(paths.root, checkpoint, device, adapter=adapter, quantize=quantize)
    model, tok, meta = lm.model, lm.tokenizer, lm.meta
    rows = generate_samples(model, tok, prompts if prompts is not None else read_prompts(sc.prompts), sc, device=device)
    results = []
    for row in rows:
        row.pop("ids", None)
        results.append({**row, "checkpoint_step": meta["step"]})
    if out is not None or adapter is None:
        write_json(out or paths.samples, results)
    return {"samples": results}


def stage_guardrails(cfg: RunConfig, paths: RunPaths, checkpoint: str = "best") -> dict[str, Any]:
    """The standard prompts x guardrails.num_seeds seeds, scored by brlm.eval.guardrails."""
    gc, sc = cfg.guardrails, cfg.sample
    device = resolve_device(cfg.train.device)
    lm = load_run(paths.root, checkpoint, device)
    model, tok, meta = lm.model, lm.tokenizer, lm.meta
    train_jsonl = paths.data / "train.jsonl"
    vocab = training_vocabulary(jsonl_texts(train_jsonl)) if train_jsonl.is_file() else None
    seeds = [sc.seed + i for i in range(gc.num_seeds)]
    rows = generate_samples(model, tok, read_prompts(gc.prompts), sc, seeds=seeds, max_new_tokens=gc.max_new_tokens or None,
                            device=device, desc="guardrails")
    for row in rows:
        row.update(sample_guardrails(tok, row.pop("ids"), row["completion"], vocab, gc.short_piece_chars))
        row["passed"] = row["byte_fallback_ratio"] <= gc.max_byte_fallback and row["short_piece_ratio"] <= gc.max_short_piece
    agg = aggregate(rows, gc.max_byte_fallback, gc.max_short_piece)
    result = {"checkpoint": checkpoint, "step": meta["step"], "num_seeds": gc.num_seeds, "aggregate": agg, "samples": rows}
    write_json(paths.root / "guardrails.json", result)
    info(
        f"guardrails: byte fallback {agg['byte_fallback_ratio']:.3f} (<= {gc.max_byte_fallback}) | short pieces "
        f"{agg['short_piece_ratio']:.3f} (<= {gc.max_short_piece}) | distinct-2 {agg['distinct_2'] or 0:.3f} | "
        f"{'PASS' if agg['passed'] else 'FAIL'} ({agg['samples_passed']}/{agg['samples']} samples pass)"
    )
    return result


STAGES: list[Stage] = [Stage("eval", stage_eval), Stage("sample", stage_sample), Stage("guardrails", stage_guardrails)]
