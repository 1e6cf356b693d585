"""One code path for one process and for many: `python -m brlm train …` and
`torchrun --nproc_per_node N -m brlm train …` run the same loop (nanochat's `compute_init`).

Under torchrun or `accelerate launch` (RANK / LOCAL_RANK / WORLD_SIZE in the environment; under
mpirun, as `accelerate launch --cpu --mpirun_hostfile` uses, the MPI ranks) the process group is joined
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
from brlm.io.logging import info
from brlm.io.machine import resolve_device

# mpirun's variables (Open MPI, Intel MPI / MPICH, MVAPICH): `accelerate launch --cpu --num_processes N
# --mpirun_hostfile F` starts the processes with mpirun and sets only MASTER_ADDR / MASTER_PORT itself.
_MPI_VARS = {
    "RANK": ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"),
    "WORLD_SIZE": ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"),
    "LOCAL_RANK": ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK"),
}
_warned_single = False


def adopt_mpi_env() -> bool:
    """Under mpirun (with MASTER_ADDR / MASTER_PORT set, as `accelerate launch --cpu` does) and no
    RANK: copy the MPI rank, size and local rank into RANK / WORLD_SIZE / LOCAL_RANK, so the
    process group joins with env:// as under torchrun. Returns True when it did."""
    if "RANK" in os.environ or not ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ):
        return False
    found = {k: next((os.environ[v] for v in names if v in os.environ), None) for k, names in _MPI_VARS.items()}
    if found["RANK"] is None or found["WORLD_SIZE"] is None:
        return False
    os.environ["RANK"], os.environ["WORLD_SIZE"] = found["RANK"], found["WORLD_SIZE"]
    os.environ["LOCAL_RANK"] = found["LOCAL_RANK"] if found["LOCAL_RANK"] is not None else found["RANK"]
    return True


def is_ddp_env() -> bool:
    adopt_mpi_env()
    return int(os.environ.get("RANK", -1)) != -1 and int(os.environ.get("WORLD_SIZE", 1)) >= 1


def _warn_single_accelerate_cpu() -> None:
    """`accelerate launch --cpu --num_processes N` (N > 1) without mpirun starts ONE process (it sets
    MASTER_ADDR / MASTER_PORT and expects mpirun to start the rest): say so instead of silently
    training alone."""
    global _warned_single
    if _warned_single or os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1", "yes"):
        return
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        _warned_single = True
        info("warning: `accelerate launch --cpu --num_processes N` started only this process (without "
             "--mpirun_hostfile it expects mpirun to start the others); training in 1 process. For N CPU "
             "processes use `accelerate launch --multi_gpu --num_processes N --main_process_port 0 -m brlm …` "
             "(torchrun underneath; gloo on CPU)")


def compute_init(device_name: str = "auto") -> tuple[bool, int, int, int, torch.device]:
    """Returns (ddp, rank, local_rank, world_size, device); joins the process group under torchrun.

    Safe to call more than once: a second call returns the same values.
    """
    if not is_ddp_env():
        _warn_single_accelerate_cpu()
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
