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

from brlm.config import RunConfig
from brlm.data.loader import Windows
from brlm.data.prepare import iter_split_texts, prepare_data
from brlm.data.shards import build_shards, open_shard
from brlm.errors import BrlmError
from brlm.eval.intrinsic import evaluate_windows
from brlm.eval.samples import generate_samples
from brlm.io.files import read_json, read_manifest, write_json, write_text
from brlm.io.logging import JSONLLogger, NullLogger, info
from brlm.io.machine import resolve_device
from brlm.io.run_folder import RunPaths, RunRecord
from brlm.models.checkpoint import latest_good_checkpoint, load_checkpoint
from brlm.runs.report import render_report
from brlm.tokenizers.base import check_aligned, load_tokenizer, train_tokenizer
from brlm.train.loop import keep_metrics_until, train


def _require(folder: Path, what: str, verb: str) -> dict[str, Any]:
    m = read_manifest(folder)
    if m is None:
        raise BrlmError(f"{folder}: no {what} here yet; run `brlm {verb}` for this run first")
    return m


def write_config(cfg: RunConfig, paths: RunPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, cfg.to_yaml())


def stage_data(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    m = prepare_data(cfg.data, paths.data, force=force, clean=cfg.clean)
    c = m["counts"]
    info(
        f"data: {c['docs_in']} documents read -> train {c['train']['docs']} / val {c['val']['docs']}"
        f"{' / test ' + str(c['test']['docs']) if 'test' in c else ''} "
        f"({c['dropped_short']} too short, {c['dropped_duplicate']} duplicates, {c['utf8_errors']} lines with bad UTF-8)"
    )
    return m


def stage_tokenizer(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    data_m = _require(paths.data, "prepared data", "data prepare")
    m = train_tokenizer(iter_split_texts(paths.data, "train"), cfg.tokenizer, paths.tokenizer, data_key=data_m["key"], force=force,
                        cleaning=data_m.get("cleaning"))
    kind = "characters" if cfg.tokenizer.kind == "char" else f"SentencePiece {cfg.tokenizer.model_type}"
    info(f"tokenizer: {kind}, vocab {m['vocab_size']}, sha256 {m['sha256'][:12]}")
    return m


def stage_shards(cfg: RunConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    data_m = _require(paths.data, "prepared data", "data prepare")
    tok_m = _require(paths.tokenizer, "tokenizer", "tokenizer train")
    tok = load_tokenizer(paths.tokenizer)
    alignment = check_aligned(paths.tokenizer, data_m.get("cleaning"), cfg.tokenizer.allow_misaligned)
    splits = [s for s in ("train", "val", "test") if f"{s}.jsonl" in data_m.get("files", ["train.jsonl", "val.jsonl"])]
    texts = {split: iter_split_texts(paths.data, split) for split in splits}
    m = build_shards(texts, tok, paths.shards, data_key=data_m["key"], tokenizer_sha=tok_m["sha256"], force=force,
                     workers=cfg.data.workers, alignment=alignment)
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
    from brlm.eval.intrinsic import doc_groups, read_doc_categories, select_windows, token_chars

    _require(paths.shards, "shards", "train")
    device = resolve_device(cfg.train.device)
    model, meta = load_checkpoint(paths.checkpoints, checkpoint, device=str(device))
    tok = load_tokenizer(paths.tokenizer)
    block = model.block_size
    stride = cfg.eval.stride or block
    tokens = open_shard(paths.shards / "val.bin")
    val = Windows(tokens, block, stride, name="validation")
    shard_hash = read_json(paths.shards / "manifest.json")["key"]
    store = Path(cfg.eval.windows_cache) if cfg.eval.windows_cache else paths.root / "eval_windows"
    idx, windows_sha = select_windows(len(val), cfg.eval.max_windows, shard_hash, block, stride, store)
    groups = names = None
    cats = read_doc_categories(paths.data / "val.jsonl", cfg.eval.category_field)
    if cats:
        groups, names = doc_groups(tokens, tok.eos_id, cats)
    result = evaluate_windows(model, val, idx, tok.token_bytes(), batch_size=cfg.eval.batch_size, device=device,
                              token_chars=token_chars(tok), groups=groups, group_names=names)
    result.update(
        checkpoint=checkpoint,
        step=meta["step"],
        block_size=block,
        stride=stride,
        windows_sha256=windows_sha,
        tokenizer_sha256=meta.get("tokenizer_sha256"),
    )
    write_json(paths.eval, result)
    info(
        f"eval: loss {result['loss']:.4f} | ppl {result['perplexity']:.2f} | acc {result['accuracy']:.4f} | "
        f"bits/byte {result['bits_per_byte']:.4f} | bits/char {result['bits_per_char']:.4f} on {result['windows']} windows "
        f"({result['tokens_per_s'] or 0:,.0f} tokens/s)"
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
    rows = generate_samples(model, tok, prompts if prompts is not None else read_prompts(sc.prompts), sc, device=device)
    results = []
    for row in rows:
        row.pop("ids", None)
        results.append({**row, "checkpoint_step": meta["step"]})
    write_json(out or paths.samples, results)
    return results


def stage_cost(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """cost.json from train.json and the config: FLOPs, MFU, peak memory, price and cost."""
    from brlm.compute.cost import run_cost

    if not paths.train_summary.is_file():
        raise BrlmError(f"{paths.train_summary}: no training summary yet; run `brlm train` for this run first")
    train_summary = read_json(paths.train_summary)
    tok_m = read_manifest(paths.tokenizer) or {}
    vocab = int(tok_m.get("vocab_size") or cfg.tokenizer.vocab_size)
    result = run_cost(train_summary, cfg, vocab)
    write_json(paths.root / "cost.json", result)
    mfu = result["mfu"]
    cost = result["estimated_cost_usd"]
    info(
        f"cost: {result['flops_per_token']:.3g} FLOPs/token (6N: {result['flops_per_token_6n']:.3g}) | "
        f"{result['total_flops']:.3g} FLOPs | MFU {'n/a' if mfu is None else f'{mfu:.1%}'} | "
        f"{'n/a' if cost is None else f'US$ {cost:.4f}'} at {result['price_usd_per_hour']} US$/h"
    )
    return result


def stage_guardrails(cfg: RunConfig, paths: RunPaths, checkpoint: str = "best") -> dict[str, Any]:
    """The standard prompts x guardrails.num_seeds seeds, scored by brlm.eval.guardrails."""
    from brlm.eval.guardrails import aggregate, jsonl_texts, sample_guardrails, training_vocabulary

    gc, sc = cfg.guardrails, cfg.sample
    device = resolve_device(cfg.train.device)
    model, meta = load_checkpoint(paths.checkpoints, checkpoint, device=str(device))
    tok = load_tokenizer(paths.tokenizer)
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


def run_pipeline(cfg: RunConfig, paths: RunPaths, command: str = "brlm run") -> Path | None:
    """Every stage in order; the run record says how it ended. Returns the report path.

    Under torchrun every rank trains (DDP) and rank 0 alone runs the other stages and writes:
    the other ranks wait for its data and tokenizer, then return None after training."""
    from brlm.train.distributed import broadcast_from_main, compute_cleanup, compute_init

    ddp, rank, _local, _world, _device = compute_init(cfg.train.device)
    master = rank == 0
    record = RunRecord(paths)
    others_released = not ddp  # under torchrun the other ranks wait until rank 0 has data and tokenizer
    try:
        if master:
            write_config(cfg, paths)
            record.start(cfg.preset, cfg.scale, command)
        try:
            if master:
                from brlm.compute.cost import check_cost_config

                check_cost_config(cfg)
                data_m = stage_data(cfg, paths)
                record.set_hash("data", data_m["key"])
                tok_m = stage_tokenizer(cfg, paths)
                record.set_hash("tokenizer", tok_m["sha256"])
                broadcast_from_main(None)  # data and tokenizer are ready
                others_released = True
            else:
                error = broadcast_from_main(None)
                if error is not None:
                    raise BrlmError(f"rank 0 failed before training: {error}")
            stage_train(cfg, paths, record)
            if not master:
                return None
            stage_cost(cfg, paths)
            stage_eval(cfg, paths)
            stage_sample(cfg, paths)
            stage_guardrails(cfg, paths)
        except BaseException as e:
            msg = str(e) if isinstance(e, BrlmError) else f"{e.__class__.__name__}: {e}"
            if master:
                if not others_released:
                    broadcast_from_main(msg or e.__class__.__name__)  # they stop with this error
                record.finish("failed", error=msg or e.__class__.__name__)
                if not isinstance(e, (BrlmError, KeyboardInterrupt)):
                    write_text(paths.root / "error.txt", traceback.format_exc())
            raise
    finally:
        compute_cleanup()
    record.finish("completed")
    report = render_report(paths.root)
    info(f"report: {report}")
    return report
