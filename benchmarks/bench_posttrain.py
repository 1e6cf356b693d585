"""Post-training benchmarks (issue 11), side by side in one run; prints Markdown tables for RESULTS.md.

    .venv/bin/python benchmarks/bench_posttrain.py throughput --base runs/llama/hf --steps 20
    .venv/bin/python benchmarks/bench_posttrain.py memory --vocab 32000 --seq-len 1024
    .venv/bin/python benchmarks/bench_posttrain.py estimate --base runs/llama/hf
    .venv/bin/python benchmarks/bench_posttrain.py all --write      # default base; tables into RESULTS.md

* throughput: SFT on the Canarim subset (../shared/data/canarim/sft_10k_train.jsonl, or brlm's own
  instruction set) over the same base and the same LoRA config, brlm's trainer against TRL's
  `SFTTrainer` configured as its documentation shows for a first run (SFTConfig with the same batch,
  accumulation, lr, max_length, bf16 off on CPU). The figure is useful tokens per second: real
  (non-padding) tokens of the training rows, context and labelled, divided by the time of the
  training steps. Target: brlm >= 1.5x TRL.
* memory: peak RSS of one training step (forward + backward + AdamW) with brlm's fused chunked loss
  against the model's own loss (full logits), for full fine-tuning, LoRA and QLoRA, at vocab >= 32k
  and seq 1024 on a randomly initialised Llama-style model. Target: fused >= 30 % lower.
* estimate: `brlm estimate`'s prediction (brlm.compute.memory, the fit check's model) against the
  measured peak for LoRA and QLoRA. Target: within 20 %.

Without --base, the throughput base is built here the way `brlm export hf` writes brlm models: a
SentencePiece tokenizer (vocab 8,000, role markers as single pieces) trained on the SFT data, and a
random Llama-style brlm model (4 layers, 256 wide, context 1,024). The CPU model and flags and the
load average are printed beside every ratio; a busy machine refuses to measure unless --force.

Allocator: every memory case runs twice. With glibc's default settings (what a user's process does)
the mmap threshold rises to 32 MiB after the first large frees, so the activations come from the heap
and freed memory stays in the process: the peak RSS is 60–90 MB above the live tensors at these sizes.
With MALLOC_MMAP_THRESHOLD_=131072 every block above 128 KiB is returned on free and the peak RSS
tracks the live tensors. The estimate models the live tensors term by term and adds, on CPU, a
stated allowance for glibc (50 % of the activations held on its heap, brlm.compute.memory); the
target is checked against the default-allocator peak (the one that decides whether a run fits), and
the live-tensor part of the estimate is shown against the fixed-threshold peak.

Each measurement runs in its own subprocess so one run's allocations do not inflate the next one's
peak; the baseline subtracted from peak RSS is the process after imports and a warm-up step of a
tiny model (the Python + PyTorch runtime, which the estimate does not model on CPU). The weights count
in the step: transformers maps the safetensors file and the first forward touches its pages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchlib import check_load, tag, write_table

ROOT = Path(__file__).resolve().parents[1]
CANARIM = ROOT.parent / "shared" / "data" / "canarim" / "sft_10k_train.jsonl"

THROUGHPUT_CHILD = r"""
import json, sys, time, os, warnings
warnings.filterwarnings("ignore")
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from brlm.config.base import resolve
from brlm.config.posttrain import PosttrainConfig
overrides = [f"finetune.base={spec['base']}", "finetune.task=sft", f"finetune.method={spec['method']}",
             f"finetune.seq_len={spec['seq_len']}", f"pairs.train={spec['data']}", f"pairs.max_train={spec['max_train']}",
             "lora.r=16", "lora.alpha=32", "lora.dropout=0.05", "train.gradient_checkpointing=false",
             f"train.batch_size={spec['batch']}", f"train.grad_accum={spec['accum']}", f"train.max_steps={spec['steps']}",
             "train.warmup_steps=0", "train.lr=2e-4", "train.eval_interval=100000", "train.save_interval=100000",
             "train.fit_check=false", "train.device=cpu", f"train.threads={spec['threads']}", "finetune.too_long=truncate",
             f"finetune.packing={'true' if spec['packing'] else 'false'}"]
