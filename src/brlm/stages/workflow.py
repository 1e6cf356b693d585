"""A workflow is a list of stages run in order over one run folder; `brlm run` walks it.

    Stage("data", stage_data, ranks="main", record_hash=("data", "key"))

Each stage is `stage(cfg, paths) -> dict` (the manifest or figures it wrote). Under torchrun every
rank runs the `ranks="all"` stages (training); rank 0 alone runs the others and writes. Stages
before the first `all` stage run on rank 0 while the other ranks wait; if one fails they all stop
with its error. The run record (`run.json`) says how the run ended and which hashes it used.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

from brlm.errors import BrlmError
from brlm.io.files import write_text
from brlm.io.run_folder import RunPaths, RunRecord
from brlm.train.distributed import broadcast_from_main, compute_cleanup, compute_init

StageFn = Callable[[Any, RunPaths], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: StageFn
    ranks: str = "main"  # "main": rank 0 only; "all": every rank (training under torchrun)
    record_hash: tuple[str, str] | None = None  # (name in run.json "hashes", key of the stage's result)


def run_workflow(stages: list[Stage], cfg: Any, paths: RunPaths, command: str, write_config: Callable[[Any, RunPaths], None],
                 device: str | None = None) -> bool:
    """Every stage in order; returns True on rank 0 (which goes on to the report), False elsewhere.
    `device` defaults to the config's train.device."""
    ddp, rank, _local, _world, _device = compute_init(device or cfg.train.device)
    master = rank == 0
    record = RunRecord(paths)
    first_all = next((i for i, s in enumerate(stages) if s.ranks == "all"), len(stages))
    others_released = not ddp  # under torchrun the other ranks wait for rank 0's preparation stages
    try:
        if master:
            write_config(cfg, paths)
            record.start(cfg.preset, cfg.scale, command)
        try:
            for i, stage in enumerate(stages):
                if i == first_all and ddp:
                    if master:
                        broadcast_from_main(None)  # the preparation stages are done
                        others_released = True
                    else:
                        error = broadcast_from_main(None)
                        if error is not None:
                            raise BrlmError(f"rank 0 failed before training: {error}")
                if stage.ranks != "all" and not master:
                    if i > first_all:
                        return False
                    continue
                result = stage.fn(cfg, paths)
                if master and stage.record_hash is not None:
                    name, key = stage.record_hash
                    record.set_hash(name, result[key])
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
    if not master:
        return False
    record.finish("completed")
    return True
