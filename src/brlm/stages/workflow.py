"""A workflow is a list of stages run in order over one run folder; `brlm run` walks it.

    Stage("data", stage_data, ranks="main", record_hash=("data", "key"))

Each stage is `stage(cfg, paths) -> dict` (the manifest or figures it wrote). Under torchrun every
rank runs the `ranks="all"` stages (training); rank 0 alone runs the others and writes. Stages
before the first `all` stage run on rank 0 while the other ranks wait; if one fails they all stop
with its error. The run record (`run.json`) says how the run ended and which hashes it used.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from brlm.errors import BrlmError, ConfigError
from brlm.io.files import write_text
from brlm.io.run_folder import RunLock, RunPaths, RunRecord
from brlm.train.distributed import broadcast_from_main, compute_cleanup, compute_init

StageFn = Callable[[Any, RunPaths], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: StageFn
    ranks: str = "main"  # "main": rank 0 only; "all": every rank (training under torchrun)
    record_hash: tuple[str, str] | None = None  # (name in run.json "hashes", key of the stage's result)
    resumable: bool = False  # takes resume=True (`brlm run --resume`): continue from its last checkpoint


@contextlib.contextmanager
def persisted_config(cfg: Any, paths: RunPaths, write_config: Callable[[Any, RunPaths], None]) -> Iterator[None]:
    """Write config.yaml for the stages to read; if the work then rejects a config value
    (ConfigError), put the previous config.yaml back (or remove it), so a rejected --set is not
    kept and later commands do not fail on it."""
    old = paths.config.read_text(encoding="utf-8") if paths.config.is_file() else None
    write_config(cfg, paths)
    try:
        yield
    except ConfigError:
        if old is None:
            paths.config.unlink(missing_ok=True)
        else:
            write_text(paths.config, old)
        raise


def run_workflow(stages: list[Stage], cfg: Any, paths: RunPaths, command: str, write_config: Callable[[Any, RunPaths], None],
                 resume: bool = False, device: str | None = None) -> bool:
    """Every stage in order; returns True on rank 0 (which goes on to the report), False elsewhere.
    With resume=True the run record continues and resumable stages continue from their checkpoints.
    Rank 0 holds the run folder's lock throughout (a second writer gets a one-line error).
    `device` defaults to the config's train.device."""
    ddp, rank, _local, _world, _device = compute_init(device or cfg.train.device)
    master = rank == 0
    record = RunRecord(paths)
    first_all = next((i for i, s in enumerate(stages) if s.ranks == "all"), len(stages))
    released = [not ddp]  # under torchrun the other ranks wait for rank 0's preparation stages
    lock = RunLock(paths, command)
    try:
        try:
            if master:
                lock.acquire()
                with persisted_config(cfg, paths, write_config):
                    if resume and record.data:
                        record.resume(command)
                    else:
                        record.start(cfg.preset, cfg.scale, command)
                    _run_stages(stages, cfg, paths, record, master, ddp, first_all, released, resume)
            elif not _run_stages(stages, cfg, paths, record, master, ddp, first_all, released, resume):
                return False
        except BaseException as e:
            msg = str(e) if isinstance(e, BrlmError) else f"{e.__class__.__name__}: {e}"
            if master:
                if not released[0]:
                    broadcast_from_main(msg or e.__class__.__name__)  # they stop with this error
                if lock.held:  # never write into a run folder another process holds
                    interrupted = isinstance(e, KeyboardInterrupt)  # Ctrl-C / SIGTERM (training saved a checkpoint)
                    record.finish("interrupted" if interrupted else "failed", error=msg or e.__class__.__name__)
                    if not isinstance(e, (BrlmError, KeyboardInterrupt, OSError)):
                        write_text(paths.root / "error.txt", traceback.format_exc())
            raise
    finally:
        lock.release()
        # No barrier: under torchrun the other ranks leave after training while rank 0 still
        # evaluates, and waiting for it could outlast the process group's timeout.
        compute_cleanup(synchronize=False)
    if not master:
        return False
    record.finish("completed")
    return True


def _run_stages(stages: list[Stage], cfg: Any, paths: RunPaths, record: RunRecord, master: bool, ddp: bool,
                first_all: int, released: list[bool], resume: bool) -> bool:
    """The stages this rank runs; False when a rank > 0 stops after training."""
    for i, stage in enumerate(stages):
        if i == first_all and ddp:
            if master:
                broadcast_from_main(None)  # the preparation stages are done
                released[0] = True
            else:
                error = broadcast_from_main(None)
                if error is not None:
                    raise BrlmError(f"rank 0 failed before training: {error}")
        if stage.ranks != "all" and not master:
            if i > first_all:
                return False
            continue
        result = stage.fn(cfg, paths, resume=True) if resume and stage.resumable else stage.fn(cfg, paths)
        if master and stage.record_hash is not None:
            name, key = stage.record_hash
            record.set_hash(name, result[key])
    return True
