"""The post-training workflow (Track 2) as stages over one run folder.

    check -> data -> train -> cost -> eval -> sample        (`brlm finetune cpt|sft|dpo`, presets cpt/sft/dpo)

* check: the base is resolved (a brlm run is exported to Hugging Face format once), its folder
  checked for weights and tokenizer, the cost settings checked, and `brlm estimate`'s memory model
  asked whether the run fits the device (refused with the figures if not); -> base.json
* data:  records -> token examples with targets (brlm.posttrain.data), counts of everything dropped;
  CPT reads its corpus as `brlm data prepare` does -> data/{train,val}.npz + data/manifest.json
* train: brlm.posttrain.trainer on every rank -> checkpoints/, metrics.jsonl, train.json, adapter/
* cost:  the cost ledger (brlm.compute.cost) -> cost.json
* eval:  base versus adapted (brlm.posttrain.evaluate) -> eval.json
* sample: base and adapted completions of the sample prompts -> samples.json

The run folder says what it is in posttrain.json; `brlm report` renders report.md / report.html.
"""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path
from typing import Any

from brlm.config.posttrain import PosttrainConfig
from brlm.errors import BrlmError, ConfigError, DataError
from brlm.io.files import (
    file_sha256,
    is_fresh,
    read_json,
    read_manifest,
    stage_key,
    write_json,
    write_manifest,
    write_text,
)
from brlm.io.logging import info
from brlm.io.machine import resolve_device
from brlm.io.run_folder import RunPaths
from brlm.stages.workflow import Stage, run_workflow

ROOT = PosttrainConfig
DATA_VERSION = 1
INSTRUCTION_PROMPTS = "builtin:instruction_prompts"


def write_config(cfg: PosttrainConfig, paths: RunPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, cfg.to_yaml())


def base_folder(paths: RunPaths) -> Path:
    p = paths.root / "base.json"
    if not p.is_file():
        raise BrlmError(f"{paths.root}: no base.json; run the check stage (brlm finetune) for this run first")
    return Path(read_json(p)["folder"])


def stage_check(cfg: PosttrainConfig, paths: RunPaths) -> dict[str, Any]:
    from brlm.compute.cost import check_cost_config
    from brlm.posttrain.fit import fit_check
    from brlm.posttrain.model import check_base_folder, resolve_base

    check_cost_config(cfg)
    folder, origin = resolve_base(cfg.finetune.base, cfg.finetune.checkpoint)
    check_base_folder(folder)
    hf = read_json(folder / "config.json")
    if hf.get("n_positions") and cfg.finetune.seq_len > int(hf["n_positions"]):
        # Learned absolute positions (GPT-2) have no embedding past n_positions; RoPE models can go on.
        raise ConfigError(f"finetune.seq_len={cfg.finetune.seq_len}: {folder} has learned positions for "
                          f"{hf['n_positions']} tokens only; set finetune.seq_len<={hf['n_positions']}")
    device = resolve_device(cfg.train.device)
    fit = fit_check(folder, cfg, device) if cfg.train.fit_check else {"skipped": "train.fit_check=false"}
    if "estimate" in fit:
        info(f"fit: ~{fit['estimate']['total_gb']:.2f} GB estimated for {cfg.finetune.method} on {fit['capacity']}: fits")
    out = {"base": cfg.finetune.base, "folder": str(folder.resolve()), "origin": origin, "fit": fit}
    write_json(paths.root / "base.json", out)
    write_json(paths.root / "posttrain.json", {"workflow": "posttrain", "task": cfg.finetune.task, "method": cfg.finetune.method,
                                               "base": cfg.finetune.base})
    return out


def _source_hash(source: str) -> str:
    from brlm.data.prepare import source_hash
    from brlm.posttrain.data import BUILTIN_PAIRS, resolve_pairs_path

    if source in BUILTIN_PAIRS:
        return file_sha256(resolve_pairs_path(source))
    return source_hash(source) if source else ""


def _tokenizer_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "chat_template.jinja"):
        if (folder / name).is_file():
            h.update(name.encode() + file_sha256(folder / name).encode())
    return h.hexdigest()


