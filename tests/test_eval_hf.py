"""`brlm eval intrinsic RUN --hf DIR` on a tiny GPT-2 built from a config and a byte-level BPE
tokenizer trained here, both saved locally (offline). Skipped without transformers."""

import json

import pytest

from .conftest import SENTENCES, run_cli

transformers = pytest.importorskip("transformers", reason="needs pip install 'brlm[hf]' (transformers)")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer

    out = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    out.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 3, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save(str(out / "tokenizer.json"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), eos_token="<|endoftext|>",
                                               bos_token="<|endoftext|>")
    tok.save_pretrained(out)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                  eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def test_hf_token_bytes_add_up(hf_dir):
    from brlm.models.hf import load_hf

    _, tok = load_hf(hf_dir)
    text = "A prefeitura € ônibus ação"
    ids = tok.encode(text)
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert tok.token_bytes()[tok.eos_id] == 0


def test_eval_intrinsic_hf_dir(tiny_run, hf_dir, tmp_path):
    out = tmp_path / "hf.json"
    proc = run_cli("eval", "intrinsic", str(tiny_run), "--hf", str(hf_dir), "--out", str(out), "--json", check=True)
    r = json.loads(out.read_text())
    printed = json.loads(proc.stdout)  # --json: one object for scripts
    assert printed["file"] == str(out) and all(printed[k] == r[k] for k in ("bits_per_byte", "bits_per_char", "loss", "tokens", "bytes"))
    assert r["checkpoint"].startswith("hf:") and r["tokenizer_sha256"].startswith("hf:")
    # an untrained model: about log2(vocab) bits per token
    assert 0 < r["bits_per_byte"] < 20 and r["bits_per_char"] > 0 and r["categories"]


def test_eval_hf_bad_folder_is_one_line_error(tiny_run, tmp_path):
    proc = run_cli("eval", "intrinsic", str(tiny_run), "--hf", str(tmp_path))
    assert proc.returncode == 2 and "config.json missing" in proc.stderr
