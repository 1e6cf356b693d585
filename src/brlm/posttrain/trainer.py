"""One training loop for CPT, SFT and DPO over a Hugging Face causal LM (full, LoRA or QLoRA).

    summary = train_posttrain(cfg, base_folder, run_dir, logger, resume=False)

* Rows: SFT/CPT examples packed into rows of at most `finetune.seq_len` tokens (data.pack_rows);
  DPO pairs one per row. A seeded, resumable order (brlm.data.loader.ShuffledBatches).
* A step: `train.grad_accum` micro-batches of `train.batch_size` rows per process. The loss is the
  mean over every target token of the whole step (all micro-batches, all processes): each
  micro-batch's summed loss is divided by the step's token count, all-reduced first, so 2
  processes with batch B give the same loss and gradient as 1 process with batch 2B, and long and
  short micro-batches weigh what their tokens weigh (DPO: the mean over pairs, the same way).
* AdamW (decay on matrices), warmup then cosine / linear / constant, gradient clipping, gradient
  checkpointing (brlm.posttrain.model), validation every `train.eval_interval` steps (and at 0,
  the base's figure), a checkpoint every `train.save_interval` steps.
* Exact resume: a checkpoint at step S holds the trained tensors (adapters, or every weight),
  optimizer, RNG states of every process, loader position and loop state; `resume=True` continues
  from the newest one that verifies, and a run killed by SIGKILL ends with the same weights and
  losses as an unbroken one (tests/test_posttrain_trainer.py). SIGTERM / Ctrl-C save and stop.
* DPO: the reference is the same model with its adapter switched off (PEFT `disable_adapter`), so
  no second copy of the weights; for `method=full` a frozen copy is kept.
* Under torchrun / `accelerate launch` (both set RANK / WORLD_SIZE) the loss module runs in DDP
  over gloo (CPU) or NCCL; only rank 0 writes. `train.parallel=fsdp` shards it with FSDP2 instead
  (each decoder layer, then the loss module); weights are gathered to full tensors for rank 0 to
  save, and `--resume` loads them (and the full optimizer state) back into the shards on every
  rank, so a resumed FSDP run matches an unbroken one. Not with QLoRA.

Figures go to metrics.jsonl; the summary (train.json) is returned. Progress lines show tokens/s
(real, non-padding tokens) and ETA.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from brlm.config.posttrain import PosttrainConfig
from brlm.data.loader import ShuffledBatches
from brlm.errors import BrlmError, ConfigError, DataError
from brlm.io.files import atomic_path, file_sha256, write_json
from brlm.io.logging import MetricLogger, format_seconds, info
from brlm.models.checkpoint import update_pointers
from brlm.posttrain import data as pdata
from brlm.posttrain.loss import CausalLMLoss, dpo_loss
from brlm.posttrain.model import (
    base_fingerprint,
    build_model,
    hf_model,
    load_tokenizer,
    pad_id,
    save_trained,
    trainable_parameters,
)
from brlm.train.distributed import compute_init
from brlm.train.loop import (
    TrainingInterrupted,
    _StopFlag,
    gather_rng_states,
    peak_memory_mb,
    resume_latest,
)
from brlm.train.optim import make_optimizer


def lr_at(step: int, total: int, tc: Any) -> float:
    """Linear warmup to train.lr, then cosine / linear decay to train.min_lr at `total`, or constant."""
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    progress = min(1.0, (step - tc.warmup_steps) / max(1, total - tc.warmup_steps))
    if tc.schedule == "linear":
        return tc.lr + (tc.min_lr - tc.lr) * progress
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (tc.lr - tc.min_lr)


class Rows:
    """Training or validation rows: lists of examples (SFT/CPT) or (chosen, rejected) pairs (DPO)."""

    def __init__(self, units: list[Any], seq_len: int, packing: bool, dpo: bool):
        self.dpo = dpo
        self.units = units
        if dpo:
            self.rows = [[i] for i in range(len(units))]
        else:
            self.rows = pdata.pack_rows([len(e) for e in units], seq_len, packing)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: Any, pad: int) -> pdata.Batch:
        if self.dpo:  # chosen rows first, then the rejected ones in the same order
            pairs = [self.units[self.rows[i][0]] for i in indices]
            return pdata.collate([[c] for c, _ in pairs] + [[r] for _, r in pairs], pad)
        return pdata.collate([[self.units[j] for j in self.rows[i]] for i in indices], pad)

    def tokens(self) -> int:
        if self.dpo:
            return sum(len(c) + len(r) for c, r in self.units)
        return sum(len(e) for e in self.units)


def load_rows(data_dir: Path, cfg: PosttrainConfig, split: str) -> Rows:
    dpo = cfg.finetune.task == "dpo"
    if dpo:
        chosen = pdata.load_examples(data_dir / f"{split}_chosen.npz")
        rejected = pdata.load_examples(data_dir / f"{split}_rejected.npz")
        units: list[Any] = list(zip(chosen, rejected))
    else:
        units = pdata.load_examples(data_dir / f"{split}.npz")
    if not units:
        raise DataError(f"{data_dir}: no {split} examples left after filtering (see {data_dir / 'manifest.json'})")
    return Rows(units, cfg.finetune.seq_len, cfg.finetune.packing, dpo)


def _all_reduce(t: torch.Tensor, ddp: bool) -> torch.Tensor:
    if ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def reference_context(model: torch.nn.Module, ref_model: torch.nn.Module | None):
    """The DPO reference: the same PEFT model with its adapters off, or a frozen copy (full)."""
    if ref_model is not None:
        return contextlib.nullcontext()
    return model.disable_adapter()


@torch.no_grad()
def evaluate_rows(loss_fn: CausalLMLoss, rows: Rows, pad: int, batch_size: int, device: torch.device, max_batches: int = 0,
                  ddp: bool = False, rank: int = 0, world: int = 1, ref: tuple[Any, Any] | None = None,
                  beta: float = 0.1, lockstep: bool = False) -> dict[str, float]:
    """Mean target loss over the rows (shared across processes), or DPO loss / reward accuracy / margin."""
    was = loss_fn.model.training
    loss_fn.model.eval()
    starts = list(range(0, len(rows), batch_size))
    if max_batches:
        pick = np.unique(np.linspace(0, len(starts) - 1, min(max_batches, len(starts))).round().astype(int))
        starts = [starts[i] for i in pick]
    totals = torch.zeros(4, dtype=torch.float64)
    try:
        mine = starts[rank::world]
        # FSDP: every forward is a collective, so every rank runs as many (an extra one, discarded).
        rounds = math.ceil(len(starts) / world) if lockstep else len(mine)
        for j in range(rounds):
            s = mine[j] if j < len(mine) else starts[0]
            b = rows.batch(range(s, min(s + batch_size, len(rows))), pad).to(device)
            keep = 1.0 if j < len(mine) else 0.0
            if rows.dpo:
                k = b.input_ids.size(0) // 2
                logps = loss_fn(b.input_ids, b.targets, b.position_ids, "logps").double()
                model, ref_model = ref
                with reference_context(model, ref_model):
                    ref_fn = CausalLMLoss(ref_model, loss_fn.fused) if ref_model is not None else loss_fn
                    ref_logps = ref_fn(b.input_ids, b.targets, b.position_ids, "logps").double()
                losses, r = dpo_loss(logps[:k], logps[k:], ref_logps[:k], ref_logps[k:], beta)
                margin = r["chosen_reward"] - r["rejected_reward"]
                totals += keep * torch.tensor([losses.sum().item(), k, (margin > 0).sum().item(), margin.sum().item()], dtype=torch.float64)
            else:
                total, n = loss_fn(b.input_ids, b.targets, b.position_ids)
                totals += keep * torch.tensor([float(total), float(n), 0.0, 0.0], dtype=torch.float64)
    finally:
        loss_fn.model.train(was)
    totals = _all_reduce(totals, ddp)
    loss = float(totals[0] / max(totals[1], 1))
    if rows.dpo:
        return {"loss": loss, "reward_accuracy": float(totals[2] / max(totals[1], 1)),
                "reward_margin": float(totals[3] / max(totals[1], 1)), "pairs": int(totals[1])}
    return {"loss": loss, "targets": int(totals[1])}


def _trained_tensors(model: torch.nn.Module, full: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The trained tensors on CPU, read from `full` (FSDP's gathered state dict) or the parameters."""
    source = full if full is not None else dict(model.named_parameters())
    return {n: source[n].detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def check_parallel(method: str, parallel: str, world: int) -> bool:
    """True when this run shards the model with FSDP2 (train.parallel=fsdp under several processes)."""
    if parallel != "fsdp" or world <= 1:
        return False
    if method == "qlora":
        raise ConfigError("train.parallel=fsdp does not support finetune.method=qlora (bitsandbytes' 4-bit weights need "
                          "FSDP quant-storage settings brlm does not set); use method lora or full, or train.parallel=ddp")
    return True


def shard_fsdp(model: torch.nn.Module, root: torch.nn.Module) -> int:
    """FSDP2: fully_shard every decoder layer (the ModuleList named `layers`, under PEFT or not),
    then the root (the loss module, so its forward gathers the embeddings and head). Returns the
    number of layers sharded."""
    from torch.distributed.fsdp import fully_shard

    lists = [m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and n.split(".")[-1] in ("layers", "h")]
    if len(lists) != 1:
        raise BrlmError(f"train.parallel=fsdp: found {len(lists)} decoder layer lists (a ModuleList named 'layers' or 'h') "
                        "in this model, expected 1; use train.parallel=ddp")
    for layer in lists[0]:
        fully_shard(layer)
    fully_shard(root)
    return len(lists[0])


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU; a collective, every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    if not optimizer.state:  # before the first step: get_optimizer_state_dict would initialise the state with
        return optimizer.state_dict()  # a zero-lr step, bumping Adam's step count (every rank takes this branch)
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The inverse of full_optimizer_state: every rank passes the same full state dict (parameter
    names as keys) and keeps its own shard of it; a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not saved.get("state"):  # saved before the first step (optimizer.state_dict(), no moments yet): only the groups
        optimizer.load_state_dict(saved)
        return
    set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))


