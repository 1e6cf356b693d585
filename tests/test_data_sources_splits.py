"""Sources (CSV, id field, folders, hf: on local files), bad inputs, test split and --exclude."""

import gzip
import json
from collections import Counter

import pytest

from brlm.config import DataConfig
from brlm.data.prepare import prepare_data
from brlm.data.sources import read_documents
from brlm.data.splits import split_of
from brlm.errors import DataError

from .conftest import SENTENCES, make_corpus_jsonl, run_cli


def test_csv_text_column_id_and_multiline(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('codigo,corpo,tema\n7,"Primeira linha\nsegunda linha",saude\n8,,vazio\n9,"Outro, com vírgula",x\n', encoding="utf-8")
    stats = Counter()
    docs = list(read_documents(str(p), text_field="corpo", id_field="codigo", stats=stats))
    assert [(d.id, d.text) for d in docs] == [("7", "Primeira linha\nsegunda linha"), ("9", "Outro, com vírgula")]
    assert docs[0].meta == {"tema": "saude"} and stats["empty_documents"] == 1
    with pytest.raises(DataError, match=r"t\.csv:1: no column 'texto' .*columns: codigo, corpo, tema"):
        list(read_documents(str(p), text_field="texto"))


def test_csv_bad_utf8_counted(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"text\ncaf\xe9 com leite\nbom\n")
    stats = Counter()
    docs = list(read_documents(str(p), stats=stats))
    assert stats["utf8_errors"] == 1 and "\ufffd" in docs[0].text


def test_jsonl_id_field_and_empty_documents(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"uid": "a", "text": "ok"}\n{"uid": "b", "text": "   "}\n{"uid": "c", "text": null}\n', encoding="utf-8")
    stats = Counter()
    docs = list(read_documents(str(p), id_field="uid", stats=stats))
    assert [d.id for d in docs] == ["a"] and stats["empty_documents"] == 2


def test_folder_of_mixed_files(tmp_path):
    (tmp_path / "a.txt").write_text("um\n\ndois\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("text\ntrês\n", encoding="utf-8")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b'{"text": "quatro"}\n'))
    (tmp_path / "ignore.bin").write_bytes(b"\x00")
    assert [d.text for d in read_documents(str(tmp_path))] == ["um", "dois", "três", "quatro"]


def test_test_split_and_no_document_crosses(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=120)
    m = prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2, test_fraction=0.2), tmp_path / "o")
    sets = {s: {json.loads(x)["text"] for x in open(tmp_path / f"o/{s}.jsonl", encoding="utf-8")} for s in ("train", "val", "test")}
    assert all(sets[s] for s in sets) and sum(m["counts"][s]["docs"] for s in sets) == 120
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    for s, texts in sets.items():  # the split is a function of the text alone
        assert all(split_of(t, 0.2, "brlm", 0.2) == s for t in texts)
    assert m["files"] == ["train.jsonl", "val.jsonl", "test.jsonl"]


def test_adding_test_split_keeps_val():
    texts = [f"documento {i}" for i in range(3000)]
    val = {t for t in texts if split_of(t, 0.1) == "val"}
    assert val == {t for t in texts if split_of(t, 0.1, test_fraction=0.1) == "val"}
    share = sum(split_of(t, 0.1, test_fraction=0.1) == "test" for t in texts) / len(texts)
    assert 0.07 < share < 0.13


def test_exclude_guard(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=60)
    lines = src.read_text(encoding="utf-8").splitlines()
    held = tmp_path / "held.jsonl"
    held.write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    m = prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2, exclude=str(held)), tmp_path / "o")
    assert m["counts"]["dropped_excluded"] == 5 and str(held) in m["exclude"]
    kept = {json.loads(x)["id"] for s in ("train", "val") for x in open(tmp_path / f"o/{s}.jsonl", encoding="utf-8")}
    assert not kept & {f"d{i}" for i in range(5)} and len(kept) == 55


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"body": "x"}\n', encoding="utf-8")
    r = run_cli("data", "prepare", "--source", str(p), "--run", str(tmp_path / "r"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].count("\n") == 0
    assert "no field 'text' (data.text_field); fields present: body" in r.stderr
    gz = tmp_path / "t.jsonl.gz"
    data = gzip.compress("\n".join(json.dumps({"text": SENTENCES[i % 10] * 5}) for i in range(300)).encode())
    gz.write_bytes(data[: len(data) // 2])
    r = run_cli("data", "prepare", "--source", str(gz), "--run", str(tmp_path / "r2"))
    assert r.returncode == 2 and "truncated or corrupt gzip" in r.stderr.strip().splitlines()[-1]
    r = run_cli("data", "prepare", "--source", str(tmp_path / "c.jsonl"), "--text-field", "body", "--run", str(tmp_path / "r3"))
    assert r.returncode == 2 and "empty corpus after cleaning" in r.stderr


def test_manifest_counts_bad_utf8_and_empty(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=40)
    with open(src, "ab") as f:
        f.write(b'{"text": "caf\xe9 ' + b"palavra " * 20 + b'"}\n{"text": ""}\n')
    m = prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2), tmp_path / "o")
    assert m["counts"]["utf8_errors"] == 1 and m["counts"]["empty_documents"] == 1
    assert m["counts"]["train"]["docs"] + m["counts"]["val"]["docs"] == 41


def test_hf_source_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=30)
    docs = list(read_documents(f"hf:{src}", cache_dir=str(tmp_path / "cache")))
    assert len(docs) == 30 and docs[0].id == "d0" and docs[0].meta == {"category": "teste"}
    m = prepare_data(DataConfig(source=f"hf:{src}", min_doc_chars=50, val_fraction=0.2, cache_dir=str(tmp_path / "cache")), tmp_path / "o")
    assert m["counts"]["docs_in"] == 30


def test_hf_offline_is_one_line_error(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = run_cli("data", "prepare", "--source", "hf:nlpufg/brwac-nao-existe", "--run", str(tmp_path / "r"),
                "--set", f"data.cache_dir={tmp_path / 'cache'}")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "cannot reach the Hugging Face hub" in last and "--source path/to/file.jsonl" in last
