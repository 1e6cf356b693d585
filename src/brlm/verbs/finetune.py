"""`brlm finetune cpt|sft|dpo`: post-train a causal LM (a brlm run, a Hugging Face folder or a hub id)
with LoRA, QLoRA (NF4 base through bitsandbytes) or full fine-tuning, into one run folder with
metrics.jsonl, cost.json, eval.json (base versus adapted), samples and the adapter.
`brlm finetune merge RUN`: the run's base with its adapter merged in, as a Hugging Face folder.

    brlm finetune cpt --base runs/llama --data ../shared/data/fakebr/news.jsonl.gz --scale tiny
    brlm finetune sft --base runs/cpt-tiny --data builtin:instructions --scale tiny   # a merged CPT run as base
    brlm finetune sft --base meta-llama/Llama-3.1-8B-Instruct --scale paper           # the seeds' recipe (GPU)
    brlm finetune dpo --base runs/sft-tiny --scale tiny
    brlm finetune sft --run runs/sft-tiny --resume                                     # after a kill
    brlm finetune merge runs/sft-tiny                                                  # -> runs/sft-tiny/merged
    brlm sample runs/llama/hf --adapter runs/sft-tiny/adapter --prompt "Qual é a capital do Paraná?"

Presets `cpt`, `sft`, `dpo` (scales `tiny` for a CPU, `paper` for the seeds' recipe). Every key:
`brlm finetune sft --list-keys`. Under torchrun / `accelerate launch` the training stage runs on
every process (DDP); the rest on rank 0.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from brlm.config.base import field_help, resolve
from brlm.config.posttrain import TASKS, PosttrainConfig
from brlm.errors import BrlmError
from brlm.io.logging import info
from brlm.io.run_folder import RunPaths
from brlm.verbs.common import parser


def _train_args(p) -> None:
    p.add_argument("--base", help="base model: a brlm run, a post-training run (its merged model), a Hugging Face folder or a hub id")
    p.add_argument("--method", choices=("full", "lora", "qlora"), help="finetune.method (default: the preset's, qlora)")
    p.add_argument("--data", help="training data: a corpus for cpt (data.source), a JSONL of pairs for sft/dpo (pairs.train)")
    p.add_argument("--val", help="validation pairs for sft/dpo (pairs.val; default: split off --data by content hash)")
    p.add_argument("--preset", help="preset (default: the task's own: cpt, sft or dpo)")
    p.add_argument("--scale", help="preset scale: tiny (CPU, minutes) or paper (the seeds' recipe)")
    p.add_argument("--config", help="a resolved config.yaml (e.g. from an earlier run folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable (see --list-keys)")
    p.add_argument("--list-keys", action="store_true", help="list every post-training config key with its default and exit")
    p.add_argument("--run", "--run-dir", dest="run_dir", help="run folder (default: <runs-dir>/<preset>-<scale>; --run-dir under torchrun)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue training from the run's newest good checkpoint")


def config_for(task: str, args) -> PosttrainConfig:
    extra = [f"finetune.task={task}"]
    if args.base:
        extra.append(f"finetune.base={args.base}")
    if args.method:
        extra.append(f"finetune.method={args.method}")
    if args.data:
        extra.append(f"data.source={args.data}" if task == "cpt" else f"pairs.train={args.data}")
    if args.val:
        extra.append(f"pairs.val={args.val}")
    run_cfg = Path(args.run_dir) / "config.yaml" if args.run_dir else None
    config_file = args.config or (str(run_cfg) if args.resume and run_cfg is not None and run_cfg.is_file() else None)
    if config_file:
        return resolve(PosttrainConfig, config_file=config_file, overrides=list(args.overrides) + extra)
    return resolve(PosttrainConfig, args.preset or task, args.scale, overrides=list(args.overrides) + extra)


def cmd_train(task: str, argv: list[str]) -> int:
    from brlm.stages.posttrain import run_pipeline, summary_line

    p = parser(f"finetune {task}", __doc__)
    _train_args(p)
    args = p.parse_args(argv)
    if args.list_keys:
        for key, help_, default in field_help(PosttrainConfig):
            print(f"{key:<32} {default!r:<18} {help_}")
        return 0
    cfg = config_for(task, args)
    if cfg.finetune.task != task:
        raise BrlmError(f"--config {args.config}: a {cfg.finetune.task} config, not {task}")
    paths = RunPaths(Path(args.run_dir) if args.run_dir else Path(args.runs_dir) / f"{cfg.preset}-{cfg.scale}")
    command = "brlm finetune " + shlex.join([task, *argv])
    if run_pipeline(cfg, paths, command=command, resume=args.resume):
        from brlm.runs.report import render_report

        report = render_report(paths.root)
        info(f"report: {report}")
        print(summary_line(paths))
        print(f"adapter: {paths.root / ('model' if cfg.finetune.method == 'full' else 'adapter')}")
    return 0


def cmd_merge(argv: list[str]) -> int:
    p = parser("finetune merge", "Merge a post-training run's adapter into its base and write a Hugging Face folder.")
    p.add_argument("run", help="post-training run folder (with adapter/ and base.json)")
    p.add_argument("--out", help="output folder (default: <run>/merged); an earlier merge there is replaced")
    p.add_argument("--base", help="the base to merge into (default: the run's own base, from base.json)")
    p.add_argument("--adapter", help="adapter folder (default: <run>/adapter)")
    args = p.parse_args(argv)
    from brlm.posttrain.model import check_base_folder, merge_adapter, resolve_base
    from brlm.stages.posttrain import base_folder

    paths = RunPaths(Path(args.run))
    if not paths.root.is_dir():
        raise BrlmError(f"{paths.root}: run folder not found")
    cfg = resolve(PosttrainConfig, config_file=paths.config) if paths.config.is_file() else PosttrainConfig()
    if cfg.finetune.method == "full":
        raise BrlmError(f"{paths.root}: a full fine-tune has no adapter; its model is already in {paths.root / 'model'}")
    folder = resolve_base(args.base, cfg.finetune.checkpoint, key="--base")[0] if args.base else base_folder(paths)
    check_base_folder(folder, key="--base")
    adapter = Path(args.adapter) if args.adapter else paths.root / "adapter"
    out = Path(args.out) if args.out else paths.root / "merged"
    merge_adapter(folder, adapter, out, cfg)
    print(f"merged {adapter} into {folder}: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser("finetune", __doc__)
    p.add_argument("what", choices=(*TASKS, "merge"), help="cpt | sft | dpo | merge")
    if not argv or argv[0].startswith("-"):
        p.parse_args(argv[:1])  # --help prints and exits 0; nothing or a flag is a one-line usage error
    what, rest = argv[0], argv[1:]
    p.parse_args([what])  # an unknown sub-command is a one-line usage error
    return cmd_merge(rest) if what == "merge" else cmd_train(what, rest)