def stage_data(cfg: PosttrainConfig, paths: RunPaths, force: bool = False) -> dict[str, Any]:
    """Token examples for training and validation, with counts of what was dropped and why."""
    from brlm.posttrain import data as pdata
    from brlm.posttrain.model import load_tokenizer

    fc, pc = cfg.finetune, cfg.pairs
    folder = base_folder(paths)
    out = paths.data
    parts: dict[str, Any] = dict(version=DATA_VERSION, task=fc.task, seq_len=fc.seq_len, too_long=fc.too_long,
                                 tokenizer=_tokenizer_hash(folder))
    if fc.task == "cpt":
        parts.update(data=cfg.data.__dict__, clean=cfg.clean.__dict__, source=_source_hash(cfg.data.source))
    else:
        parts.update(pairs=pc.__dict__, train=_source_hash(pc.train), val=_source_hash(pc.val))
    key = stage_key(**parts)
    if not force and is_fresh(out, key):
        return read_manifest(out) or {}
    tok = load_tokenizer(folder, fc.trust_remote_code)
    counts = {"train": pdata.DataCounts(), "val": pdata.DataCounts()}
    extra: dict[str, Any] = {}
    if fc.task == "cpt":
        from brlm.data.prepare import iter_split_texts, prepare_data

        text_m = prepare_data(cfg.data, out / "text", clean=cfg.clean)
        extra["text"] = {k: text_m.get(k) for k in ("source", "counts", "cleaning")}
        splits = {}
        for split in ("train", "val"):
            exs = []
            for text in iter_split_texts(out / "text", split):
                counts[split].add("documents")
                exs += pdata.document_examples(text, tok, fc.seq_len, counts[split])
            splits[split] = exs
    else:
        formatter = pdata.Formatter(tok, pc.template, source=str(folder))
        extra["template"] = "chat" if formatter.chat else "plain"
        train_path = pdata.resolve_pairs_path(pc.train, "pairs.train")
        if pc.val:
            val_path = pdata.resolve_pairs_path(pc.val, "pairs.val")
            splits = {"train": pdata.load_pair_split(train_path, fc, pc, formatter, counts["train"], limit=pc.max_train),
                      "val": pdata.load_pair_split(val_path, fc, pc, formatter, counts["val"], limit=pc.max_val)}
        else:
            splits = {s: pdata.load_pair_split(train_path, fc, pc, formatter, counts[s], keep=s,
                                               limit=pc.max_train if s == "train" else pc.max_val) for s in ("train", "val")}
    files = []
    summary: dict[str, Any] = {}
    for split, exs in splits.items():
        if not exs:
            why = ", ".join(f"{k} {v}" for k, v in counts[split].to_dict().items()) or "no records"
            raise DataError(f"{fc.task}: no {split} examples left ({why}); check the data and finetune.seq_len={fc.seq_len}")
        if fc.task == "dpo":
            for side, idx in (("chosen", 0), ("rejected", 1)):
                pdata.save_examples(out / f"{split}_{side}.npz", [pair[idx] for pair in exs])
                files.append(f"{split}_{side}.npz")
            flat = [e for pair in exs for e in pair]
        else:
            pdata.save_examples(out / f"{split}.npz", exs)
            files.append(f"{split}.npz")
            flat = exs
        summary[split] = {**counts[split].to_dict(), "examples": len(exs), "tokens": sum(len(e) for e in flat),
                          "target_tokens": sum(e.n_labels for e in flat)}
    m = write_manifest(out, stage="posttrain-data", key=key, files=files, task=fc.task, splits=summary, **extra)
    t, v = summary["train"], summary["val"]
    dropped = {k: n for k, n in t.items() if k not in ("examples", "tokens", "target_tokens", "records", "kept", "documents")}
    info(f"data: {fc.task} train {t['examples']:,} examples ({t['tokens']:,} tokens, {t['target_tokens']:,} learned) | "
         f"val {v['examples']:,} examples" + (f" | {', '.join(f'{k} {n}' for k, n in dropped.items())}" if dropped else ""))
    return m


def stage_train(cfg: PosttrainConfig, paths: RunPaths, resume: bool = False) -> dict[str, Any]:
    from brlm.models.checkpoint import latest_good_checkpoint
    from brlm.posttrain.trainer import train_posttrain
    from brlm.train.distributed import is_main_process
    from brlm.train.loop import open_metrics

    master = is_main_process()
    found = latest_good_checkpoint(paths.checkpoints, quiet=True) if resume else None
    logger = open_metrics(paths.metrics, found[0] if found is not None else None, master, cfg.to_dict())
    try:
        summary = train_posttrain(cfg, base_folder(paths), paths.root, logger, resume=resume)
    finally:
        logger.close()
    if master:
        write_json(paths.train_summary, summary)
    return summary


