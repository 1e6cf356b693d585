"""The from-scratch pipeline as stages over one run folder.

    data -> tokenizer -> shards -> train -> cost, then the evaluation workflow (eval -> sample -> guardrails)

Each stage is `stage(cfg, paths) -> dict`: it reads the files earlier stages wrote and writes its
own; data, tokenizer and shards are skipped when their inputs and config did not change (see
brlm/io/files.py). `brlm run` walks `STAGES` (brlm/stages/workflow.py) and then renders the
report; each verb (`brlm data prepare`, `brlm train`, …) calls one stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brlm.config import RunConfig
from brlm.data.prepare import iter_split_texts, prepare_data
from brlm.data.shards import build_shards, open_shard
from brlm.errors import BrlmError
from brlm.io.files import read_json, read_manifest, write_json, write_text
from brlm.io.logging import info
from brlm.io.run_folder import RunPaths, RunRecord
from brlm.models.checkpoint import checkpoint_steps, latest_good_checkpoint
from brlm.stages.evaluate import STAGES as EVALUATE_STAGES
from brlm.stages.workflow import Stage, run_workflow
from brlm.tokenizers.base import check_aligned, load_tokenizer, train_tokenizer
from brlm.train.loop import open_metrics, train


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
    from brlm.train.distributed import barrier, is_main_process, rank_world

    master = is_main_process()
    if master:
        shard_m = stage_shards(cfg, paths)
    barrier()
    if not master:
        shard_m = read_manifest(paths.shards) or {}
    tok = load_tokenizer(paths.tokenizer)
    if record is not None and master:
        record.set_hash("shards", shard_m["key"])
    found = require_resumable(paths) if resume else None
    train_tokens = open_shard(paths.shards / "train.bin")
    bpt = bytes_per_token(tok, train_tokens)
    if cfg.train.budget_bytes > 0 or cfg.train.budget_tokens > 0:
        cfg = with_byte_budget(cfg, bpt, rank_world()[1])
        if master:
            said = (f"{cfg.train.budget_bytes:,} bytes at {bpt:.3f} bytes/token" if cfg.train.budget_bytes
                    else f"{cfg.train.budget_tokens:,} tokens")
            info(f"train: budget {said} = {cfg.train.max_steps:,} steps")
    logger = open_metrics(paths.metrics, found[0] if found is not None else None, master, cfg.to_dict())
    try:
        summary = train(
            cfg,
            train_tokens,
            open_shard(paths.shards / "val.bin"),
            tok.vocab_size,
            paths.checkpoints,
            logger,
            extra_meta={"tokenizer_sha256": shard_m.get("tokenizer_sha256")},
            resume=resume,
        )
    finally:
        logger.close()
    summary.update(bytes_per_token=bpt, bytes_seen=int(round(summary["tokens_seen"] * bpt)))
    if master:
        write_json(paths.train_summary, summary)
        if record is not None:
            record.update(train_dtype=summary.get("dtype_choice"))  # what `auto` chose, and the probe's figures
    return summary


def require_resumable(paths: RunPaths) -> tuple[int, dict[str, Any]] | None:
    """The checkpoint `--resume` continues from (None: no checkpoint yet, start at step 0). When
    there are checkpoints and none verifies, refuse: starting over would silently throw the run away."""
    found = latest_good_checkpoint(paths.checkpoints, quiet=True)
    if found is None and checkpoint_steps(paths.checkpoints):
        raise BrlmError(f"{paths.checkpoints}: --resume found checkpoints but none verifies (corrupted or truncated); "
                        "nothing was changed. Remove the checkpoints folder to train again from step 0")
    return found


def bytes_per_token(tok: Any, tokens: Any, chunk: int = 1 << 22) -> float:
    """Mean UTF-8 bytes per token of a shard (special tokens count 0): what turns a token budget
    into a byte budget, the same for a char and a subword tokenizer."""
    import numpy as np

    tb = np.asarray(tok.token_bytes(), dtype=np.int64)
    total = sum(int(tb[np.asarray(tokens[i:i + chunk], dtype=np.int64)].sum()) for i in range(0, len(tokens), chunk))
    return total / max(1, len(tokens))


def with_byte_budget(cfg: RunConfig, bytes_per_tok: float, world: int = 1) -> RunConfig:
    """cfg with train.max_steps set so that training sees train.budget_bytes bytes of text (or
    train.budget_tokens tokens)."""
    import dataclasses
    import math

    tc = cfg.train
    tokens_per_step = tc.batch_size * tc.grad_accum * world * cfg.model.block_size
    tokens = tc.budget_tokens if tc.budget_tokens > 0 else tc.budget_bytes / bytes_per_tok
    steps = max(1, math.ceil(tokens / tokens_per_step))
    return dataclasses.replace(cfg, train=dataclasses.replace(tc, max_steps=steps))


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


def _check_cost(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """Fail before any work when the cost settings (price table, device name) are wrong."""
    from brlm.compute.cost import check_cost_config

    check_cost_config(cfg)
    return {}


def _train(cfg: RunConfig, paths: RunPaths, resume: bool = False) -> dict[str, Any]:
    return stage_train(cfg, paths, RunRecord(paths), resume=resume)


ROOT = RunConfig

STAGES: list[Stage] = [
    Stage("check", _check_cost),
    Stage("data", stage_data, record_hash=("data", "key")),
    Stage("tokenizer", stage_tokenizer, record_hash=("tokenizer", "sha256")),
    Stage("train", _train, ranks="all", resumable=True),
    Stage("cost", stage_cost),
    *EVALUATE_STAGES,
]


def run_pipeline(cfg: RunConfig, paths: RunPaths, command: str = "brlm run", resume: bool = False) -> bool:
    """The pretraining workflow over one run folder; True on rank 0 when every stage finished.
    resume=True (`brlm run --resume`): training continues from its last good checkpoint, then every
    later stage runs; data and tokenizer are reused (their inputs did not change)."""
    return run_workflow(STAGES, cfg, paths, command, write_config, resume=resume)
