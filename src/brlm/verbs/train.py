"""`brlm train`: tokenize a run's data into shards and train the model, with checkpoints and
metrics in the run folder. Needs `brlm data prepare` and `brlm tokenizer train` first.

    brlm train --run runs/meu --set train.max_steps=2000 --set model.n_layer=6
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from brlm.errors import BrlmError
from brlm.runs.pipeline import stage_train, write_config
from brlm.runs.registry import RunPaths, RunRecord
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
    add_config_args(p)
    args = p.parse_args(argv)
    if maybe_list_keys(args):
        return 0
    run_dir = Path(args.run) if args.run else None
    cfg = resolve_config(args, run_dir)
    paths = RunPaths(run_dir or default_run_dir(cfg))
    write_config(cfg, paths)
    record = RunRecord(paths)
    record.start(cfg.preset, cfg.scale, "brlm train " + shlex.join(argv if argv is not None else sys.argv[1:]))
    try:
        summary = stage_train(cfg, paths, record)
    except BaseException as e:
        record.finish("failed", error=str(e) if isinstance(e, BrlmError) else f"{e.__class__.__name__}: {e}")
        raise
    record.finish("completed")
    print(f"best val loss {summary['best_val_loss']:.4f} at step {summary['best_step']}; checkpoints in {paths.checkpoints}")
    return 0