def save_state(ckpt_dir: Path, step: int, model: torch.nn.Module, meta: dict[str, Any], tensors: dict[str, Any],
               json_state: dict[str, Any], full: dict[str, torch.Tensor] | None = None) -> None:
    """model_{step}.safetensors (trained tensors), train_{step}.pt (optimizer, RNG), then the meta
    with their hashes (brlm.models.checkpoint verifies and prunes them)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    weights = ckpt_dir / f"model_{step:06d}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(_trained_tensors(model, full), str(tmp))
    state = ckpt_dir / f"train_{step:06d}.pt"
    with atomic_path(state) as tmp:
        torch.save(tensors, tmp)
    files = {weights.name: file_sha256(weights), state.name: file_sha256(state)}
    write_json(ckpt_dir / f"meta_{step:06d}.json", {"step": step, **meta, "train_state": json_state, "files": files})


def load_trained(model: torch.nn.Module, ckpt_dir: Path, step: int, fsdp: bool = False) -> None:
    """The checkpoint's trained tensors into the model. FSDP: every rank reads the full tensors and
    keeps its shard (set_model_state_dict; a collective)."""
    tensors = load_file(str(ckpt_dir / f"model_{step:06d}.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise BrlmError(f"{ckpt_dir}: checkpoint {step} does not match this model (missing {missing[:2]}, unknown {unknown[:2]}); "
                        "resume with the same base and config")
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def train_posttrain(cfg: PosttrainConfig, base_folder: Path, run_dir: Path, logger: MetricLogger,
                    resume: bool = False) -> dict[str, Any]:
    fc, tc = cfg.finetune, cfg.train
    ddp, rank, _local, world, device = compute_init(tc.device)
    master = rank == 0
    fsdp = check_parallel(fc.method, tc.parallel, world)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    dpo = fc.task == "dpo"
    data_dir, ckpt_dir = run_dir / "data", run_dir / "checkpoints"

    tok = load_tokenizer(base_folder, fc.trust_remote_code)
    pad = pad_id(tok)
    train_rows = load_rows(data_dir, cfg, "train")
    val_rows = load_rows(data_dir, cfg, "val")
    if len(train_rows) < world:
        raise DataError(f"{len(train_rows)} training rows cannot be split across {world} processes; add data")
    per_step = tc.batch_size * tc.grad_accum * world
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * len(train_rows) / per_step))
    batches = ShuffledBatches(len(train_rows), tc.batch_size * world, tc.seed)

    model = build_model(base_folder, cfg, device)
    fingerprint = base_fingerprint(model)  # before training: a full fine-tune changes the embeddings
    if fc.packing and not dpo:
        pdata.check_isolation(hf_model(model), len(tok), device)
    ref_model = None
    if dpo and fc.method == "full":
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    loss_fn = CausalLMLoss(model, fc.fused_loss)
    if fsdp:  # before the optimizer: fully_shard replaces the parameters with sharded DTensor ones
        shard_fsdp(model, loss_fn)
    if ddp and rank > 0:
        torch.manual_seed(tc.seed + rank)  # own dropout masks; the adapters start equal (seeded before)
    optimizer = make_optimizer(model, tc, device.type)
    trainable, n_params = trainable_parameters(model)
    train_module: torch.nn.Module = loss_fn
    if ddp and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_module = DDP(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    meta = {"task": fc.task, "method": fc.method, "base": fc.base, "trainable_params": trainable}

    st: dict[str, Any] = {
        "step": 0, "evaluated": False, "tokens": 0, "targets": 0, "padded_tokens": 0, "train_time": 0.0, "wall_time": 0.0,
        "best_val": float("inf"), "best_step": None, "first_val": None, "val": None, "last_train_loss": None,
        "ref_tokens": 0,
    }
    js = resume_latest(ckpt_dir, lambda s: load_trained(model, ckpt_dir, s, fsdp), optimizer, batches, device, rank, master,
                       (lambda saved: load_full_optimizer_state(model, optimizer, saved)) if fsdp else None) if resume else None
    if js is not None:
        st.update(js["loop"])

    def checkpoint(step: int, evaluated: bool) -> None:
        rng, rng_all = gather_rng_states(device, ddp, world)
        full = full_state(model) if fsdp else None  # collectives: every rank
        opt_state = full_optimizer_state(model, optimizer) if fsdp else None
        if not master:
            return
        js = {"loop": {**st, "step": step, "evaluated": evaluated}, "rng": rng["json"], "loader": batches.state_dict()}
        save_state(ckpt_dir, step, model, {**meta, "val": st["val"]},
                   {"optimizer": opt_state if fsdp else optimizer.state_dict(), "rng": rng_all}, js, full)
        update_pointers(ckpt_dir, keep=tc.keep_checkpoints, last=step,
                        **({"best": st["best_step"]} if st["best_step"] is not None else {}))

    def validate() -> dict[str, float]:
        return evaluate_rows(loss_fn, val_rows, pad, tc.batch_size, device, tc.eval_batches, ddp, rank, world,
                             ref=(model, ref_model), beta=fc.dpo_beta, lockstep=fsdp)

    if master:
        info(f"{fc.task}: {fc.method} on {base_folder} | {trainable:,} trainable of {n_params:,} parameters | "
             f"{len(train_rows):,} train rows ({train_rows.tokens():,} tokens), {len(val_rows):,} val rows | "
             f"{total_steps} steps of {per_step} rows | device {device}" + (f" x {world} processes" if ddp else "")
             + f" | loss {'fused chunked' if loss_fn.fused else 'HF logits (' + str(loss_fn.reason) + ')'}")
    wall0 = st["wall_time"]
    t_start = time.perf_counter()
    model.train()
    stop_signal = 0
    step = st["step"]
    with _StopFlag() as flag:
        while True:
            last = step >= total_steps
            if (step % tc.eval_interval == 0 or last) and not (st["evaluated"] and step == st["step"]):
                v = validate()
                st["val"] = v["loss"]
                st["first_val"] = st["first_val"] if st["first_val"] is not None else v
                improved = v["loss"] < st["best_val"]
                if improved:
                    st["best_val"], st["best_step"] = v["loss"], step
                if master:
                    logger.log_dict({f"val_{k}": x for k, x in v.items()} | {"tokens": st["tokens"],
                                    "elapsed": wall0 + time.perf_counter() - t_start}, step)
                    extra = f" | reward acc {v['reward_accuracy']:.3f}" if dpo else f" | ppl {math.exp(min(v['loss'], 50)):.2f}"
                    info(f"step {step:>6}/{total_steps} | val loss {v['loss']:.4f}{extra} (best {st['best_val']:.4f})")
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                if last or step % tc.save_interval == 0:
                    checkpoint(step, evaluated=True)
            elif step % tc.save_interval == 0 and step != st["step"]:
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                checkpoint(step, evaluated=False)
            if last:
                break

            lr = lr_at(step, total_steps, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            micro = []
            for _ in range(tc.grad_accum):
                idx = batches.next_indices()[rank * tc.batch_size:(rank + 1) * tc.batch_size]
                micro.append(train_rows.batch(idx, pad))
            # The step's denominator: every target (SFT/CPT) or pair (DPO) of every micro-batch and process.
            local = sum(b.input_ids.size(0) // 2 if dpo else b.labels for b in micro)
            denom = _all_reduce(torch.tensor([float(local)], dtype=torch.float64), ddp).item()
            step_loss = torch.zeros((), dtype=torch.float64)
            margin_acc = torch.zeros(2, dtype=torch.float64)
            counts = torch.zeros(4, dtype=torch.float64)  # tokens, targets, tokens with padding, reference tokens
            for i, b in enumerate(micro):
                b = b.to(device)
                if fsdp:
                    train_module.set_requires_gradient_sync(i == len(micro) - 1)
                    no_sync = contextlib.nullcontext()
                else:
                    no_sync = train_module.no_sync() if ddp and i < len(micro) - 1 else contextlib.nullcontext()
                with no_sync:
                    if dpo:
                        k = b.input_ids.size(0) // 2
                        with torch.no_grad(), reference_context(model, ref_model):
                            ref_fn = CausalLMLoss(ref_model, loss_fn.fused) if ref_model is not None else loss_fn
                            ref = ref_fn(b.input_ids, b.targets, b.position_ids, "logps")
                        logps = train_module(b.input_ids, b.targets, b.position_ids, "logps")
                        losses, r = dpo_loss(logps[:k], logps[k:], ref[:k], ref[k:], fc.dpo_beta)
                        total = losses.sum()
                        margin = r["chosen_reward"] - r["rejected_reward"]
                        margin_acc += torch.tensor([float((margin > 0).sum()), float(margin.sum())], dtype=torch.float64)
                    else:
                        total, _ = train_module(b.input_ids, b.targets, b.position_ids)
                    (total * (world / max(denom, 1.0))).backward()
                step_loss += float(total.detach()) / max(denom, 1.0)
                counts += torch.tensor([b.tokens, b.labels, b.input_ids.numel(), b.tokens if dpo else 0], dtype=torch.float64)
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                       tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ddp:
                step_loss = _all_reduce(step_loss.reshape(1), True)[0]
                margin_acc = _all_reduce(margin_acc, True)
                counts = _all_reduce(counts, True)
                flag_t = torch.tensor([flag.signum])
                dist.all_reduce(flag_t, op=dist.ReduceOp.MAX)
                flag.signum = int(flag_t.item())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            for key, value in zip(("tokens", "targets", "padded_tokens", "ref_tokens"), counts.tolist()):
                st[key] += int(value)
            st["train_time"] += time.perf_counter() - t0
            st["last_train_loss"] = float(step_loss)
            step += 1
            if step % tc.log_interval == 0 or step == 1:
                tokens_all = st["tokens"]
                tok_s = tokens_all / st["train_time"] if st["train_time"] else 0.0
                elapsed = wall0 + time.perf_counter() - t_start
                done = step - st["step"]
                eta = (time.perf_counter() - t_start) / max(done, 1) * (total_steps - step)
                row = {"train_loss": float(step_loss), "lr": lr, "grad_norm": float(grad_norm), "tokens": tokens_all,
                       "tokens_per_s": tok_s, "elapsed": elapsed, "epoch": batches.epoch}
                if dpo:
                    row.update(reward_accuracy=float(margin_acc[0] / max(denom, 1)), reward_margin=float(margin_acc[1] / max(denom, 1)))
                if master:
                    logger.log_dict(row, step)
                    print(f"step {step:>6}/{total_steps} | loss {float(step_loss):.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s | "
                          f"elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)}", file=sys.stderr, flush=True)
            if flag.signum:
                stop_signal = flag.signum
                st["wall_time"] = wall0 + time.perf_counter() - t_start
                checkpoint(step, evaluated=False)
                break

    full = full_state(model) if fsdp and not stop_signal else None  # a collective: every rank
    if master and not stop_signal:
        out = run_dir / ("model" if fc.method == "full" else "adapter")
        save_trained(model, out, tok, state_dict=full, meta={"base": fc.base, "base_folder": str(base_folder), "base_fingerprint": fingerprint,
                                       "task": fc.task, "method": fc.method, "step": step, "config": cfg.to_dict()})
    if stop_signal:
        raise TrainingInterrupted(f"stopped by {signal.Signals(stop_signal).name} at step {step}; "
                                  "checkpoint saved, continue with --resume")
    tokens_all = st["tokens"]
    return {
        "task": fc.task,
        "method": fc.method,
        "base": fc.base,
        "base_folder": str(base_folder),
        "n_params": n_params,
        "trainable_params": trainable,
        "steps": step,
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "epochs": step * per_step / len(train_rows),
        "tokens_seen": tokens_all,
        "target_tokens": st["targets"],
        "padding_share": 1.0 - st["tokens"] / st["padded_tokens"] if st["padded_tokens"] else 0.0,
        "reference_tokens": st["ref_tokens"],
        "wall_time_s": wall0 + time.perf_counter() - t_start,
        "train_time_s": st["train_time"],
        "tokens_per_s": tokens_all / st["train_time"] if st["train_time"] else 0.0,
        "initial_val": st["first_val"],
        "best_val_loss": st["best_val"],
        "final_val_loss": st["val"],
        "final_train_loss": st["last_train_loss"],
        "best_step": st["best_step"],
        "fused_loss": loss_fn.fused,
        "loss_path": "fused chunked linear_cross_entropy" if loss_fn.fused else f"HF logits ({loss_fn.reason})",
        "device": str(device),
        "processes": world,
        "dtype": str(next(p for p in model.parameters() if p.requires_grad).dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        **peak_memory_mb(device),
    }
