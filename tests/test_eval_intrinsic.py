"""Fixed windows stored by hash, bits per character, per-category figures, eval on a tiny run."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from brlm.data.loader import Windows
from brlm.eval.intrinsic import doc_groups, evaluate_windows, read_doc_categories, select_windows, token_chars


class TableModel(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table
        self.block_size = 8

    def forward(self, idx, targets=None):
        return self.table[idx], None


class PieceTok:
    PIECES = ["</s>", "▁é", "<0xE2>", "<0x82>", "<0xAC>", "ab"]

    def piece(self, i):
        return self.PIECES[i]

    def token_bytes(self):
        return np.array([0, 3, 1, 1, 1, 2])


def test_token_chars_counts_lead_bytes_only():
    assert token_chars(PieceTok()).tolist() == [0, 2, 1, 0, 0, 2]


def test_token_chars_add_up_to_text_length(spm_tokenizer):
    text = "A prefeitura € ônibus — ação"
    ids = spm_tokenizer.encode(text)
    chars = token_chars(spm_tokenizer)
    assert int(chars[ids].sum()) == len(text)
    assert int(spm_tokenizer.token_bytes()[ids].sum()) == len(text.encode("utf-8"))


def test_bits_per_char_and_categories_by_hand():
    # Uniform model over 6 ids: every target costs ln 6 nats.
    tb, tc = PieceTok().token_bytes(), token_chars(PieceTok())
    tokens = np.array([5, 1, 0, 2, 3, 4, 0, 5], dtype=np.uint16)  # doc A: ab é </s> | doc B: € </s> | tail: ab
    w = Windows(tokens, block_size=7, stride=7)
    groups, names = doc_groups(tokens, 0, ["A", "B"])
    assert names == ["A", "B", "(sem categoria)"] and groups.tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    r = evaluate_windows(TableModel(torch.zeros(6, 6)), w, np.array([0]), tb, token_chars=tc, groups=groups, group_names=names)
    ln6 = np.log(6)
    # targets: é(A) </s>(A) <E2>(B) <82>(B) <AC>(B) </s>(B) ab(tail); text targets: é, 3 bytes of €, ab
    assert r["tokens"] == 7 and r["bytes"] == 3 + 3 + 2 and r["chars"] == 2 + 1 + 2
    assert r["bits_per_byte"] == pytest.approx(5 * ln6 / (np.log(2) * 8))
    assert r["bits_per_char"] == pytest.approx(5 * ln6 / (np.log(2) * 5))
    cats = r["categories"]
    assert cats["A"]["tokens"] == 2 and cats["A"]["bits_per_char"] == pytest.approx(ln6 / (np.log(2) * 2))
    assert cats["B"]["bytes"] == 3 and cats["B"]["chars"] == 1
    assert cats["(sem categoria)"]["tokens"] == 1
    assert r["tokens_per_s"] > 0


def test_fixed_windows_identical_across_runs_and_stored(tmp_path):
    a, sha_a = select_windows(10_000, 300, "shardkey", 64, 16, tmp_path / "run1")
    b, sha_b = select_windows(10_000, 300, "shardkey", 64, 16, tmp_path / "run2")
    assert np.array_equal(a, b) and sha_a == sha_b and len(a) == 300
    stored = list((tmp_path / "run1").glob("windows_*.npy"))
    assert len(stored) == 1 and np.array_equal(np.load(stored[0]), a)
    again, sha_again = select_windows(10_000, 300, "shardkey", 64, 16, tmp_path / "run1")  # read back from the store
    assert sha_again == sha_a
    _, other = select_windows(10_000, 300, "othershard", 64, 16, tmp_path / "run1")
    assert other != sha_a


def test_read_doc_categories(tmp_path):
    p = tmp_path / "val.jsonl"
    p.write_text("\n".join(json.dumps({"text": "x", "domain": d}) for d in ["saúde", "esporte", ""]) + "\n")
    assert read_doc_categories(p) == ["saúde", "esporte", "(sem categoria)"]
    assert read_doc_categories(p, "") is None
    q = tmp_path / "plain.jsonl"
    q.write_text(json.dumps({"text": "x"}) + "\n")
    assert read_doc_categories(q) is None


def test_eval_json_of_tiny_run_has_bits_per_char_and_domains(tiny_run):
    ev = json.loads((tiny_run / "eval.json").read_text())
    assert ev["bits_per_char"] > 0 and ev["chars"] <= ev["bytes"]
    cats = ev["categories"]
    assert len(cats) >= 2 and sum(c["tokens"] for c in cats.values()) == ev["tokens"]
    assert list((tiny_run / "eval_windows").glob("windows_*.json"))
