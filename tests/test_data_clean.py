"""Cleaning rules, presets, PII, dedup and the manifest's per-rule counts."""

import json

import pytest

from brlm.config import CleanConfig, DataConfig, clean_preset_overrides, load_config
from brlm.data.clean import Cleaner, cleaning_hash, cleaning_spec, cpf_is_valid, scrub_pii
from brlm.data.prepare import prepare_data
from brlm.errors import ConfigError

from .conftest import make_corpus_jsonl, run_cli


def clean(text, min_doc=1, **rules):
    return Cleaner(DataConfig(min_doc_chars=min_doc), CleanConfig(**rules))(text)


def test_natural_keeps_case_digits_punctuation():
    raw = "O  Brasil tem 213 milhões de habitantes!\n\n\n\nSegundo parágrafo: R$ 10,50 (dez)."
    assert clean(raw) == "O Brasil tem 213 milhões de habitantes!\n\nSegundo parágrafo: R$ 10,50 (dez)."


@pytest.mark.parametrize(
    "rules, raw, expected",
    [
        ({"lowercase": True}, "São PAULO", "são paulo"),
        ({"digits_to_zero": True}, "Em 2024 foram 7 casos e 1.500 votos", "Em 0 foram 7 casos e 1.0 votos"),
        ({"remove_urls": True}, "veja https://g1.globo.com/x?y=1 e www.uol.com.br hoje", "veja e hoje"),
        ({"remove_emails": True}, "escreva para fulano.silva@gmail.com agora", "escreva para agora"),
        ({"punct_filter": True}, "preço: 10 € — ótimo! #sqn @ok", "preço: 10 ótimo! sqn ok"),
        ({"newlines": "single"}, "a\n\n\nb", "a\nb"),
        ({"newlines": "space"}, "a\n\nb\nc", "a b c"),
        ({"newlines": "keep", "collapse_spaces": False}, "a  \n\n\nb", "a  \n\n\nb"),
        ({"strip_invisible": False}, "a\u200bb", "a\u200bb"),
        ({"eod_marker": "<|endoftext|>"}, "fim", "fim\n<|endoftext|>"),
    ],
)
def test_each_rule(rules, raw, expected):
    assert clean(raw, **rules) == expected


def test_upper_case_headers_dropped_before_lowercasing():
    raw = "POLÍTICA\nO presidente falou com a imprensa nesta segunda-feira pela manhã."
    assert clean(raw, drop_upper_lines=True, lowercase=True) == "o presidente falou com a imprensa nesta segunda-feira pela manhã."
    assert clean("cpf 123.456.789-09", pii=True, lowercase=True) == "cpf <CPF>"


def test_line_filters():
    long = "Esta linha tem comprimento suficiente para passar no filtro de quarenta."
    raw = f"curta\n{long}\nNOTÍCIAS DO DIA\n1234 5678 9012 3456 7890 1234 5678 9012 3456 7890 abc"
    assert clean(raw, min_line_chars=40) == f"{long}\n1234 5678 9012 3456 7890 1234 5678 9012 3456 7890 abc"
    assert clean(raw, min_alpha_ratio=0.4) == f"curta\n{long}\nNOTÍCIAS DO DIA"
    assert clean(raw, drop_upper_lines=True).splitlines()[2].startswith("1234")
    assert clean("CAIXA ALTA\ncurta", drop_upper_lines=True, upper_line_max_chars=5) == "CAIXA ALTA\ncurta"


def test_min_doc_chars_and_counts():
    c = Cleaner(DataConfig(min_doc_chars=10), CleanConfig(lowercase=True))
    assert c("curto") is None
    assert c("Um documento longo") == "um documento longo"
    r = c.report()
    assert r["lowercase"]["docs_in"] == 2 and r["lowercase"]["docs_changed"] == 1
    assert r["min_doc_chars"] == {"docs_in": 2, "docs_out": 1, "chars_in": 23, "chars_out": 18, "docs_changed": 0}


def test_pii_typed_placeholders_and_counts():
    text = (
        "CPF 123.456.789-09, CNPJ 12.345.678/0001-95, tel (11) 98765-4321 ou +55 21 3456-7890, "
        "e-mail maria@exemplo.com.br, CEP 01310-100, cpf sem pontos 52998224725, protocolo 12345678901."
    )
    from collections import Counter

    counts = Counter()
    out = scrub_pii(text, counts)
    assert out == (
        "CPF <CPF>, CNPJ <CNPJ>, tel <TELEFONE> ou <TELEFONE>, e-mail <EMAIL>, CEP <CEP>, "
        "cpf sem pontos <CPF>, protocolo 12345678901."
    )
    assert counts == Counter(cpf=2, cnpj=1, phone=2, email=1, cep=1)
    assert cpf_is_valid("52998224725") and not cpf_is_valid("12345678901") and not cpf_is_valid("11111111111")


