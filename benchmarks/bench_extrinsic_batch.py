"""Batched extrinsic generation against one item at a time: items/s and identical outputs.

    .venv/bin/python benchmarks/bench_extrinsic_batch.py [--limit 200] [--batch-size 16] [--backend brlm|hf|both]

Over the 600 items of one test-set seed (../shared/data/canarim/extrinsic/seed123/, 200 per task;
`--limit N` takes the first N of each task) with a tiny brlm model: a random Llama (2 layers,
n_embd 64, block 256) and a SentencePiece tokenizer (vocab 2000) trained on all 600 items' text, so
the script needs no run folder; `--model RUN` uses a real one. Both ways go through
`brlm.eval.extrinsic.generate.generate_answers` (greedy, QA 32 / others 160 new tokens, capped at
half the context); only `--batch-size` differs. `--backend hf` exports the same model to a Hugging
Face folder and measures `model.generate` with left padding.

Target: batched >= 4x the items/s of one at a time, outputs identical. brlm models decode one
prompt at a time until the batched static-cache engine lands in brlm.infer.engine (then
`generate.py::_brlm_batch` switches to it and this figure moves); the HF backend batches today.
Skips when the shared data is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

SETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "canarim" / "extrinsic"


def tiny_run(folder: Path, items: list) -> Path:
    """A run folder with a random tiny Llama and a tokenizer trained on the items' text."""
    import torch

    from brlm.config import ModelConfig, TokenizerConfig
    from brlm.models.checkpoint import save_checkpoint, update_pointers
    from brlm.models.registry import build_model
    from brlm.tokenizers.spm import train_spm

    texts = [f"{it.instruction}\n{it.input}\n{it.reference}" for it in items]
    meta = train_spm(texts, TokenizerConfig(vocab_size=2000), folder / "tokenizer", data_key="bench")
    vocab = int(meta.get("vocab_size", 2000))
    cfg = ModelConfig(arch="llama", n_layer=2, n_head=4, n_embd=64, block_size=256, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, vocab).eval()
    with torch.no_grad():  # far from init: peaked logits, so greedy decoding has no near-ties
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_checkpoint(folder / "checkpoints", 1, model, {"model": dataclasses.asdict(cfg), "vocab_size": vocab})
    update_pointers(folder / "checkpoints", best=1, last=1)
    return folder


def export_hf(run: Path, out: Path) -> Path:
    from brlm.infer.load import load_run
    from brlm.models.export_hf import save_hf_model, special_token_ids
    from brlm.tokenizers.hf import save_hf_tokenizer

    lm = load_run(run)
    ids = special_token_ids(run / "tokenizer")
    save_hf_model(lm.model, out, {k: v for k, v in ids.items() if k != "vocab_size"})
    save_hf_tokenizer(run / "tokenizer", out)
    return out


def measure(lm, prompts_by_task: dict, cfg, batch_size: int) -> tuple[float, int, dict]:
    from brlm.eval.extrinsic.generate import generate_answers

    texts, n = {}, 0
    t0 = time.perf_counter()
    for task, prompts in prompts_by_task.items():
        for i, g in generate_answers(lm, prompts, cfg.max_new_tokens(task), batch_size):
            texts[(task, i)] = g.text
            n += 1
    return time.perf_counter() - t0, n, texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-set", default="seed123", help="set folder under ../shared/data/canarim/extrinsic/")
    ap.add_argument("--limit", type=int, default=0, help="first N items of each task (0 = all 200)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--backend", choices=["brlm", "hf", "both"], default="both")
    ap.add_argument("--model", help="a brlm run folder instead of the random tiny model")
    args = ap.parse_args()
    folder = SETS / args.seed_set
    if not folder.is_dir():
        print(f"skipped: {folder} not found (the shared development data is absent)")
        return 0
    import torch

    from brlm.config.extrinsic import ExtrinsicConfig
    from brlm.eval.extrinsic.prompts import prompt_format, render_prompt
    from brlm.eval.extrinsic.tasks import read_sets
    from brlm.infer.load import load_model

    every = read_sets(folder)
    sets = {t: (v[:args.limit] if args.limit else v) for t, v in every.items()}
    cfg = ExtrinsicConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {sum(map(len, sets.values()))} items of "
          f"{args.seed_set}; batch size {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="bench-extrinsic-") as tmp:
        run = Path(args.model) if args.model else tiny_run(Path(tmp) / "run", [it for v in every.values() for it in v])
        sources = {"brlm": run}
        if args.backend in ("hf", "both"):
            sources["hf"] = export_hf(run, Path(tmp) / "hf")
        for backend, src in sources.items():
            if args.backend not in (backend, "both"):
                continue
            lm = load_model(src)
            fmt = prompt_format(lm, "auto")
            prompts = {t: [render_prompt(lm, it, fmt) for it in items] for t, items in sets.items()}
            measure(lm, {t: p[:2] for t, p in prompts.items()}, cfg, 2)  # warm-up
            s1, n, one = measure(lm, prompts, cfg, 1)
            sb, _, batched = measure(lm, prompts, cfg, args.batch_size)
            same = sum(one[k] == batched[k] for k in one)
            ratio = (n / sb) / (n / s1)
            print(f"{backend:<5} prompt format {fmt:<5} one at a time {n / s1:7.2f} items/s ({s1:6.1f} s) | "
                  f"batch {args.batch_size} {n / sb:7.2f} items/s ({sb:6.1f} s) | {ratio:5.2f}x "
                  f"({'meets' if ratio >= 4 else 'below'} the 4x target) | identical outputs {same}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
