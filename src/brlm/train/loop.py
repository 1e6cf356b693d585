"""The training loop: shuffled windows from memory-mapped shards, AdamW with a warmup + cosine /
constant / reduce-on-plateau schedule, gradient accumulation and clipping, optional bf16 autocast
and torch.compile, a periodic validation loss on a fixed set of windows, early stopping, and
checkpoints that resume exactly.

Exact resume: a checkpoint at step S is the state at the *start* of iteration S — weights,
optimizer, schedule, every RNG state, the loader position and the metrics so far. `resume=True`
continues from the newest checkpoint that verifies, so a run killed at any moment ends with the
same weights and losses as an unbroken one. SIGTERM / Ctrl-C saves such a checkpoint and stops.

Under torchrun each rank draws the same global batch of window indices and keeps its own slice,
so N processes with batch_size B train like one process with batch_size N*B; only rank 0 writes.
Every figure goes to `metrics.jsonl` through the logger; a summary goes to `train.json`.
Called by `brlm train` and `brlm run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from brlm.config import RunConfig
from brlm.data.loader import ShuffledBatches, Windows, fixed_indices
from brlm.errors import BrlmError
from brlm.eval.intrinsic import evaluate_windows
from brlm.io.files import write_text
from brlm.io.logging import JSONLLogger, MetricLogger, NullLogger, format_seconds, info
from brlm.io.machine import keep_freed_memory
from brlm.models.attention import choose_attention_plan
from brlm.models.checkpoint import (
    latest_good_checkpoint,
    load_train_tensors,
    load_weights,
    save_checkpoint,
    update_pointers,
)
from brlm.models.loss import choose_loss_plan
from brlm.models.registry import build_model, flops_per_token
from brlm.train.distributed import compute_init
from brlm.train.optim import Plateau, lr_at, make_optimizer
from brlm.train.precision import cached_probe, choose_dtype


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM / Ctrl-C: a checkpoint was saved; `--resume` continues from it."""




def steps_for_epochs(epochs: float, n_windows: int, windows_per_step: int) -> int:
    """Optimizer steps that show the model `epochs` passes over `n_windows` training windows."""
    return max(1, math.ceil(epochs * n_windows / windows_per_step))


def keep_metrics_until(path: str | Path, step: int) -> None:
    """Drop metric rows after `step` (logged by a run that was killed after its last checkpoint),
    so a resumed run's metrics.jsonl reads like an unbroken run's."""
    p = Path(path)
    if not p.is_file():
        return
    keep = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if "step" not in row or row["step"] <= step:
            keep.append(line)
    write_text(p, "".join(x + "\n" for x in keep))


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux.
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_cuda_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def autocast_dtype(name: str, device: torch.device, probe: Any = None) -> torch.dtype | None:
    """None means plain fp32; the rule (auto = by measurement) is brlm.train.precision.choose_dtype."""
    return choose_dtype(name, device, probe=probe)[0]


def dtype_name(amp_dtype: torch.dtype | None) -> str:
    """The short name train.json, the cost ledger and the peak table use: 'bf16' or 'fp32'."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")  # type: ignore[arg-type]


class _StopFlag:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps; a second signal aborts."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        info(f"{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def _rng_state(device: torch.device) -> dict[str, Any]:
    tensors = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    np_state = np.random.get_state()
    py_state = random.getstate()
    json_part = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return {"tensors": tensors, "json": json_part}


def _set_rng_state(tensors: dict[str, Any], json_part: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    n = json_part["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = json_part["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def open_metrics(path: str | Path, resumed_step: int | None, master: bool, config: dict[str, Any]) -> MetricLogger:
    """Rank 0's metrics.jsonl: a fresh file that starts with the config, or after a resume the file
    cut after the resumed step and appended to. The other ranks log nothing."""
    if not master:
        return NullLogger()
    if resumed_step is not None:
        keep_metrics_until(path, resumed_step)
    logger = JSONLLogger(path, append=resumed_step is not None)
    if resumed_step is None:
        logger.log_config(config)
    return logger


def restore_train_state(ckpt_dir: str | Path, step: int, ck: dict[str, Any], optimizer: torch.optim.Optimizer,
                        batches: Any, device: torch.device, rank: int,
                        load_optimizer: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Optimizer, this rank's RNG streams and the loader position of a checkpoint; returns its JSON
    train state (the loop's own counters) for the caller to take what else it keeps. The saved
    optimizer state goes to `load_optimizer` (FSDP: a full state dict to shard) or, by default,
    `optimizer.load_state_dict`."""
    tensors = load_train_tensors(ckpt_dir, step)
    (load_optimizer or optimizer.load_state_dict)(tensors["optimizer"])
    js = ck["train_state"]
    rng_t = tensors["rng"][rank] if rank < len(tensors["rng"]) else tensors["rng"][0]
    _set_rng_state(rng_t, js["rng"], device)
    batches.load_state_dict(js["loader"])
    return js


