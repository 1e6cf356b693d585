"""`brlm train`: tokenize a run's data into shards and train the model, with checkpoints and
metrics in the run folder. Needs `brlm data prepare` and `brlm tokenizer train` first.

    brlm train --run runs/meu --set train.max_steps=2000 --set model.n_layer=6
    brlm train --run runs/meu --resume          # continue a killed run exactly where it stopped
    torchrun --nproc_per_node 2 -m brlm train --run-dir runs/meu   # data-parallel (DDP), 2 processes

(Under torchrun write `--run-dir`: torchrun reads `--run` as its own `--run-path`.)

SIGTERM or Ctrl-C saves a checkpoint before exiting; `--resume` continues from the newest
checkpoint that verifies (a corrupted one is reported and skipped).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from brlm.errors import BrlmError
from brlm.io.run_folder import RunPaths, RunRecord
from brlm.stages.pretrain import stage_train, write_config
from brlm.train.distributed import barrier, compute_cleanup, compute_init
from brlm.train.loop import TrainingInterrupted
from brlm.verbs.common import (
    add_config_args,
    add_run_arg,
    default_run_dir,
    maybe_list_keys,
    parser,
    resolve_config,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("train", __doc__)
    add_run_arg(p)
    # torchrun's own argument parser takes `--run` for an abbreviation of its `--run-path`.
    p.add_argument("--run-dir", dest="run", help="same as --run; use this one under torchrun")
    add_config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest good checkpoint in the run folder (starts fresh if there is none)")
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir)
    _ddp, rank, _local, _world, _device = compute_init(cfg.train.device)
    master = rank == 0
    paths = RunPaths(run_dir or default_run_dir(cfg))
    record = RunRecord(paths)
    if master:
        write_config(cfg, paths)
        command = "brlm train " + shlex.join(argv if argv is not None else sys.argv[1:])
        if args.resume and record.data:
            record.update(status="running", resumed=record.data.get("resumed", 0) + 1, error=None)
        else:
            record.start(cfg.preset, cfg.scale, command)
    barrier()
    try:
        summary = stage_train(cfg, paths, record, resume=args.resume)
    except BaseException as e:
        if master:
            status = "interrupted" if isinstance(e, TrainingInterrupted) else "failed"
            record.finish(status, error=str(e) if isinstance(e, (BrlmError, TrainingInterrupted)) else f"{e.__class__.__name__}: {e}")
            if isinstance(e, TrainingInterrupted):
                print(f"brlm train: {e}", file=sys.stderr)
        raise
    finally:
        compute_cleanup()
    if master:
        record.finish("completed")
        print(f"best val loss {summary['best_val_loss']:.4f} at step {summary['best_step']}; checkpoints in {paths.checkpoints}")
    return 0
