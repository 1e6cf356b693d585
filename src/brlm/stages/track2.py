"""Track 2 in one run: from scratch or adapt? (`brlm run track2 --scale tiny`)

    base (a llama trained from scratch by brlm, or track2.base) -> export to Hugging Face
      -> CPT (QLoRA, raw text: Fake.br news, or the demo corpus without the shared data) -> merge
      -> SFT (QLoRA, response-only: a Canarim subset, or brlm's own instruction set)     -> merge
      -> DPO (QLoRA, brlm's own preference set; reference = the SFT model)
      -> extrinsic: base and adapted answer the QA / summarization / rewriting sets of every test-set
         seed (track2.extrinsic_sets, a subset of track2.extrinsic_limit items per task)
      -> track2.json: base-vs-adapted figures of every phase, sources used, times and costs

Every phase is an ordinary run folder inside the track2 folder (base/, cpt/, sft/, dpo/), each
with its own config.yaml, metrics.jsonl, cost.json and report; a phase whose run completed with
the same config is not redone. The phase configs come from the presets named in `track2.*`
(cpt, sft, dpo at `track2.scale`) plus the `track2.*_set` overrides, so the track2 config.yaml
repeats the whole chain. `brlm report` renders the base-vs-adapted table and samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brlm.config import RunConfig
from brlm.config.base import resolve
from brlm.config.posttrain import PosttrainConfig, Track2Config, split_overrides
from brlm.errors import BrlmError
from brlm.io.files import read_json, write_json, write_text
from brlm.io.logging import Timer, info
from brlm.io.run_folder import RunPaths
from brlm.stages import posttrain, pretrain
from brlm.stages.workflow import Stage, run_workflow

ROOT = Track2Config
PHASES = ("cpt", "sft", "dpo")


def write_config(cfg: Track2Config, paths: RunPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, cfg.to_yaml())


def _machine(cfg: Track2Config) -> list[str]:
    t = cfg.track2
    return [f"train.device={t.device}"] + ([f"train.threads={t.threads}"] if t.threads else [])


def _done(paths: RunPaths, cfg: Any, product: str) -> bool:
    """A phase that completed with this very config and still has its product is not redone."""
    if not (paths.record.is_file() and paths.config.is_file() and (paths.root / product).exists()):
        return False
    return read_json(paths.record).get("status") == "completed" and paths.config.read_text(encoding="utf-8") == cfg.to_yaml()


def base_config(cfg: Track2Config) -> RunConfig:
    t = cfg.track2
    return resolve(RunConfig, t.base_preset, t.base_scale or None, overrides=split_overrides(t.base_set) + _machine(cfg))


def _first_existing(source: str, fallback: str) -> tuple[str, bool]:
    """(the source to use, whether it is the fallback): builtin: and hf: sources always exist."""
    if source.startswith(("builtin:", "hf:")) or Path(source).expanduser().exists():
        return source, False
    return fallback, True


def phase_config(cfg: Track2Config, phase: str, base: str) -> PosttrainConfig:
    t = cfg.track2
    preset = {"cpt": t.cpt_preset, "sft": t.sft_preset, "dpo": t.dpo_preset}[phase]
    data: list[str] = []
    if phase == "cpt":
        data = [f"data.source={_first_existing(t.cpt_source, t.cpt_fallback)[0]}"]
    elif phase == "sft":
        train, fell_back = _first_existing(t.sft_train, t.sft_fallback)
        val = "" if fell_back or not t.sft_val or not Path(t.sft_val).expanduser().exists() else t.sft_val
        data = [f"pairs.train={train}", f"pairs.val={val}"]
    elif phase == "dpo":
        data = [f"pairs.train={t.dpo_data}", "pairs.val="]
    own = split_overrides({"cpt": t.cpt_set, "sft": t.sft_set, "dpo": t.dpo_set}[phase])
    overrides = [f"finetune.base={base}", *data, *_machine(cfg), *split_overrides(t.common_set), *own]
    return resolve(PosttrainConfig, preset, t.scale or None, overrides=overrides)


def stage_base(cfg: Track2Config, paths: RunPaths) -> dict[str, Any]:
    """The from-scratch base (a pretraining run in base/), or the given track2.base."""
    t = cfg.track2
    if t.base:
        from brlm.posttrain.model import resolve_base

        folder, origin = resolve_base(t.base, key="track2.base")
        return {"base": t.base, "folder": str(folder), "origin": origin}
    bcfg = base_config(cfg)
    bpaths = RunPaths(paths.root / "base")
    if _done(bpaths, bcfg, "eval.json"):
        info(f"track2: base is up to date in {bpaths.root}")
    else:
        info(f"== track2: base — {bcfg.model.arch} trained from scratch ({t.base_preset}, scale {bcfg.scale}) -> {bpaths.root}")
        pretrain.run_pipeline(bcfg, bpaths, command="brlm run track2 (base)")
    return {"base": str(bpaths.root), "folder": str(bpaths.root), "origin": "brlm run"}


def _base_of(paths: RunPaths, phase: str) -> str:
    """CPT adapts the base; SFT the merged CPT model; DPO the merged SFT model."""
    if phase == "cpt":
        return read_json(paths.root / "track2_base.json")["base"]
    prev = PHASES[PHASES.index(phase) - 1]
    return str(paths.root / prev)


def run_phase(cfg: Track2Config, paths: RunPaths, phase: str, merge: bool) -> dict[str, Any]:
    from brlm.posttrain.model import merge_adapter

    pcfg = phase_config(cfg, phase, _base_of(paths, phase))
    ppaths = RunPaths(paths.root / phase)
    product = "adapter" if pcfg.finetune.method != "full" else "model"
    if _done(ppaths, pcfg, product) and (not merge or (ppaths.root / "merged" / "merge.json").is_file()):
        info(f"track2: {phase} is up to date in {ppaths.root}")
        return {"phase": phase, "skipped": True}
    info(f"== track2: {phase} — {pcfg.finetune.method} on {pcfg.finetune.base} -> {ppaths.root}")
    timer = Timer()
    posttrain.run_pipeline(pcfg, ppaths, command=f"brlm run track2 ({phase})")
    if merge and product == "adapter":
        merge_adapter(posttrain.base_folder(ppaths), ppaths.root / "adapter", ppaths.root / "merged", pcfg)
        info(f"track2: {phase} merged into {ppaths.root / 'merged'}")
    return {"phase": phase, "seconds": timer.elapsed()}


def stage_summary(cfg: Track2Config, paths: RunPaths) -> dict[str, Any]:
    """track2.json: what every phase used and measured, for the report."""
    from datetime import datetime

    t = cfg.track2
    record = read_json(paths.record) if paths.record.is_file() else {}
    out: dict[str, Any] = {"base": read_json(paths.root / "track2_base.json"), "phases": {}}
    bpaths = RunPaths(paths.root / "base")
    if bpaths.eval.is_file():
        out["base"]["eval"] = read_json(bpaths.eval)
        out["base"]["train"] = read_json(bpaths.train_summary)
    for phase in PHASES:
        ppaths = RunPaths(paths.root / phase)
        if not ppaths.eval.is_file():
            continue
        pcfg = read_json(ppaths.root / "posttrain.json")
        data = read_json(ppaths.data / "manifest.json") if (ppaths.data / "manifest.json").is_file() else {}
        out["phases"][phase] = {
            **pcfg,
            "eval": read_json(ppaths.eval),
            "train": read_json(ppaths.train_summary),
            "cost": read_json(ppaths.root / "cost.json") if (ppaths.root / "cost.json").is_file() else None,
            "data": {"splits": data.get("splits"), "source": (data.get("text") or {}).get("source")},
        }
    cpt_source, cpt_fb = _first_existing(t.cpt_source, t.cpt_fallback)
    sft_source, sft_fb = _first_existing(t.sft_train, t.sft_fallback)
    out["sources"] = {"cpt": cpt_source, "cpt_fallback_used": cpt_fb, "sft": sft_source, "sft_fallback_used": sft_fb,
                      "dpo": t.dpo_data}
    if record.get("started"):
        started = datetime.fromisoformat(record["started"])
        out["wall_time_s"] = (datetime.now(started.tzinfo) - started).total_seconds()
    write_json(paths.root / "track2.json", out)
    return out


def _record_base(cfg: Track2Config, paths: RunPaths) -> dict[str, Any]:
    result = stage_base(cfg, paths)
    write_json(paths.root / "track2_base.json", result)
    return result


def _check(cfg: Track2Config, paths: RunPaths) -> dict[str, Any]:
    """Every phase config resolves before any work (bad keys in track2.*_set fail now, not after the base)."""
    base_config(cfg) if not cfg.track2.base else None
    for phase in PHASES:
        if phase == "dpo" and not cfg.track2.dpo_preset:
            continue
        phase_config(cfg, phase, "placeholder")
    return {}


def _final_model(paths: RunPaths) -> Path:
    """The adapted model at the end of the chain: the last phase that ran (a post-training run folder)."""
    for phase in reversed(PHASES):
        if (paths.root / phase / "posttrain.json").is_file():
            return paths.root / phase
    raise BrlmError(f"{paths.root}: no post-training phase has run yet")


def stage_extrinsic(cfg: Track2Config, paths: RunPaths) -> dict[str, Any]:
    """The base and the adapted model answer the extrinsic sets (QA / summarization / rewriting) over
    every test-set seed: extrinsic.json in the track2 folder, with means, CIs and the paired tests."""
    from brlm.config.extrinsic import ExtrinsicConfig
    from brlm.stages.extrinsic import run_extrinsic

    t = cfg.track2
    folders = [s.strip() for s in t.extrinsic_sets.split(";") if s.strip()]
    present = [f for f in folders if Path(f).expanduser().is_dir()]
    if not present:
        reason = "no extrinsic sets configured" if not folders else f"extrinsic sets not found: {', '.join(folders)}"
        info(f"track2: extrinsic evaluation skipped ({reason})")
        write_json(paths.root / "extrinsic_skipped.json", {"reason": reason})
        return {"skipped": reason}
    (paths.root / "extrinsic_skipped.json").unlink(missing_ok=True)
    base = read_json(paths.root / "track2_base.json")["base"]
    ecfg = ExtrinsicConfig(limit=t.extrinsic_limit, device="cpu" if t.device == "auto" else t.device)
    info(f"== track2: extrinsic — base {base} vs adapted {_final_model(paths)} on {len(present)} set folders, "
         f"{t.extrinsic_limit or 'all'} items per task")
    return run_extrinsic([str(base), str(_final_model(paths))], present, paths.root, ecfg)


def stages(cfg: Track2Config) -> list[Stage]:
    out = [Stage("check", _check), Stage("base", _record_base),
           Stage("cpt", lambda c, p: run_phase(c, p, "cpt", merge=True)),
           Stage("sft", lambda c, p: run_phase(c, p, "sft", merge=bool(c.track2.dpo_preset)))]
    if cfg.track2.dpo_preset:
        out.append(Stage("dpo", lambda c, p: run_phase(c, p, "dpo", merge=False)))
    return out + [Stage("extrinsic", stage_extrinsic), Stage("summary", stage_summary)]


STAGES = stages(Track2Config())


def run_pipeline(cfg: Track2Config, paths: RunPaths, command: str = "brlm run track2") -> bool:
    from brlm.train.distributed import is_ddp_env

    if is_ddp_env():
        raise BrlmError("track2 runs its phases one after another in one process; run it without torchrun "
                        "(each `brlm finetune` phase can run under torchrun on its own)")
    return run_workflow(stages(cfg), cfg, paths, command, write_config, device=cfg.track2.device)
