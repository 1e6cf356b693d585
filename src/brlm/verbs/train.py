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

import contextlib
import shlex
import sys
from pathlib import Path

from brlm.errors import BrlmError
from brlm.io.run_folder import RunLock, RunPaths, RunRecord
from brlm.stages.pretrain import require_resumable, stage_train, write_config
from brlm.stages.workflow import persisted_config
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
                   help="continue from the newest good checkpoint in the run folder (starts fresh if there is none; "
                        "refuses when every checkpoint is corrupt)")
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir)
    _ddp, rank, _local, _world, _device = compute_init(cfg.train.device)
    master = rank == 0
    paths = RunPaths(run_dir or default_run_dir(cfg))
    record = RunRecord(paths)
    command = "brlm train " + shlex.join(argv if argv is not None else sys.argv[1:])
    lock = RunLock(paths, command)
    ended = False  # the normal end: every rank leaves the process group together
    try:
        if master:
            lock.acquire()
            if args.resume:
                require_resumable(paths)  # all checkpoints corrupt: refuse before touching anything
        barrier()
        with persisted_config(cfg, paths, write_config) if master else contextlib.nullcontext():
            if master:
                if args.resume and record.data:
                    record.resume(command)
                else:
                    record.start(cfg.preset, cfg.scale, command)
            try:
                summary = stage_train(cfg, paths, record, resume=args.resume)
            except BaseException as e:
                if master:
                    status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                    record.finish(status, error=str(e) if isinstance(e, (BrlmError, TrainingInterrupted)) else f"{e.__class__.__name__}: {e}")
                    if isinstance(e, TrainingInterrupted):
                        print(f"brlm train: {e}", file=sys.stderr)
                raise
        ended = True
    finally:
        lock.release()
        compute_cleanup(synchronize=ended)
    if master:
        # `brlm train` is one stage: the run's evaluation, samples and report are still to come.
        record.finish("trained")
        print(f"best val loss {summary['best_val_loss']:.4f} at step {summary['best_step']}; checkpoints in {paths.checkpoints}")
        print(f"next: brlm eval intrinsic {paths.root}, or `brlm run --resume --run {paths.root}` for every stage still missing",
              file=sys.stderr)
    return 0