def test_pii_survives_other_rules():
    out = clean("Ligue (11) 98765-4321 já!", pii=True, punct_filter=True, lowercase=True, digits_to_zero=True)
    assert out == "ligue <TELEFONE> já!"


def test_presets_and_set_overrides():
    cfg = load_config(preset="demo", overrides=clean_preset_overrides("seed-v6") + ["clean.lowercase=false"])
    assert cfg.clean.preset == "seed-v6" and cfg.clean.min_line_chars == 40 and cfg.clean.min_alpha_ratio == 0.4
    assert cfg.clean.digits_to_zero and not cfg.clean.lowercase
    v1 = load_config(overrides=clean_preset_overrides("seed-v1")).clean
    # the seeds' logs (train_brwac_v1_20k.json "cleaning"): lower-case, lines >= 40 chars and >= 40 % letters, numbers normalised
    assert v1.lowercase and v1.drop_upper_lines and v1.digits_to_zero and (v1.min_line_chars, v1.min_alpha_ratio) == (40, 0.4)
    assert load_config(preset="demo").clean == CleanConfig()  # the demo keeps natural cleaning
    with pytest.raises(ConfigError, match="--clean 'v9': unknown cleaning preset"):
        clean_preset_overrides("v9")
    with pytest.raises(ConfigError, match="clean.newlines='x'"):
        CleanConfig(newlines="x")


def test_cleaning_hash_tracks_rules_not_names():
    d = DataConfig()
    a = cleaning_hash(cleaning_spec(d, CleanConfig()))
    assert a == cleaning_hash(cleaning_spec(d, CleanConfig(preset="seed-v1")))  # same rules, same text
    assert a != cleaning_hash(cleaning_spec(d, CleanConfig(lowercase=True)))
    assert a != cleaning_hash(cleaning_spec(DataConfig(min_doc_chars=5), CleanConfig()))


def test_manifest_rules_counts_and_dedup(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=40)
    first = json.loads(src.read_text(encoding="utf-8").splitlines()[0])
    with open(src, "a", encoding="utf-8") as f:  # the same text in another case/spacing: a normalised duplicate
        f.write(json.dumps({"id": "dup", "text": first["text"].upper().replace(" ", "  ")}) + "\n")
    m = prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2), tmp_path / "o",
                     clean=CleanConfig(pii=True, lowercase=True))
    assert m["counts"]["dropped_duplicate"] == 1
    assert list(m["rules"]) == ["nfkc", "invisible", "pii", "spaces", "lowercase", "newlines", "min_doc_chars"]
    assert m["rules"]["nfkc"]["docs_in"] == 41 and m["rules"]["min_doc_chars"]["docs_out"] == 41
    assert m["rules"]["pii"]["replaced"]["cpf"] == 0
    assert len(m["cleaning"]["hash"]) == 64 and m["cleaning"]["config"]["lowercase"] is True


def test_near_dedup(tmp_path):
    pytest.importorskip("datasketch")
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=30)
    base = json.loads(src.read_text(encoding="utf-8").splitlines()[0])["text"]
    with open(src, "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": base.replace("Documento número 0.", "Documento número 999.")}) + "\n")
    cfg = DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2)
    plain = prepare_data(cfg, tmp_path / "a")
    near = prepare_data(cfg, tmp_path / "b", clean=CleanConfig(near_dedup=True, near_dedup_threshold=0.7))
    assert plain["counts"]["dropped_near_duplicate"] == 0 and plain["counts"]["dropped_duplicate"] == 0
    assert near["counts"]["dropped_near_duplicate"] >= 1


def test_cli_clean_preset_and_set(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=40)
    run = tmp_path / "run"
    p = run_cli("data", "prepare", "--source", str(src), "--clean", "seed-v1", "--set", "data.min_doc_chars=50", "--set", "data.val_fraction=0.3",
                "--set", "clean.lowercase=false", "--run", str(run), check=True)
    m = json.loads((run / "data/manifest.json").read_text(encoding="utf-8"))
    assert m["cleaning"]["config"]["drop_upper_lines"] is True and m["cleaning"]["config"]["lowercase"] is False
    assert "preset: seed-v1" in (run / "config.yaml").read_text(encoding="utf-8")
    assert p.returncode == 0
