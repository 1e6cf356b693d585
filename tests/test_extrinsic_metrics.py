"""Hand-made cases for the Portuguese normaliser (brlm's and the seeds' defective one) and the
extrinsic metrics: EM, token F1, ROUGE-L (against hand-computed LCS) and chrF."""

from __future__ import annotations

import pytest

from brlm.errors import BrlmError
from brlm.eval.extrinsic.metrics import (
    chrf,
    exact_match,
    lcs_length,
    rouge_l,
    rouge_tokens,
    score_item,
    token_f1,
)
from brlm.eval.extrinsic.normalize import first_line, normalize_answer

# ------------------------------------------------------------------ brlm's normaliser


@pytest.mark.parametrize("text, expected", [
    ("O Brasil é   grande!", "brasil é grande"),                       # article, accent kept, spaces
    ("Os meninos e as meninas compraram uma bola", "meninos e meninas compraram bola"),
    ("Um, uns, umas... e UMA", "e"),                                     # every article, any case
    ("Vou à praia", "vou à praia"),                                      # crase is not an article
    ("guarda-chuva, (sim)! «não»", "guarda chuva sim não"),              # punctuation -> spaces
    ("  \t linha\n\nnova  ", "linha nova"),                              # every whitespace collapses
    ("R$ 1.499,00", "r 1 499 00"),
    ("A", "a"),                                                          # an option letter survives
    ("a)", "a"),
    ("", ""),
])
def test_normalizer_hand_cases(text, expected):
    assert normalize_answer(text) == expected


def test_normalizer_folds_accents_only_when_asked():
    assert normalize_answer("Ação é ótima, não?") == "ação é ótima não"
    assert normalize_answer("Ação é ótima, não?", fold=True) == "acao e otima nao"
    assert normalize_answer("Vou à praia", fold=True) == "vou a praia"  # the contraction stays a word


def test_first_line():
    assert first_line("\n\n  Resposta curta  \nmais texto") == "Resposta curta"
    assert first_line("   \n  ") == ""
    assert first_line(None) == ""


# ------------------------------------------------------------------ the seeds' normaliser, defect included


@pytest.mark.parametrize("text, expected", [
    ("O Brasil é   grande!", "o brasil e   grande"),        # articles stay, spaces not collapsed
    ("Sim, é verdade.", "sim  e verdade"),                   # comma -> space next to a space: two
    ("Não", "nao"),                                          # accents always folded
    ("a\\b", "a\\b"),                                        # the backslash survives the class
    ("x\\bo\\by", "x y"),                                    # what the article regex really matched
    ("a\\sss b", "a  b"),                                    # ... and the whitespace regex
    ("guarda-chuva\n\tok", "guarda chuva  ok"),              # newline, tab -> one space each
    ("ß æ", ""),                                             # letters without a decomposition vanish
])
def test_seeds_normalizer_hand_cases(text, expected):
    assert normalize_answer(text, compat="seeds") == expected


def test_unknown_compat_is_a_one_line_error():
    with pytest.raises(BrlmError, match="--compat"):
        normalize_answer("x", compat="squad")


# ------------------------------------------------------------------ EM and F1


def test_exact_match_brlm_vs_seeds():
    assert exact_match("O gato", "gato") == 1.0                     # article removed
    assert exact_match("O gato", "gato", compat="seeds") == 0.0     # ... not by the seeds
    assert exact_match("Sim, é verdade.", "sim é verdade") == 1.0
    assert exact_match("Sim, é verdade.", "sim é verdade", compat="seeds") == 0.0  # two spaces vs one
    assert exact_match("Não", "nao") == 0.0                         # accents kept by default
    assert exact_match("Não", "nao", fold=True) == 1.0
    assert exact_match("Não", "nao", compat="seeds") == 1.0
    assert exact_match("Michelin\nporque é famosa", "michelin") == 1.0  # the answer's first line
    assert exact_match("B", "B") == 1.0 and exact_match("A", "A") == 1.0
    for compat in (None, "seeds"):
        assert exact_match("", "", compat=compat) == 0.0            # never for an empty reference
        assert exact_match("!!!", "?", compat=compat) == 0.0


