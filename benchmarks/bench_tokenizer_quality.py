"""Tokenizer quality at vocab 16k on held-out Fake.br documents, side by side in one run:
brlm's recommended settings vs the seeds' v6 tokenizer vs plain SentencePiece unigram / BPE
(library defaults, byte fallback) trained on the same training text.

    .venv/bin/python benchmarks/bench_tokenizer_quality.py [--max-docs N] [--candidates]

Data: ../shared/data/fakebr/news.jsonl.gz (skips when absent), cleaned with the `natural` preset
and split by content hash (val = held-out). Figures as in `brlm tokenizer report`; short-piece
ratio is the seeds' definition (pieces as stored, <= 2 characters, all letters).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FAKEBR = SHARED / "fakebr" / "news.jsonl.gz"
V6 = SHARED / "reference" / "tokenizers" / "v6_unigram_16k" / "spm.model"

# brlm's recommended settings (see benchmarks/RESULTS.md for why).
RECOMMENDED = dict(model_type="bpe", vocab_size=16000, byte_fallback=True, character_coverage=0.9995, split_digits=False)


def train_plain(lines: list[str], model_type: str, out: Path) -> Path:
    """SentencePiece with its own defaults (nmt_nfkc, dummy prefix, ...) plus byte fallback."""
    import sentencepiece as spm

    spm.set_random_generator_seed(1234)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, model_type=model_type, vocab_size=16000,
                                   byte_fallback=True, minloglevel=2, num_threads=2)
    out.write_bytes(buf.getvalue())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-docs", type=int, default=0, help="use at most this many Fake.br documents (0 = all)")
    ap.add_argument("--candidates", action="store_true", help="also measure the other brlm settings we considered")
    ap.add_argument("--out", default="", help="write the figures to this JSON file")
    args = ap.parse_args()
    if not FAKEBR.is_file():
        print(f"skipped: {FAKEBR} not found (the shared development data is absent)")
        return 0
    from brlm.config import CleanConfig, DataConfig, TokenizerConfig
    from brlm.data.prepare import iter_split_texts, prepare_data
    from brlm.tokenizers.report import format_table, tokenizer_stats
    from brlm.tokenizers.spm import SentencePieceTokenizer, train_spm

    tmp = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    data = prepare_data(DataConfig(source=str(FAKEBR), min_doc_chars=200, val_fraction=0.1, max_docs=args.max_docs), tmp / "data",
                        clean=CleanConfig())
    train = list(iter_split_texts(tmp / "data", "train"))
    held = list(iter_split_texts(tmp / "data", "val"))
    lines = [ln for t in train for ln in t.split("\n") if ln.strip()]
    print(f"Fake.br: {len(train)} train docs ({sum(map(len, train)) / 1e6:.1f} M chars), {len(held)} held-out docs")
    toks, times = {}, {}
    for name, mt in (("plain-unigram", "unigram"), ("plain-bpe", "bpe")):
        t0 = time.perf_counter()
        toks[name] = SentencePieceTokenizer(train_plain(lines, mt, tmp / f"{name}.model"))
        times[name] = time.perf_counter() - t0
    settings = {"brlm-recommended": RECOMMENDED}
    if args.candidates:
        settings.update({
            "brlm-bpe-split-digits": dict(RECOMMENDED, split_digits=True),
            "brlm-unigram": dict(RECOMMENDED, model_type="unigram"),
        })
    for name, kw in settings.items():
        t0 = time.perf_counter()
        train_spm(train, TokenizerConfig(**kw), tmp / name, data_key=data["key"], cleaning=data["cleaning"])
        toks[name] = SentencePieceTokenizer(tmp / name / "spm.model")
        times[name] = time.perf_counter() - t0
    if V6.is_file():
        toks["seeds-v6"] = SentencePieceTokenizer(V6)
    results = {name: tokenizer_stats(tok, held) for name, tok in toks.items()}
    print(format_table(results))
    for name, s in times.items():
        print(f"training time {name}: {s:.1f} s")
    best_plain_tpw = min(results[n]["tokens_per_word"] for n in ("plain-unigram", "plain-bpe"))
    best_plain_spr = min(results[n]["short_piece_ratio"] for n in ("plain-unigram", "plain-bpe"))
    rec = results["brlm-recommended"]
    ok = rec["tokens_per_word"] <= best_plain_tpw and rec["short_piece_ratio"] <= best_plain_spr
    print(f"brlm-recommended vs best plain: tokens/word {rec['tokens_per_word']:.4f} vs {best_plain_tpw:.4f} "
          f"(ratio {rec['tokens_per_word'] / best_plain_tpw:.3f}); short-piece ratio {rec['short_piece_ratio']:.4f} vs "
          f"{best_plain_spr:.4f} -> {'at least as good on both' if ok else 'NOT at least as good on both'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "train_seconds": times, "settings": settings}, indent=2,
                                             ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
