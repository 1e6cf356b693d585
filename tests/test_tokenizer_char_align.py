"""Char tokenizer, SentencePiece options, aligned-cleaning enforcement, report and compare."""

import json
from pathlib import Path

import pytest

from brlm.config import TokenizerConfig, load_config
from brlm.errors import ConfigError, DataError
from brlm.io.run_folder import RunPaths
from brlm.stages.pretrain import stage_data, stage_shards, stage_tokenizer
from brlm.tokenizers.base import load_tokenizer
from brlm.tokenizers.char import train_char
from brlm.tokenizers.report import load_any, tokenizer_stats
from brlm.tokenizers.spm import train_spm

from .conftest import SENTENCES, make_corpus_jsonl, run_cli

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference" / "tokenizers"


def test_char_tokenizer_min_frequency_unk_and_specials(tmp_path):
    cfg = TokenizerConfig(kind="char", min_frequency=2, pad_id=3, user_defined_symbols="<|endoftext|>")
    m = train_char(["aab<|endoftext|>", "abz"], cfg, tmp_path, data_key="k")
    tok = load_tokenizer(tmp_path)
    assert tok.pieces[:5] == ["<unk>", "<s>", "</s>", "<pad>", "<|endoftext|>"] and tok.pieces[5:] == ["a", "b"]
    assert m["vocab_size"] == 7 == tok.vocab_size
    ids = tok.encode("ba<|endoftext|>z")
    assert ids == [6, 5, 4, tok.unk_id]
    assert tok.decode(tok.encode("abab")) == "abab"
    assert tok.token_bytes().tolist() == [0, 0, 0, 0, 13, 1, 1]
    meta = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert meta["chars_as_unk"] == 1 and meta["kind"] == "char"


def test_char_vocab_cap(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.vocab_size=16: too small"):
        train_char(["abc"], TokenizerConfig(kind="char", vocab_size=16, byte_fallback=False,
                                            user_defined_symbols=",".join("abcdefghijklmnop")), tmp_path, data_key="k")


def test_spm_user_symbols_pad_and_bpe(tmp_path):
    cfg = TokenizerConfig(model_type="bpe", vocab_size=320, pad_id=3, user_defined_symbols="<CPF>,<|endoftext|>")
    train_spm(SENTENCES * 3, cfg, tmp_path, data_key="k")
    tok = load_tokenizer(tmp_path)
    assert tok.sp.pad_id() == 3 and tok.sp.get_piece_size() == 320
    ids = tok.encode("o <CPF> foi<|endoftext|>")
    pieces = [tok.piece(i) for i in ids]
    assert "<CPF>" in pieces and "<|endoftext|>" in pieces


def _run(tmp_path, *overrides):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=60)
    return load_config(preset="demo", scale="tiny", overrides=[f"data.source={src}", "data.min_doc_chars=50",
                                                               "data.val_fraction=0.2", *overrides])


def test_aligned_cleaning_is_enforced(tmp_path):
    paths = RunPaths(tmp_path / "run")
    cfg = _run(tmp_path)
    stage_data(cfg, paths)
    stage_tokenizer(cfg, paths)
    meta = json.loads((paths.tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    assert len(meta["cleaning"]["hash"]) == 64 and meta["cleaning"]["config"]["lowercase"] is False
    assert stage_shards(cfg, paths)["alignment"]["aligned"] is True
    lower = _run(tmp_path, "clean.lowercase=true")
    stage_data(lower, paths)  # the data changes, the tokenizer stays (as after `brlm data prepare`)
    with pytest.raises(DataError, match=r"cleaned differently from this data \(clean.lowercase: tokenizer False vs data True\).*--allow-misaligned"):
        stage_shards(lower, paths)
    allowed = _run(tmp_path, "clean.lowercase=true", "tokenizer.allow_misaligned=true")
    rec = stage_shards(allowed, paths)["alignment"]
    assert rec["aligned"] is False and rec["allowed"] is True and rec["differences"] == ["lowercase"]


def test_tokenizer_stats_on_known_tokenizer(tmp_path):
    cfg = TokenizerConfig(kind="char")
    train_char(["abc ab"], cfg, tmp_path, data_key="k")
    tok = load_tokenizer(tmp_path)
    s = tokenizer_stats(tok, ["ab abc xy"])
    assert s["tokens"] == 9 and s["words"] == 3
    assert s["tokens_per_word"] == 3.0 and s["tokens_per_char"] == 1.0
    assert s["unk_rate"] == pytest.approx(2 / 9)
    assert s["short_piece_ratio"] == pytest.approx(5 / 9)  # a, b, a, b, c (x, y are <unk>)
    assert s["words_kept_whole"] == 0.0


def test_spm_stats_and_compare_cli(tmp_path, spm_tokenizer):
    s = tokenizer_stats(spm_tokenizer, SENTENCES)
    assert 0 < s["tokens_per_char"] < 1 and s["tokens_per_word"] >= 1 and 0 < s["words_kept_whole"] <= 1
    assert s["byte_fallback_ratio"] == 0 and s["unk_rate"] == 0
    emoji = tokenizer_stats(spm_tokenizer, ["😀 😀"])
    assert emoji["byte_fallback_ratio"] > 0.5
    text = tmp_path / "t.txt"
    text.write_text("\n\n".join(SENTENCES), encoding="utf-8")
    specs = [str(spm_tokenizer.model_file), str(spm_tokenizer.model_file.parent)]
    if (REFERENCE / "v6_unigram_16k" / "spm.model").is_file():
        specs.append(str(REFERENCE / "v6_unigram_16k" / "spm.model"))
    r = run_cli("tokenizer", "compare", *specs, "--text", str(text), "--out", str(tmp_path / "c.json"), check=True)
    assert "short_piece_ratio" in r.stdout and "most fragmented" in r.stdout
    out = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert len(out["results"]) == len(specs) and out["texts"] == len(SENTENCES)


def test_load_any_rejects_non_tokenizer(tmp_path):
    with pytest.raises(Exception, match="no tokenizer here"):
        load_any(tmp_path)


def test_cli_char_tokenizer_and_report(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=40)
    run = tmp_path / "run"
    run_cli("data", "prepare", "--source", str(src), "--set", "data.min_doc_chars=50", "--set", "data.val_fraction=0.3",
            "--run", str(run), check=True)
    run_cli("tokenizer", "train", "--run", str(run), "--set", "tokenizer.kind=char", "--set", "tokenizer.min_frequency=2",
            check=True)
    assert json.loads((run / "tokenizer/tokenizer.json").read_text(encoding="utf-8"))["kind"] == "char"
    r = run_cli("tokenizer", "report", "--run", str(run), "--out", str(tmp_path / "r.json"), check=True)
    assert "tokens_per_char" in r.stdout
    stats = next(iter(json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["results"].values()))
    assert stats["tokens_per_char"] == 1.0  # char-level: one token per character


def test_cleaning_markers_become_single_tokens(tmp_path):
    paths = RunPaths(tmp_path / "run")
    cfg = _run(tmp_path, "clean.pii=true", "clean.eod_marker=<|endoftext|>", "tokenizer.vocab_size=400")
    stage_data(cfg, paths)
    stage_tokenizer(cfg, paths)
    tok = load_tokenizer(paths.tokenizer)
    for marker in ("<|endoftext|>", "<CPF>", "<TELEFONE>"):
        assert len(tok.encode(marker)) == 1, marker