def stage_cost(cfg: PosttrainConfig, paths: RunPaths) -> dict[str, Any]:
    """cost.json: FLOPs per token of this base and method, total FLOPs (DPO adds the reference's
    forward passes), MFU, peak memory, price and cost (brlm.compute.cost.cost_ledger)."""
    from brlm.compute.cost import cost_ledger
    from brlm.posttrain.fit import train_flops_per_token

    if not paths.train_summary.is_file():
        raise BrlmError(f"{paths.train_summary}: no training summary yet; run the train stage first")
    tr = read_json(paths.train_summary)
    folder = base_folder(paths)
    fpt, fwd = train_flops_per_token(folder, cfg, tr["trainable_params"], tr["n_params"])
    total = fpt * tr["tokens_seen"] + fwd * tr.get("reference_tokens", 0)
    head = {"task": cfg.finetune.task, "method": cfg.finetune.method, "n_params": tr["n_params"],
            "trainable_params": tr["trainable_params"], "flops_per_token": fpt, "forward_flops_per_token": fwd,
            "flops_convention": "matmuls only, 2 FLOPs per multiply-add; frozen weights 2 x forward (no weight gradient), "
                                "trained weights 3 x forward, LoRA adapters 6 FLOPs per parameter; DPO adds the reference forward"}
    result = cost_ledger(tr, cfg, fpt, head, total_flops=total)
    write_json(paths.root / "cost.json", result)
    cost, m = result["estimated_cost_usd"], result["mfu"]
    info(f"cost: {fpt:.3g} FLOPs/token | {total:.3g} FLOPs | MFU {'n/a' if m is None else f'{m:.1%}'} | "
         f"{'n/a' if cost is None else f'US$ {cost:.4f}'} at {result['price_usd_per_hour']} US$/h")
    return result


def load_trained(cfg: PosttrainConfig, paths: RunPaths, device: Any) -> tuple[Any, Any, Any]:
    """(model with the run's adapter — or the fully fine-tuned model —, its base for full runs, tokenizer)."""
    from brlm.posttrain.model import attach_adapter, load_base, load_tokenizer

    folder = base_folder(paths)
    tok = load_tokenizer(folder, cfg.finetune.trust_remote_code)
    if cfg.finetune.method == "full":
        trained = load_base(paths.root / "model", cfg, device)
        return trained, load_base(folder, cfg, device), tok
    adapter = paths.root / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise BrlmError(f"{adapter}: no adapter yet; run the train stage first")
    return attach_adapter(load_base(folder, cfg, device), adapter, str(folder)), None, tok


def stage_eval(cfg: PosttrainConfig, paths: RunPaths) -> dict[str, Any]:
    from brlm.posttrain.evaluate import compare
    from brlm.posttrain.model import pad_id
    from brlm.posttrain.trainer import load_rows

    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    model, base, tok = load_trained(cfg, paths, device)
    rows = load_rows(paths.data, cfg, "val")
    result = compare(model, rows, tok, cfg.finetune.task, pad_id(tok), cfg.eval.batch_size, device, cfg.eval.max_rows,
                     cfg.finetune.fused_loss, cfg.finetune.dpo_beta, cfg.eval.adapted_only, base)
    write_json(paths.eval, result)
    a, b = result["adapted"], result.get("base") or {}
    if cfg.finetune.task == "dpo":
        info(f"eval: DPO val loss {b.get('loss', float('nan')):.4f} -> {a['loss']:.4f} | reward accuracy {a['reward_accuracy']:.3f} | "
             f"log-ratio chosen/rejected {b.get('mean_logp_margin', float('nan')):+.3f} -> {a['mean_logp_margin']:+.3f} on {result['rows']} pairs")
    else:
        what = "response-only " if cfg.finetune.task == "sft" else ""
        info(f"eval: {what}val ppl {b.get('perplexity', float('nan')):.3f} -> {a['perplexity']:.3f} | bits/byte "
             f"{b.get('bits_per_byte', float('nan')):.4f} -> {a['bits_per_byte']:.4f} on {result['rows']} rows")
    return result


