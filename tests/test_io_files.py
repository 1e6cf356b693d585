"""The ground floor's JSONL reader (brlm.io.files.iter_jsonl): plain and gzip files, and one-line
errors naming the file (and line) for everything a user can hand it."""

from __future__ import annotations

import gzip

import pytest

from brlm.errors import DataError
from brlm.io.files import iter_jsonl


def test_reads_plain_and_gzip_alike_skipping_blank_lines(tmp_path):
    text = '{"a": 1}\n\n{"b": "ç"}\n'
    (tmp_path / "x.jsonl").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "x.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    want = [(1, {"a": 1}), (3, {"b": "ç"})]
    assert list(iter_jsonl(tmp_path / "x.jsonl")) == want
    assert list(iter_jsonl(tmp_path / "x.jsonl.gz")) == want


@pytest.mark.parametrize("name,content,match", [
    ("missing.jsonl", None, r"missing\.jsonl: no such file"),
    ("bad.jsonl", b'{"a": 1}\n[1, 2]\n', r"bad\.jsonl:2: expected a JSON object, got list"),
    ("latin.jsonl", '{"a": "não"}\n'.encode("latin-1"), r"latin\.jsonl: not valid UTF-8"),
    ("notgz.jsonl.gz", b'{"a": 1}\n', r"notgz\.jsonl\.gz: cannot read"),
    ("cut.jsonl.gz", gzip.compress(b'{"a": 1}\n' * 1000)[:60], r"cut\.jsonl\.gz: cannot read"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        list(iter_jsonl(tmp_path / name))
    assert "\n" not in str(e.value)
