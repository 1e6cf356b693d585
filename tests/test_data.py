import gzip
import json
from collections import Counter

import pytest

from brlm.config import DataConfig
from brlm.data.clean import clean_text
from brlm.data.prepare import prepare_data
from brlm.data.sources import read_documents
from brlm.data.splits import split_of
from brlm.errors import DataError

from .conftest import make_corpus_jsonl


def test_clean_nfkc_invisible_and_spaces():
    raw = "\ufeffEﬁciência\u200b  do   ônibus\t\tchegou\r\n\n\n\n  Segunda   linha  "
    assert clean_text(raw) == "Eficiência do ônibus chegou\n\nSegunda linha"


def test_clean_nfkc_composes_accents():
    decomposed = "ac\u0327a\u0303o"  # "ação" with combining marks
    assert clean_text(decomposed) == "ação"
    assert clean_text(decomposed, nfkc=False) != "ação"


def test_jsonl_reading_and_meta(tmp_path):
    p = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=3)
    docs = list(read_documents(str(p)))
    assert [d.id for d in docs] == ["d0", "d1", "d2"]
    assert docs[0].meta == {"category": "teste"}


def test_missing_text_field_names_file_line_and_field(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: no field 'text' \(data\.text_field\); fields present: body"):
        list(read_documents(str(p)))


def test_bad_json_names_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        list(read_documents(str(p)))


def test_bad_utf8_is_replaced_and_counted(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"text": "caf\xe9 com p\xe3o"}\n{"text": "certo"}\n')
    stats = Counter()
    docs = list(read_documents(str(p), stats=stats))
    assert stats["utf8_errors"] == 1
    assert "\ufffd" in docs[0].text and docs[1].text == "certo"


def test_missing_file():
    with pytest.raises(DataError, match="nao-existe.jsonl: file not found"):
        list(read_documents("nao-existe.jsonl"))


def test_truncated_gzip(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    data = gzip.compress(("\n".join(json.dumps({"text": f"documento {i} " * 20}) for i in range(200))).encode())
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        list(read_documents(str(p)))


def test_txt_blocks_and_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("primeiro doc\nlinha dois\n\nsegundo doc\n", encoding="utf-8")
    assert [d.text for d in read_documents(str(p))] == ["primeiro doc\nlinha dois", "segundo doc"]
    assert len(list(read_documents(str(p), txt_mode="lines"))) == 3


def test_split_is_deterministic_and_salted():
    texts = [f"documento {i}" for i in range(2000)]
    a = [split_of(t, 0.1) for t in texts]
    assert a == [split_of(t, 0.1) for t in texts]
    share = a.count("val") / len(a)
    assert 0.07 < share < 0.13
    assert a != [split_of(t, 0.1, salt="outro") for t in texts]


def test_prepare_data_splits_dedups_and_counts(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl", n_docs=60)
    with open(src, "a", encoding="utf-8") as f:  # an exact duplicate and a too-short document
        f.write(src.read_text(encoding="utf-8").splitlines()[0] + "\n")
        f.write(json.dumps({"text": "curto"}) + "\n")
    m = prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2), tmp_path / "out")
    c = m["counts"]
    assert c["docs_in"] == 62 and c["dropped_duplicate"] == 1 and c["dropped_short"] == 1
    assert c["train"]["docs"] + c["val"]["docs"] == 60
    train = {json.loads(line)["text"] for line in open(tmp_path / "out/train.jsonl", encoding="utf-8")}
    val = {json.loads(line)["text"] for line in open(tmp_path / "out/val.jsonl", encoding="utf-8")}
    assert not train & val  # no document crosses splits


def test_prepare_data_is_cached(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl")
    cfg = DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2)
    prepare_data(cfg, tmp_path / "out")
    mtime = (tmp_path / "out/train.jsonl").stat().st_mtime_ns
    prepare_data(cfg, tmp_path / "out")
    assert (tmp_path / "out/train.jsonl").stat().st_mtime_ns == mtime
    prepare_data(DataConfig(source=str(src), min_doc_chars=51, val_fraction=0.2), tmp_path / "out")
    assert (tmp_path / "out/train.jsonl").stat().st_mtime_ns != mtime


def test_empty_corpus_after_cleaning_keeps_earlier_output(tmp_path):
    src = make_corpus_jsonl(tmp_path / "c.jsonl")
    out = tmp_path / "out"
    prepare_data(DataConfig(source=str(src), min_doc_chars=50, val_fraction=0.2), out)
    before = (out / "train.jsonl").read_bytes()
    with pytest.raises(DataError, match="empty corpus after cleaning: 0 of 60 documents kept"):
        prepare_data(DataConfig(source=str(src), min_doc_chars=100_000, val_fraction=0.2), out)
    assert (out / "train.jsonl").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
