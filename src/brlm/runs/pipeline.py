"""The from-scratch pipeline as stages over one run folder.

    data -> tokenizer -> shards -> train -> eval -> sample -> report

Each stage reads the files earlier stages wrote and writes its own; data, tokenizer and shards
are skipped when their inputs and config did not change (see runs/artifacts.py). `brlm run`
calls them all; each verb (`brlm data prepare`, `brlm train`, …) calls one.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch

from brlm.config import RunConfig
from brlm.data.loader import Windows, fixed_indices
from brlm.data.prepare import iter_split_texts, prepare_data
from brlm.data.shards import build_shards, open_shard
from brlm.errors import BrlmError
from brlm.eval.intrinsic import evaluate_windows, indices_hash
from brlm.infer.sampling import generate, make_sampler
from brlm.runs.artifacts import read_json, read_manifest, write_json, write_text
from brlm.runs.logging import JSONLLogger, info
from brlm.runs.registry import RunPaths, RunRecord
from brlm.runs.report import render_report
from brlm.tokenizers.base import load_tokenizer
from brlm.tokenizers.spm import train_spm
from brlm.train.checkpoint import latest_good_checkpoint, load_checkpoint
from brlm.train.loop import NullLogger, keep_metrics_until, resolve_device, train


def _require(folder: Path, what: str, verb: str) -> dict[str, Any]:
    m = read_manifest(folder)
    if m is None:
        raise BrlmError(f"{folder}: no {what} here yet; run `brlm {verb}` for this run first")
    return m


def write_config(cfg: RunConfig, paths: RunPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, cfg.to_yaml())


def stage_data(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    m = prepare_data(cfg.data, paths.data, force=force)
    c = m["counts"]
    info(
        f"data: {c['docs_in']} documents read -> train {c['train']['docs']} / val {c['val']['docs']} "
        f"({c['dropped_short']} too short, {c['dropped_duplicate']} duplicates, {c['utf8_errors']} lines with bad UTF-8)"
    )
    return m


def stage_tokenizer(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    data_m = _require(paths.data, "prepared data", "data prepare")
    m = train_spm(iter_split_texts(paths.data, "train"), cfg.tokenizer, paths.tokenizer, data_key=data_m["key"], force=force)
    info(f"tokenizer: SentencePiece {cfg.tokenizer.model_type}, vocab {m['vocab_size']}, sha256 {m['sha256'][:12]}")
    return m


def stage_shards(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    data_m = _require(paths.data, "prepared data", "data prepare")
    tok_m = _require(paths.tokenizer, "tokenizer", "tokenizer train")
    tok = load_tokenizer(paths.tokenizer)
    texts = {split: iter_split_texts(paths.data, split) for split in ("train", "val")}
    m = build_shards(texts, tok, paths.shards, data_key=data_m["key"], tokenizer_sha=tok_m["sha256"], force=force)
    s = m["splits"]
    info(f"shards: train {s['train']['n_tokens']:,} tokens, val {s['val']['n_tokens']:,} tokens ({s['train']['dtype']})")
    return m


def stage_train(cfg: RunConfig, paths: RunPaths, record: RunRecord | None = None, resume: bool = False) -> dict[str, Any]:
    """Shards, then training. Under torchrun rank 0 builds the shards and writes every file;
    with resume=True the metrics after the resumed checkpoint are dropped and logging appends."""
    from brlm.train.distributed import barrier, is_main_process

    master = is_main_process()
    if master:
        shard_m = stage_shards(cfg, paths)
    barrier()
    if not master:
        shard_m = read_manifest(paths.shards) or {}
    tok = load_tokenizer(paths.tokenizer)
    if record is not None and master:
        record.set_hash("shards", shard_m["key"])
    found = latest_good_checkpoint(paths.checkpoints, quiet=True) if resume else None
    if master and found is not None:
        keep_metrics_until(paths.metrics, found[0])
    logger = JSONLLogger(paths.metrics, append=found is not None) if master else NullLogger()
    try:
        if found is None:
            logger.log_config(cfg.to_dict())
        summary = train(
            cfg,
            open_shard(paths.shards / "train.bin"),
            open_shard(paths.shards / "val.bin"),
            tok.vocab_size,
            paths.checkpoints,
            logger,
            extra_meta={"tokenizer_sha256": shard_m.get("tokenizer_sha256")},
            resume=resume,
        )
    finally:
        logger.close()
    if master:
        write_json(paths.train_summary, summary)
    return summary


def stage_eval(cfg: RunConfig, paths: RunPaths, checkpoint: str = "best") -> dict[str, Any]:
    _require(paths.shards, "shards", "train")
    device = resolve_device(cfg.train.device)
    model, meta = load_checkpoint(paths.checkpoints, checkpoint, device=str(device))
    tok = load_tokenizer(paths.tokenizer)
    block = model.block_size
    stride = cfg.eval.stride or block
    val = Windows(open_shard(paths.shards / "val.bin"), block, stride, name="validation")
    idx = fixed_indices(len(val), cfg.eval.max_windows)
    shard_hash = read_json(paths.shards / "manifest.json")["key"]
    result = evaluate_windows(model, val, idx, tok.token_bytes(), batch_size=cfg.eval.batch_size, device=device)
    result.update(
        checkpoint=checkpoint,
        step=meta["step"],
        block_size=block,
        stride=stride,
        windows_sha256=indices_hash(idx, f"{shard_hash}:{block}:{stride}"),
        tokenizer_sha256=meta.get("tokenizer_sha256"),
    )
    write_json(paths.eval, result)
    info(
        f"eval: loss {result['loss']:.4f} | ppl {result['perplexity']:.2f} | acc {result['accuracy']:.4f} | "
        f"bits/byte {result['bits_per_byte']:.4f} on {result['windows']} windows"
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


def stage_sample(cfg: RunConfig, paths: RunPaths, prompts: list[str] | None = None, checkpoint: str = "best", out: Path | None = None) -> list[dict[str, Any]]:
    sc = cfg.sample
    device = resolve_device(cfg.train.device)
    model, meta = load_checkpoint(paths.checkpoints, checkpoint, device=str(device))
    tok = load_tokenizer(paths.tokenizer)
    sampler = make_sampler(sc.temperature, sc.top_k, sc.top_p)
    results = []
    for prompt in prompts if prompts is not None else read_prompts(sc.prompts):
        for i in range(sc.num_samples):
            seed = sc.seed + i
            gen = torch.Generator(device=device).manual_seed(seed)
            ids, gen_info = generate(model, tok.encode(prompt), sc.max_new_tokens, sampler, generator=gen, eos_id=tok.eos_id, device=device)
            row = {
                "prompt": prompt,
                "completion": tok.decode(ids),
                "seed": seed,
                "new_tokens": len(ids),
                "temperature": sc.temperature,
                "top_k": sc.top_k,
                "top_p": sc.top_p,
                "checkpoint_step": meta["step"],
                **gen_info,
            }
            if "warning" in gen_info:
                info(f"warning: {gen_info['warning']}")
            results.append(row)
    write_json(out or paths.samples, results)
    return results


def run_pipeline(cfg: RunConfig, paths: RunPaths, command: str = "brlm run") -> Path:
    """Every stage in order; the run record says how it ended. Returns the report path."""
    write_config(cfg, paths)
    record = RunRecord(paths)
    record.start(cfg.preset, cfg.scale, command)
    try:
        data_m = stage_data(cfg, paths)
        record.set_hash("data", data_m["key"])
        tok_m = stage_tokenizer(cfg, paths)
        record.set_hash("tokenizer", tok_m["sha256"])
        stage_train(cfg, paths, record)
        stage_eval(cfg, paths)
        stage_sample(cfg, paths)
    except BaseException as e:
        msg = str(e) if isinstance(e, BrlmError) else f"{e.__class__.__name__}: {e}"
        record.finish("failed", error=msg or e.__class__.__name__)
        if not isinstance(e, (BrlmError, KeyboardInterrupt)):
            write_text(paths.root / "error.txt", traceback.format_exc())
        raise
    record.finish("completed")
    report = render_report(paths.root)
    info(f"report: {report}")
    return report
