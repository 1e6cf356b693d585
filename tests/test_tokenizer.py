import pytest

from brlm.config import TokenizerConfig
from brlm.errors import ConfigError
from brlm.tokenizers.base import load_tokenizer
from brlm.tokenizers.spm import train_spm

from .conftest import SENTENCES


def test_round_trip_is_exact(spm_tokenizer):
    text = "A vacinação começa na segunda-feira.\nNova linha com açaí, pão de queijo e 2024."
    assert spm_tokenizer.decode(spm_tokenizer.encode(text)) == text


def test_byte_fallback_for_unseen_characters(spm_tokenizer):
    ids = spm_tokenizer.encode("😀")
    assert len(ids) == 4 and all(spm_tokenizer.is_byte(i) for i in ids)
    assert spm_tokenizer.decode(ids) == "😀"


def test_token_bytes_sum_to_utf8_length(spm_tokenizer):
    tb = spm_tokenizer.token_bytes()
    assert tb[spm_tokenizer.eos_id] == 0 and tb[spm_tokenizer.bos_id] == 0
    for text in SENTENCES[:3] + ["ação 😀 — fim\nlinha"]:
        assert int(tb[spm_tokenizer.encode(text)].sum()) == len(text.encode("utf-8"))


def test_vocab_too_large_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=5000: too large for this corpus"):
        train_spm(SENTENCES, TokenizerConfig(vocab_size=5000), tmp_path, data_key="x")


def test_load_tokenizer_and_cache(tmp_path):
    cfg = TokenizerConfig(vocab_size=300)
    texts = SENTENCES * 3
    m1 = train_spm(texts, cfg, tmp_path, data_key="k")
    mtime = (tmp_path / "spm.model").stat().st_mtime_ns
    m2 = train_spm(texts, cfg, tmp_path, data_key="k")
    assert m1["sha256"] == m2["sha256"] and (tmp_path / "spm.model").stat().st_mtime_ns == mtime
    tok = load_tokenizer(tmp_path)
    assert tok.vocab_size == 300


def test_training_is_deterministic(tmp_path):
    cfg = TokenizerConfig(vocab_size=300)
    a = train_spm(SENTENCES * 3, cfg, tmp_path / "a", data_key="k")
    b = train_spm(SENTENCES * 3, cfg, tmp_path / "b", data_key="k")
    assert a["sha256"] == b["sha256"]


def test_defaults_are_the_readme_recommendation(tmp_path):
    """`brlm tokenizer train` with no settings: BPE, digits kept together, every character covered."""
    cfg = TokenizerConfig()
    assert (cfg.model_type, cfg.split_digits, cfg.character_coverage) == ("bpe", False, 1.0)
    texts = [s + " Em 2024 a York Kiwi Wagner." for s in SENTENCES] * 3
    train_spm(texts, TokenizerConfig(vocab_size=300, byte_fallback=False), tmp_path, data_key="k")
    tok = load_tokenizer(tmp_path)
    assert "2024" in [tok.piece(i).lstrip("\u2581") for i in tok.encode("em 2024")]  # not split into digits
    for ch in "YKW":  # rare letters stay characters at coverage 1.0 (no <unk>, no byte pieces)
        assert tok.decode(tok.encode(ch)) == ch and ch in tok.piece(tok.encode(ch)[-1])