def same_checkpoint_everywhere(step: int, device: torch.device, ckpt_dir: str | Path) -> None:
    """Under several processes: every rank must resume from the same step (-1: none), or FSDP's
    collectives would hang and DDP's replicas would differ. Ranks on machines without a shared run
    folder find different checkpoints; every rank raises the same one-line error."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    t = torch.tensor([step, -step], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    hi, lo = int(t[0]), -int(t[1])
    if hi != lo:
        def name(s: int) -> str:
            return "no checkpoint" if s < 0 else f"step {s}"
        raise BrlmError(f"--resume: the processes found different checkpoints ({name(lo)} and {name(hi)}) in {ckpt_dir}; "
                        "every process must see the same run folder (a shared file system)")


def resume_latest(ckpt_dir: str | Path, load_trained: Callable[[int], None], optimizer: torch.optim.Optimizer,
                  batches: Any, device: torch.device, rank: int, master: bool,
                  load_optimizer: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """`--resume` for any trainer: the newest good checkpoint's weights (`load_trained(step)`),
    optimizer (`load_optimizer(saved state)`, default `optimizer.load_state_dict`), RNG streams and
    loader position restored; returns its JSON train state, or None (no usable checkpoint: start
    from step 0). Under torchrun every rank calls it and reads the same checkpoint."""
    found = latest_good_checkpoint(ckpt_dir)
    same_checkpoint_everywhere(found[0] if found is not None else -1, device, ckpt_dir)
    if found is None:
        if master:
            info(f"resume: no usable checkpoint in {ckpt_dir}; starting from step 0")
        return None
    step0, ck = found
    load_trained(step0)
    js = restore_train_state(ckpt_dir, step0, ck, optimizer, batches, device, rank, load_optimizer)
    if master:
        info(f"resume: continuing from the checkpoint at step {step0} ({len(ck['files'])} files verified)")
    return js


def gather_rng_states(device: torch.device, ddp: bool, world: int) -> tuple[dict[str, Any], list[Any]]:
    """This rank's RNG state, and every rank's RNG tensors (all ranks call; rank 0 saves them)."""
    rng = _rng_state(device)
    rng_all: list[Any] = [rng["tensors"]]
    if ddp:
        rng_all = [None] * world
        dist.all_gather_object(rng_all, rng["tensors"])
    return rng, rng_all


def device_peak_flops(tc: Any, device: torch.device, dtype: str, at_least: float = 0.0) -> float | None:
    """Peak FLOP/s per process for MFU, in the dtype the matmuls run in: train.peak_tflops if
    set, else the GPU table or the measured (and cached per machine) CPU matmul peak of
    brlm.compute.peak."""
    if tc.peak_tflops > 0:
        return tc.peak_tflops * 1e12
    from brlm.compute.cost import device_key, peak_for

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak, _ = peak_for(device_key(str(device), name), dtype, torch.get_num_threads(), at_least=at_least)
    return peak


def train(
    cfg: RunConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    vocab_size: int,
    ckpt_dir: str | Path,
    logger: MetricLogger,
    extra_meta: dict[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train a model from scratch (or from the newest good checkpoint with resume=True); returns
    the summary written to train.json by the caller."""
    tc, mc = cfg.train, cfg.model
    ddp, rank, _local_rank, world, device = compute_init(tc.device)
    master = rank == 0
    if tc.threads:
        torch.set_num_threads(tc.threads)
    # CPU: the step's large tensors reuse pages already mapped (io.machine.keep_freed_memory).
    allocator = (keep_freed_memory() if tc.cpu_allocator == "keep" else {"kept": False, "reason": "asked for"}) \
        if device.type == "cpu" else {"kept": False, "reason": f"{device.type}: the device's own allocator"}
    # dtype 'auto' may probe the model's speed in fp32 and bf16 (forked RNG, cached per machine).
    amp_dtype, dtype_choice = choose_dtype(tc.dtype, device, probe=lambda: cached_probe(mc, vocab_size))
    if ddp:  # every rank trains in rank 0's choice (their probes could disagree)
        flag = torch.tensor([int(amp_dtype is not None)], device=device)
        dist.broadcast(flag, 0)
        amp_dtype = amp_dtype if flag.item() else None
        if (amp_dtype is None) != (dtype_choice["chosen"] == "fp32"):
            dtype_choice = {**dtype_choice, "chosen": dtype_name(amp_dtype), "reason": "rank 0's choice"}
    if master and tc.dtype == "auto":
        info(f"train.dtype auto -> {dtype_choice['chosen']}: {dtype_choice['reason']}")
    peak = device_peak_flops(tc, device, dtype_name(amp_dtype))  # before seeding: measuring the CPU peak must not touch the RNG
    torch.manual_seed(tc.seed)

    train_w = Windows(train_tokens, mc.block_size, tc.stride, name="train")
    val_w = Windows(val_tokens, mc.block_size, mc.block_size, name="validation")
    if tc.epochs > 0:
        # The seeds' budgets are epochs; brlm's loop counts steps. Same windows, same batch: same steps on resume.
        tc = dataclasses.replace(tc, max_steps=steps_for_epochs(tc.epochs, len(train_w), tc.batch_size * tc.grad_accum * world))
        cfg = dataclasses.replace(cfg, train=tc)
        if master:
            info(f"train: {tc.epochs:g} epochs of {len(train_w):,} windows = {tc.max_steps:,} steps")
    val_idx = fixed_indices(len(val_w), tc.eval_windows)
    # Every rank draws the same global batch and keeps its slice (rank r: rows r*B .. (r+1)*B).
    batches = ShuffledBatches(len(train_w), tc.batch_size * world, tc.seed)

    model = build_model(mc, vocab_size).to(device)
    model.label_smoothing = tc.label_smoothing  # the models smooth only in training mode
    if ddp and rank > 0:
        torch.manual_seed(tc.seed + rank)  # different dropout masks per rank; weights come from rank 0
    optimizer = make_optimizer(model, tc, device.type)
    # How the fused loss multiplies the head on this machine (logits or their transpose, chunk size):
    # timed once per machine and shape, outside any compiled graph.
    head = getattr(model, "lm_head", None) or getattr(model, "head", None)
    loss_plan = (choose_loss_plan(head.weight, head.bias, amp_dtype, rows=tc.batch_size * mc.block_size)
                 if isinstance(head, torch.nn.Linear) else None)
    # Attention: the fused kernel or plain matmuls + softmax (faster for short bf16 contexts on CPU).
    attention_plan = (choose_attention_plan(tc.batch_size, mc.n_head, mc.block_size, mc.head_dim, mc.n_layer,
                                            amp_dtype or torch.float32, device)
                      if mc.arch != "rnn" else None)
    plateau = Plateau(tc.plateau_factor, tc.plateau_patience)
    n_params = model.num_params()
    fpt = flops_per_token(model)
    save_every = tc.save_interval or tc.eval_interval
    meta = {
        "arch": mc.arch,
        "model": dataclasses.asdict(mc),
        "vocab_size": vocab_size,
        "n_params": n_params,
        "config": cfg.to_dict(),
        **(extra_meta or {}),
    }

    # Everything the loop carries from step to step, saved in each checkpoint.
    st: dict[str, Any] = {
        "step": 0, "evaluated": False, "tokens_seen": 0, "train_time": 0.0, "wall_time": 0.0,
        "best_val": float("inf"), "best_step": None, "first_val": None, "val_loss": None,
        "evals_since_best": 0, "recent": [], "stopped_early": False, "last_train_loss": None,
    }
    js = resume_latest(ckpt_dir, lambda s: load_weights(model, ckpt_dir, s, str(device)), optimizer, batches, device,
                       rank, master) if resume else None
    if js is not None:
        plateau.load_state_dict(js["plateau"])
        st.update(js["loop"])

    train_model: torch.nn.Module = model
    ddp_model = None
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        train_model = torch.compile(train_model)

    def checkpoint(step: int, evaluated: bool) -> None:
        """Save the state at the start of iteration `step` (all ranks call; rank 0 writes)."""
        rng, rng_all = gather_rng_states(device, ddp, world)
        if not master:
            return
        loop_state = {**st, "step": step, "evaluated": evaluated}
        state = {
            "tensors": {"optimizer": optimizer.state_dict(), "rng": rng_all},
            "json": {"loop": loop_state, "rng": rng["json"], "loader": batches.state_dict(), "plateau": plateau.state_dict()},
        }
        save_checkpoint(ckpt_dir, step, model, {**meta, "val_loss": st["val_loss"], "tokens": st["tokens_seen"]}, state)
        update_pointers(ckpt_dir, keep=tc.keep_checkpoints, last=step,
                        **({"best": st["best_step"]} if st["best_step"] is not None else {}))

    if master:
        info(
            f"train: {mc.arch} {n_params / 1e6:.2f}M params | {len(train_w):,} train windows "
            f"(block {mc.block_size}, stride {tc.stride}) | {len(val_idx)} val windows | device {device}"
            + (f" x {world} processes" if ddp else "")
            + (f" | autocast {dtype_name(amp_dtype)}" if amp_dtype else "")
        )
    tokens_per_step = tc.batch_size * tc.grad_accum * world * mc.block_size
    wall0 = st["wall_time"]
    t_start = time.perf_counter()
    model.train()
    stop_signal = 0
    with _StopFlag() as flag:
        step = st["step"]
        while True:
            last = step == tc.max_steps
            if (step % tc.eval_interval == 0 or last) and not (st["evaluated"] and step == st["step"]):
                val_loss = evaluate_windows(model, val_w, val_idx, batch_size=tc.batch_size, device=device)["loss"]
                st["val_loss"] = val_loss
                st["first_val"] = val_loss if st["first_val"] is None else st["first_val"]
                improved = val_loss < st["best_val"]
                if improved:
                    st["best_val"], st["best_step"], st["evals_since_best"] = val_loss, step, 0
                else:
                    st["evals_since_best"] += 1
                reduced = tc.schedule == "plateau" and plateau.step(val_loss)
                row = {"val_loss": val_loss, "tokens": st["tokens_seen"], "elapsed": wall0 + time.perf_counter() - t_start}
                if reduced:
                    row["lr_scale"] = plateau.scale
                if master:
                    logger.log_dict(row, step)
                    info(f"step {step:>6}/{tc.max_steps} | val loss {val_loss:.4f} (best {st['best_val']:.4f})"
                         + (f" | lr x{plateau.scale:g}" if reduced else ""))
                if tc.early_stop_patience and st["evals_since_best"] >= tc.early_stop_patience and not last:
                    st["stopped_early"] = True
                    if master:
                        info(f"early stop: {st['evals_since_best']} validations without improvement")
                    last = True
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                if improved or last or step % save_every == 0:
                    checkpoint(step, evaluated=True)
            elif step % save_every == 0 and step != st["step"]:
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                checkpoint(step, evaluated=False)
            if last:
                break

            lr = lr_at(step, tc, plateau.scale)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            step_loss = 0.0
            for micro in range(tc.grad_accum):
                idx = batches.next_indices()[rank * tc.batch_size : (rank + 1) * tc.batch_size]
                x, y = train_w.batch(idx, device)
                # DDP: all-reduce gradients only on the last micro-batch of the step.
                no_sync = ddp_model.no_sync() if ddp_model is not None and micro < tc.grad_accum - 1 else contextlib.nullcontext()
                amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
                with no_sync, amp:
                    _, loss = train_model(x, y)
                (loss / tc.grad_accum).backward()
                step_loss += loss.detach() / tc.grad_accum
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ddp:
                # Average the logged loss over ranks, and stop together if any rank got a signal.
                dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
                step_loss /= world
                flag_t = torch.tensor([flag.signum], device=device)
                dist.all_reduce(flag_t, op=dist.ReduceOp.MAX)
                flag.signum = int(flag_t.item())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            st["train_time"] += dt
            st["tokens_seen"] += tokens_per_step
            st["recent"].append(float(step_loss))
            st["last_train_loss"] = float(step_loss)

            if (step + 1) % tc.log_interval == 0 or step == 0:
                tok_s = st["tokens_seen"] / st["train_time"]
                elapsed = wall0 + time.perf_counter() - t_start
                eta = (time.perf_counter() - t_start) / (step + 1 - st["step"]) * (tc.max_steps - step - 1)
                train_loss = sum(st["recent"]) / len(st["recent"])
                st["recent"] = []
                row = {
                    "train_loss": train_loss, "lr": lr, "grad_norm": float(grad_norm), "tokens": st["tokens_seen"],
                    "tokens_per_s": tok_s, "elapsed": elapsed, "epoch": batches.epoch,
                }
                if peak and fpt * tok_s > peak * world and tc.peak_tflops == 0:
                    peak = device_peak_flops(tc, device, dtype_name(amp_dtype), at_least=fpt * tok_s / world)  # the cached peak was too low
                if peak:
                    row["mfu"] = fpt * tok_s / (peak * world)
                aux = getattr(model, "aux_losses", None)
                if aux:
                    row.update({k: float(v) for k, v in aux.items() if k != "ce" and v is not None})
                    row["expert_load"] = [[round(float(f), 4) for f in layer] for layer in model.expert_load]
                if master:
                    logger.log_dict(row, step + 1)
                    print(
                        f"step {step + 1:>6}/{tc.max_steps} | loss {train_loss:.4f} | lr {lr:.2e} | "
                        f"{tok_s:,.0f} tok/s" + (f" | MFU {row['mfu']:.1%}" if "mfu" in row else "")
                        + f" | elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)}",
                        file=sys.stderr,
                        flush=True,
                    )
            step += 1
            if flag.signum:
                stop_signal = flag.signum
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                checkpoint(step, evaluated=False)
                break

    if stop_signal:
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(stop_signal).name} at step {step}; checkpoint saved, continue with --resume"
        )
    steps_done = step
    return {
        "arch": mc.arch,
        "n_params": n_params,
        "flops_per_token": fpt,
        "steps": steps_done,
        "max_steps": tc.max_steps,
        "stopped_early": st["stopped_early"],
        "tokens_seen": st["tokens_seen"],
        "epochs": st["tokens_seen"] / max(1, len(train_tokens)),
        "wall_time_s": wall0 + time.perf_counter() - t_start,
        "train_time_s": st["train_time"],
        "tokens_per_s": st["tokens_seen"] / st["train_time"] if st["train_time"] else 0.0,
        **({"mfu": fpt * st["tokens_seen"] / st["train_time"] / (peak * world), "peak_flops_per_s": peak}
           if peak and st["train_time"] else {}),
        "initial_val_loss": st["first_val"],
        "best_val_loss": st["best_val"],
        "final_val_loss": st["val_loss"],
        "final_train_loss": st.get("last_train_loss"),
        "best_step": st["best_step"],
        "device": str(device),
        "processes": world,
        "dtype": dtype_name(amp_dtype),
        "dtype_choice": dtype_choice,
        "loss_plan": loss_plan,
        "attention_plan": attention_plan,
        "cpu_allocator": allocator,
        "compiled": tc.compile,
        "threads": torch.get_num_threads(),
        **peak_memory_mb(device),
    }