def read_sample_prompts(source: str) -> list[str]:
    from brlm.stages.evaluate import read_prompts

    if source == INSTRUCTION_PROMPTS:
        text = (resources.files("brlm") / "resources" / "instruction_prompts.txt").read_text(encoding="utf-8")
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return read_prompts(source)


def render_prompt(tok: Any, prompt: str, task: str, system: str, template: str) -> str:
    """CPT continues raw text; SFT and DPO prompts become a user turn of the chat (or plain) format."""
    from brlm.posttrain.data import PLAIN_PROMPT, PLAIN_RESPONSE, PLAIN_SYSTEM

    if task == "cpt":
        return prompt
    chat = bool(getattr(tok, "chat_template", None)) if template == "auto" else template == "chat"
    if chat:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return (PLAIN_SYSTEM.format(system=system) if system else "") + PLAIN_PROMPT.format(instruction=prompt) + PLAIN_RESPONSE


def stage_sample(cfg: PosttrainConfig, paths: RunPaths, prompts: list[str] | None = None) -> dict[str, Any]:
    """Base and adapted completions of the same prompts, same seeds -> samples.json."""
    import torch

    from brlm.eval.samples import generate_samples
    from brlm.models.hf import HFCausalLM, HFTokenizer

    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model, base, tok = load_trained(cfg, paths, device)
    model.eval()
    prompts = prompts if prompts is not None else read_sample_prompts(cfg.sample.prompts)
    rendered = [render_prompt(tok, p, cfg.finetune.task, cfg.pairs.system, cfg.pairs.template) for p in prompts]
    htok = HFTokenizer(tok)
    rows: list[dict[str, Any]] = []
    for label in ("base", "adapted"):
        if label == "base" and cfg.eval.adapted_only:
            continue
        if base is not None:
            m = base if label == "base" else model
            ctx: Any = torch.no_grad()
        else:
            m = model
            ctx = model.disable_adapter() if label == "base" else torch.no_grad()
        with ctx, torch.no_grad():
            out = generate_samples(HFCausalLM(m).eval(), htok, rendered, cfg.sample, device=device, desc=f"sample ({label})")
        for prompt, row in zip([p for p in prompts for _ in range(cfg.sample.num_samples)], out):
            row.pop("ids", None)
            rows.append({**row, "model": label, "prompt": prompt, "rendered_prompt": row["prompt"]})
    write_json(paths.samples, rows)
    return {"samples": rows}


def _train(cfg: PosttrainConfig, paths: RunPaths) -> dict[str, Any]:
    return stage_train(cfg, paths)


STAGES: list[Stage] = [
    Stage("check", stage_check),
    Stage("data", stage_data, record_hash=("data", "key")),
    Stage("train", _train, ranks="all"),
    Stage("cost", stage_cost),
    Stage("eval", stage_eval),
    Stage("sample", stage_sample),
]


def run_pipeline(cfg: PosttrainConfig, paths: RunPaths, command: str = "brlm finetune", resume: bool = False) -> bool:
    """The post-training workflow over one run folder; True on rank 0 when every stage finished."""
    stages = STAGES
    if resume:
        stages = [s if s.name != "train" else Stage("train", lambda c, p: stage_train(c, p, resume=True), ranks="all")
                  for s in STAGES]
    return run_workflow(stages, cfg, paths, command, write_config)


def summary_line(paths: RunPaths) -> str:
    """One line for the terminal: task, the base-vs-adapted figure, time."""
    ev = read_json(paths.eval) if paths.eval.is_file() else {}
    tr = read_json(paths.train_summary) if paths.train_summary.is_file() else {}
    a, b = ev.get("adapted") or {}, ev.get("base") or {}
    if ev.get("task") == "dpo":
        fig = (f"DPO val loss {b.get('loss', math.nan):.4f} -> {a.get('loss', math.nan):.4f}, "
               f"reward accuracy {a.get('reward_accuracy', math.nan):.3f}")
    else:
        fig = f"val ppl {b.get('perplexity', math.nan):.3f} -> {a.get('perplexity', math.nan):.3f}"
    return f"{ev.get('task', '?')}: {fig} | {tr.get('steps', '?')} steps in {tr.get('wall_time_s', 0):.0f} s"


__all__ = ["ROOT", "STAGES", "run_pipeline", "stage_check", "stage_data", "stage_train", "stage_cost", "stage_eval",
           "stage_sample"]
