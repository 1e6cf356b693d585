"""Guardrail numbers on a known tokenizer and text, and `brlm eval guardrails` on a tiny run."""

import json

import pytest

from brlm.eval.guardrails import (
    aggregate,
    distinct_n,
    longest_repeated_ngram,
    piece_stats,
    repetition_stats,
    sample_guardrails,
    training_vocabulary,
    words,
)

from .conftest import run_cli


class PieceTok:
    """A tokenizer whose pieces we choose: ids index into PIECES; 0 is end-of-text."""

    PIECES = ["</s>", "▁casa", "▁de", "s", "<0xC3>", "<0xA7>", ",", "▁o", "ção", "▁a"]
    bos_id, eos_id = -1, 0

    def piece(self, i):
        return self.PIECES[i]


def test_piece_ratios_by_hand():
    # ▁casa ▁de s <0xC3> <0xA7> , ▁o ção </s>  -> 8 pieces (</s> left out)
    # byte pieces: 2 -> 2/8; short = all letters and <= 2 characters as stored (the seeds' definition):
    # only "s" -> 1/8 ("▁de" and "▁o" carry the word-start mark, "," is not a letter, "ção" has 3)
    st = piece_stats(PieceTok(), [1, 2, 3, 4, 5, 6, 7, 8, 0])
    assert st["pieces"] == 8 and st["byte_pieces"] == 2 and st["short_pieces"] == 1
    assert st["byte_fallback_ratio"] == pytest.approx(0.25) and st["short_piece_ratio"] == pytest.approx(0.125)
    assert piece_stats(PieceTok(), [1, 8], short_chars=3)["short_pieces"] == 1  # 'ção' counts at 3


def test_byte_fallback_on_a_real_spm_tokenizer(spm_tokenizer):
    ids = spm_tokenizer.encode("O ônibus € atrasou")  # '€' is not in the fixture's vocabulary: 3 UTF-8 bytes
    st = piece_stats(spm_tokenizer, ids)
    assert st["byte_pieces"] == 3 and st["pieces"] == len(ids)
    assert st["byte_fallback_ratio"] == pytest.approx(3 / len(ids))


def test_repetition_by_hand():
    text = "o gato viu o gato viu o rato"
    w = words(text)
    assert w == ["o", "gato", "viu", "o", "gato", "viu", "o", "rato"]
    assert distinct_n(w, 1) == pytest.approx(4 / 8)
    assert distinct_n(w, 2) == pytest.approx(4 / 7)  # o-gato, gato-viu, viu-o, o-rato
    assert distinct_n(w, 3) == pytest.approx(4 / 6)
    assert longest_repeated_ngram(w) == 4  # "o gato viu o" occurs twice (overlapping)
    assert longest_repeated_ngram(words("um dois três")) == 0
    assert repetition_stats("")["distinct_1"] is None


def test_unseen_words_and_aggregate_pass_fail():
    vocab = training_vocabulary(["A casa de Maria.", "O gato-preto dorme."])
    row = sample_guardrails(PieceTok(), [1, 2, 1], "a casa do gato-preto xyzw", vocab)
    assert row["unseen_words"] == 2 and row["unseen_word_ratio"] == pytest.approx(2 / 5)  # 'do', 'xyzw'
    ok = sample_guardrails(PieceTok(), [1, 1, 1, 1], "casa casa", vocab)
    bad = sample_guardrails(PieceTok(), [4, 5, 2, 3], "ção", vocab)
    agg = aggregate([ok, bad], max_byte_fallback=0.03, max_short_piece=0.12)
    assert agg["byte_fallback_ratio"] == pytest.approx(2 / 8) and agg["short_piece_ratio"] == pytest.approx(1 / 8)
    assert not agg["passed"] and agg["samples_passed"] == 1
    assert aggregate([ok], 0.03, 0.12)["passed"]
    assert aggregate([ok, bad], max_byte_fallback=0.3, max_short_piece=0.3)["passed"]


def test_guardrails_cli_on_tiny_run(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "g"
    shutil.copytree(tiny_run, run)
    proc = run_cli("eval", "guardrails", str(run), "--seeds", "2", "--max-new-tokens", "6", "--max-short-piece", "1.0", check=True)
    agg = json.loads(proc.stdout)
    result = json.loads((run / "guardrails.json").read_text())
    assert result["aggregate"] == agg and result["num_seeds"] == 2
    n_prompts = len({s["prompt"] for s in result["samples"]})
    assert len(result["samples"]) == 2 * n_prompts and {s["seed"] for s in result["samples"]} == {1234, 1235}
    assert agg["thresholds"]["max_short_piece"] == 1.0 and agg["short_piece_pass"]
    assert {"distinct_1", "longest_repeated_ngram", "unseen_word_ratio", "byte_fallback_ratio"} <= set(result["samples"][0])
