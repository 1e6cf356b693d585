"""One code path for one process and for many: `python -m brlm train …` and
`torchrun --nproc_per_node N -m brlm train …` run the same loop (nanochat's `compute_init`).

Under torchrun (RANK / LOCAL_RANK / WORLD_SIZE in the environment) the process group is joined
with NCCL on GPUs and gloo on CPUs; each rank reads its own slice of every global batch and only
rank 0 writes files. Multi-node: run the same torchrun command on every machine with
`--nnodes M --node_rank i --rdzv_backend c10d --rdzv_endpoint HOST:PORT` (see the README).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from brlm.errors import ConfigError
from brlm.io.machine import resolve_device


def is_ddp_env() -> bool:
    return int(os.environ.get("RANK", -1)) != -1 and int(os.environ.get("WORLD_SIZE", 1)) >= 1


def compute_init(device_name: str = "auto") -> tuple[bool, int, int, int, torch.device]:
    """Returns (ddp, rank, local_rank, world_size, device); joins the process group under torchrun.

    Safe to call more than once: a second call returns the same values.
    """
    if not is_ddp_env():
        return False, 0, 0, 1, resolve_device(device_name)
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={device_name!r}: CUDA is not available on this machine; use 'cpu' or 'auto'")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30),
                                device_id=device if use_cuda else None)
    return True, rank, local_rank, world, device


def compute_cleanup(synchronize: bool = True) -> None:
    """Leave the process group. `synchronize` (the normal end): wait for every rank first, so no
    rank tears its connections down while another still uses them (gloo can then abort the other
    process with "terminate called without an active exception"). After a failure, do not wait:
    the other ranks may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            try:
                dist.barrier()
            except Exception:  # noqa: BLE001 - a rank that failed already left; leave too
                pass
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_from_main(value: object) -> object:
    """Rank 0's `value` on every rank (a no-op in one process). Also a barrier: the other ranks
    wait here for rank 0, which is how they learn whether its stages succeeded."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