cfg = resolve(PosttrainConfig, overrides=overrides)
if spec["engine"] == "brlm":
    from pathlib import Path
    from brlm.io.logging import NullLogger
    from brlm.io.run_folder import RunPaths
    from brlm.stages.posttrain import stage_check, stage_data
    from brlm.posttrain.trainer import train_posttrain
    paths = RunPaths(Path(spec["out"]))
    stage_check(cfg, paths); stage_data(cfg, paths)
    s = train_posttrain(cfg, Path(spec["base"]), paths.root, NullLogger())
    print(json.dumps({"useful_tokens": s["tokens_seen"], "seconds": s["train_time_s"], "tokens_per_s": s["tokens_per_s"]}))
else:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    rows = [json.loads(l) for l in open(spec["data"], encoding="utf-8")][: spec["max_train"]]
    def to_messages(r):
        user = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]}
    ds = Dataset.from_list([to_messages(r) for r in rows])
    tok = AutoTokenizer.from_pretrained(spec["base"])
    model = AutoModelForCausalLM.from_pretrained(spec["base"])
    # Count what the trainer really trains on (non-padding tokens of every micro-batch it steps on,
    # across epochs if the packed set runs out) and time from its first step to the end, as brlm's
    # train_time counts only training steps.
    seen = {"tokens": 0, "t0": None}
    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            if seen["t0"] is None:
                seen["t0"] = time.perf_counter()
            m = inputs.get("attention_mask")
            seen["tokens"] += int(m.sum()) if m is not None else int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *rest, **kw)
    args = SFTConfig(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], gradient_accumulation_steps=spec["accum"],
                     learning_rate=2e-4, max_steps=spec["steps"], max_length=spec["seq_len"], logging_steps=1000,
                     save_strategy="no", report_to=[], assistant_only_loss=False, completion_only_loss=None,
                     packing=spec["packing"], use_cpu=True, bf16=False, dataloader_num_workers=0)
    trainer = Counting(model=model, args=args, train_dataset=ds, processing_class=tok,
                       peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    dt = time.perf_counter() - seen["t0"]
    n = seen["tokens"]
    print(json.dumps({"useful_tokens": n, "seconds": dt, "tokens_per_s": n / dt}))
"""

MEMORY_CHILD = r"""
import json, resource, sys, warnings
warnings.filterwarnings("ignore")
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
from pathlib import Path
from brlm.config.base import resolve
from brlm.config.posttrain import PosttrainConfig
from brlm.posttrain.model import build_model
from brlm.posttrain.loss import CausalLMLoss
from brlm.train.optim import make_optimizer

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def cfg_for(base):
    return resolve(PosttrainConfig, overrides=[f"finetune.base={base}", f"finetune.method={spec['method']}",
                   f"finetune.seq_len={spec['seq_len']}", f"finetune.fused_loss={'true' if spec['fused'] else 'false'}",
                   "train.gradient_checkpointing=false", "train.device=cpu", "lora.r=16", "lora.dropout=0",
                   f"train.batch_size={spec['batch']}"])

def step(base):
    cfg = cfg_for(base)
    model = build_model(Path(base), cfg, torch.device("cpu"))
    fn = CausalLMLoss(model, cfg.finetune.fused_loss)
    opt = make_optimizer(model, cfg.train, "cpu")
    V = model.get_base_model().config.vocab_size if hasattr(model, "get_base_model") else model.config.vocab_size
    ids = torch.randint(0, V, (spec["batch"], spec["seq_len"]))
    targets = torch.cat([ids[:, 1:], torch.full((spec["batch"], 1), -100)], dim=1)
    pos = torch.arange(spec["seq_len"]).expand(spec["batch"], -1)
    total, n = fn(ids, targets, pos)
    (total / n).backward()
    opt.step()
    return model, cfg

step(spec["warmup_base"])
base_rss = rss_mb()
model, cfg = step(spec["base"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from brlm.posttrain.fit import estimate, model_spec
est = estimate(model_spec(Path(spec["base"]), spec["seq_len"], spec["fused"]), cfg, torch.device("cpu"))
print(json.dumps({"peak_mb": peak, "baseline_mb": base_rss, "measured_mb": peak - base_rss, "predicted_mb": est.total_bytes / 2**20,
                  "predicted_live_mb": (est.total_bytes - est.terms.get("allocator", 0.0)) / 2**20,
                  "terms_mb": {k: round(v / 2**20, 1) for k, v in est.terms.items() if v}}))
"""


# glibc's default allocator vs a fixed 128 KiB mmap threshold (peak RSS = live tensors); module docstring.
MMAP_FIXED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def child(code: str, spec: dict, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(spec.get("threads", 2)), **(extra_env or {})}
    if extra_env is None:
        for k in MMAP_FIXED:
            env.pop(k, None)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def random_llama(out: Path, vocab: int, n_embd: int, n_layer: int, seq_len: int) -> Path:
    """A randomly initialised Llama-style Hugging Face folder with brlm's chat template (no training needed)."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=n_embd, intermediate_size=int(8 * n_embd / 3) // 64 * 64 + 64,
                      num_hidden_layers=n_layer, num_attention_heads=max(1, n_embd // 64), num_key_value_heads=max(1, n_embd // 128),
                      max_position_embeddings=seq_len, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)
    vocab_map = {f"<{i}>": i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab_map, unk_token="<0>")),
                                  eos_token="<2>", bos_token="<1>", unk_token="<0>")
    tok.save_pretrained(out)
    return out


def default_base(out: Path, data: str, seq_len: int) -> Path:
    """A brlm-exported Hugging Face base of a realistic small size (module docstring), random weights."""
    import json as _json

    import torch

    from brlm.config import ModelConfig, TokenizerConfig
    from brlm.models.export_hf import save_hf_model
    from brlm.models.registry import build_model
    from brlm.tokenizers.base import load_tokenizer, train_tokenizer
    from brlm.tokenizers.hf import ROLE_MARKERS, save_hf_tokenizer

    if (out / "config.json").is_file():
        return out
    rows = [_json.loads(line) for line in open(data, encoding="utf-8")][:4000]
    texts = [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in rows]
    tok_dir = out.parent / f".{out.name}-spm"
    train_tokenizer(texts, TokenizerConfig(vocab_size=8000, user_defined_symbols=",".join(ROLE_MARKERS.values())),
                    tok_dir, data_key="bench-posttrain")
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    cfg = ModelConfig(arch="llama", n_layer=4, n_head=4, n_kv_head=2, n_embd=256, block_size=seq_len, dropout=0.0,
                      bias=False, tie_embeddings=False)
    save_hf_model(build_model(cfg, tok.vocab_size), out, {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
                                                          "pad_token_id": None})
    save_hf_tokenizer(tok_dir, out, model_max_length=seq_len)
    return out


def throughput(args) -> str:
    data = str(CANARIM) if CANARIM.is_file() else "builtin:instructions"
    if not args.base:
        raw = data if CANARIM.is_file() else str(ROOT / "src/brlm/resources/demo_instructions.jsonl")
        args.base = str(default_base(Path(args.work) / f"base-llama4x256-s{args.seq_len}", raw, args.seq_len))
    rows = []
    for engine in ("brlm", "trl"):
        spec = dict(engine=engine, base=args.base, data=data if engine == "brlm" else data.replace("builtin:instructions",
                    str(ROOT / "src/brlm/resources/demo_instructions.jsonl")), method="lora", seq_len=args.seq_len,
                    batch=args.batch, accum=args.accum, steps=args.steps, max_train=args.max_train, threads=args.threads,
                    packing=True, out=str(Path(args.work) / f"tp-{engine}"))
        r = child(THROUGHPUT_CHILD, spec)
        rows.append((engine, r))
    brlm, trl = rows[0][1]["tokens_per_s"], rows[1][1]["tokens_per_s"]
    lines = ["| engine | useful tokens | seconds | useful tokens/s |", "|---|---|---|---|"]
    lines += [f"| {e} | {r['useful_tokens']:,} | {r['seconds']:.1f} | {r['tokens_per_s']:,.0f} |" for e, r in rows]
    return "\n".join(lines) + (f"\n\nbrlm / TRL SFTTrainer: **{brlm / trl:.2f}x** (target >= 1.5x) {tag()}\n\n"
                                f"Base {args.base}; LoRA r 16 on every linear; seq_len {args.seq_len}, batch "
                                f"{args.batch} x accumulation {args.accum}, {args.steps} steps, packing on both sides, "
                                f"{args.threads} threads; data {data}.\n")


def memory(args) -> str:
    name = f"llama-v{args.vocab}" + ("" if (args.n_embd, args.n_layer) == (256, 4) else f"-d{args.n_embd}-l{args.n_layer}")
    base = str(random_llama(Path(args.work) / name, args.vocab, args.n_embd, args.n_layer, args.seq_len))
    warm = str(random_llama(Path(args.work) / "llama-warm", 512, 64, 1, 64))
    lines = ["| method | loss | measured, glibc default (MB) | measured, mmap threshold 128 KiB (MB) | predicted (MB) | "
             "predicted without allocator allowance (MB) | predicted / measured (default; fixed) |", "|---|---|---|---|---|---|---|"]
    got: dict[tuple[str, bool], tuple[dict, dict]] = {}
    for method in ("full", "lora", "qlora"):
        for fused in (False, True):
            spec = dict(base=base, warmup_base=warm, method=method, fused=fused, seq_len=args.seq_len, batch=1, threads=args.threads)
            r, f = child(MEMORY_CHILD, spec), child(MEMORY_CHILD, spec, MMAP_FIXED)
            got[(method, fused)] = (r, f)
            lines.append(f"| {method} | {'fused chunked' if fused else 'HF logits'} | {r['measured_mb']:,.0f} | {f['measured_mb']:,.0f} | "
                         f"{r['predicted_mb']:,.0f} | {r['predicted_live_mb']:,.0f} | {r['predicted_mb'] / r['measured_mb']:.2f}; "
                         f"{r['predicted_live_mb'] / f['measured_mb']:.2f} |")
    out = "\n".join(lines) + "\n\n"
    for method in ("full", "lora", "qlora"):
        saving = 1 - got[(method, True)][0]["measured_mb"] / got[(method, False)][0]["measured_mb"]
        out += f"* {method}: fused loss peak {saving:.0%} lower than the HF loss (target >= 30 %)\n"
    for method in ("lora", "qlora"):
        for fused in (True, False):
            r, f = got[(method, fused)]
            m, pr = r["measured_mb"], r["predicted_mb"]
            out += (f"* estimate, {method} ({'fused' if fused else 'HF logits'}): predicted {pr:,.0f} MB vs measured {m:,.0f} MB, "
                    f"{pr / m - 1:+.0%} (target within 20 %); live tensors {r['predicted_live_mb']:,.0f} MB vs "
                    f"{f['measured_mb']:,.0f} MB with a fixed mmap threshold, {r['predicted_live_mb'] / f['measured_mb'] - 1:+.0%}\n")
    terms = got[("qlora", True)][0]["terms_mb"]
    out += "\nPredicted terms, qlora fused (MB): " + ", ".join(f"{k} {v:,.1f}" for k, v in terms.items()) + "\n"
    return out + f"\n{tag()}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("throughput", "memory", "estimate", "all"))
    p.add_argument("--base", help="a Hugging Face base folder for throughput (e.g. a brlm export)")
    p.add_argument("--work", default="/tmp/brlm-bench-posttrain", help="scratch folder")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--max-train", type=int, default=400)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="measure even on a busy machine (load > 0.5 per core)")
    p.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md (this machine kind's)")
    args = p.parse_args()
    load = check_load(args.force)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    section = "Post-training (bench_posttrain.py, issue 11)"
    if args.what in ("throughput", "all"):
        table = throughput(args) + f"Load average at start {load:.2f}.\n"
        print("## SFT throughput: brlm vs TRL SFTTrainer\n\n" + table)
        if args.write:
            write_table(section, "SFT useful tokens/s, brlm vs TRL SFTTrainer", table)
    if args.what in ("memory", "estimate", "all"):
        title = f"Peak memory of one training step (vocab {args.vocab}, seq {args.seq_len}) and brlm estimate"
        table = memory(args) + f"Load average at start {load:.2f}.\n"
        print(f"## {title}\n\n" + table)
        if args.write:
            write_table(section, title, table)


if __name__ == "__main__":
    main()