def test_exact_match_seeds_cut_the_reference_to_its_first_line_too():
    assert exact_match("Sim", "Sim\nporque sim", compat="seeds") == 1.0
    assert exact_match("Sim", "Sim\nporque sim") == 0.0


def test_token_f1_hand_cases():
    assert token_f1("o gato preto dormiu", "o gato dormiu") == pytest.approx(0.8)        # 2/3, 1
    assert token_f1("o gato preto dormiu", "o gato dormiu", compat="seeds") == pytest.approx(6 / 7)  # 3/4, 1
    assert token_f1("sim sim sim", "sim") == pytest.approx(0.5)                          # counts clip
    assert token_f1("gato\npreto", "gato") == 1.0
    assert token_f1("", "gato") == 0.0 and token_f1("gato", "") == 0.0
    assert token_f1("cão", "gato") == 0.0


# ------------------------------------------------------------------ ROUGE-L


def test_lcs_hand_cases():
    assert lcs_length("a b c d e".split(), "a c e".split()) == 3
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4   # CLRS's example
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(list("abc"), list("cba")) == 1


def test_rouge_l_hand_cases():
    assert rouge_l("o gato comeu o rato", "o cão comeu o rato") == pytest.approx(0.8)   # LCS 4 of 5, 5
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)
    assert rouge_l("o gato dormiu no sofá", "gato sofá") == pytest.approx(2 * 0.4 / 1.4)  # P 2/5, R 1
    assert rouge_l("Ação rápida!", "ação rápida") == 1.0
    assert rouge_l("", "x") == 0.0 and rouge_l("x", "") == 0.0
    assert rouge_l("Ação", "acao") == 0.0                          # accents are letters
    assert rouge_l("Ação", "acao", compat="seeds") == 1.0
    assert rouge_l("o gato", "gato", compat="seeds") == pytest.approx(2 / 3)


def test_rouge_tokens_are_unicode_words():
    assert rouge_tokens("Não, é a 1ª vez — São Paulo! snake_case") == ["não", "é", "a", "1ª", "vez", "são", "paulo",
                                                                         "snake", "case"]
    assert rouge_tokens("Ação") == rouge_tokens("Aça\u0303o")      # NFC: composed or not, one word


def test_rouge_l_optional_stemmer():
    plural = lambda w: w[:-1] if w.endswith("s") else w  # noqa: E731
    assert rouge_l("gatos pretos", "gato preto") == 0.0
    assert rouge_l("gatos pretos", "gato preto", stemmer=plural) == 1.0


# ------------------------------------------------------------------ chrF


def test_chrf_sanity():
    assert chrf("o gato dormiu", "o gato dormiu") == pytest.approx(1.0)
    assert chrf("abc", "xyz") == 0.0
    assert chrf("", "abc") == 0.0
    assert chrf("o gato", "ogato") == pytest.approx(1.0)            # whitespace is ignored
    # one order by hand: P = 2/2, R = 2/3, F2 = 5PR / (4P + R) = 10/14
    assert chrf("ab", "abc", max_n=1) == pytest.approx(10 / 14)
    close, far = chrf("o gato dormiu", "o gato dormiu no sofá"), chrf("um cão latiu", "o gato dormiu no sofá")
    assert 0.0 < far < close < 1.0
    # beta = 2: missing reference text costs more than extra text
    assert chrf("o gato dormiu no sofá azul", "o gato dormiu no sofá") > chrf("o gato dormiu", "o gato dormiu no sofá")


def test_score_item_keys():
    s = score_item("O gato", "gato")
    assert set(s) == {"em", "f1", "rouge_l", "chrf"} and s["em"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in s.values())
