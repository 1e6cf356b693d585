"""`brlm export hf`: exported folders load with transformers' Auto classes, offline, and give
brlm's logits, greedy tokens and token ids (brlm.models.export_hf, brlm.tokenizers.hf)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from brlm.config import ModelConfig, TokenizerConfig
from brlm.errors import BrlmError
from brlm.io.files import file_sha256
from brlm.models.registry import build_model
from tests.conftest import SENTENCES, run_cli

transformers = pytest.importorskip("transformers", reason="brlm export hf needs transformers (pip install 'brlm[hf]')")

V = 300
SMALL = dict(n_layer=2, n_embd=32, block_size=64, dropout=0.0)
CASES = {
    "gpt": (ModelConfig(arch="gpt", n_head=2, **SMALL), "GPT2LMHeadModel"),
    "gpt-nobias-untied": (ModelConfig(arch="gpt", n_head=2, bias=False, tie_embeddings=False, norm_eps=1e-6, **SMALL),
                          "GPT2LMHeadModel"),
    "llama": (ModelConfig(arch="llama", n_head=4, rope_base=500.0, **SMALL), "LlamaForCausalLM"),
    "llama-gqa": (ModelConfig(arch="llama", n_head=4, n_kv_head=2, tie_embeddings=False, **SMALL), "LlamaForCausalLM"),
    "llama-qknorm": (ModelConfig(arch="llama", n_head=4, n_kv_head=2, qk_norm=True, **SMALL), "Qwen3ForCausalLM"),
    "moe": (ModelConfig(arch="moe", n_head=4, n_kv_head=2, n_expert=4, expert_top_k=2, **SMALL), "MixtralForCausalLM"),
    "moe-qknorm": (ModelConfig(arch="moe", n_head=4, n_kv_head=2, n_expert=3, expert_top_k=2, qk_norm=True,
                               expert_hidden=48, **SMALL), "Qwen3MoeForCausalLM"),
}
IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None}

# Accents, digits, an emoji and a symbol the tiny vocabulary lacks (byte fallback), newlines, a tab,
# double spaces and the cleaning markers.
PT_TEXT = ("Atenção: o preço do café ☕ subiu 12,5% em 2024 — e o pão 🍞 também!\n"
           "Segunda linha: àéêíóôõúç ÀÉÇ, documento <CPF>.\n\n<|endoftext|>\tfim  com  espaços ")
MARKERS = "<|endoftext|>,<CPF>"


def random_model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A brlm model whose weights are far from init, so logits are peaked and argmax has no near-ties."""
    torch.manual_seed(seed)
    model = build_model(cfg, V).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (brlm model, transformers model loaded back with AutoModelForCausalLM), built once."""
    from brlm.models.export_hf import save_hf_model

    cache: dict[str, tuple] = {}

    def get(case: str):
        if case not in cache:
            model = random_model(CASES[case][0])
            out = tmp_path_factory.mktemp(case)
            save_hf_model(model, out, IDS)
            hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
            cache[case] = (model, hf, out)
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_exported_logits_match(case, exported):
    model, hf, out = exported(case)
    assert type(hf).__name__ == CASES[case][1]
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    idx = torch.randint(0, V, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(input_ids=idx).logits
    assert theirs.dtype == torch.float32
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


@pytest.mark.parametrize("case", ["gpt", "llama-gqa", "llama-qknorm", "moe"])
def test_greedy_generation_matches(case, exported):
    from brlm.infer.engine import generate
    from brlm.infer.sampling import make_sampler

    model, hf, _ = exported(case)
    prompt = [5, 17, 42, 99, 7, 250, 3]
    ours, _ = generate(model, prompt, 20, make_sampler(0.0))
    out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20, min_new_tokens=20,
                      eos_token_id=None, pad_token_id=0)
    assert len(ours) == 20
    assert out[0, len(prompt):].tolist() == ours


def test_exported_config_values(exported):
    _, hf, out = exported("llama-gqa")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_key_value_heads"] == 2 and cfg["num_attention_heads"] == 4 and cfg["tie_word_embeddings"] is False
    assert cfg["rope_theta"] == 10000.0 and cfg["rms_norm_eps"] == 1e-5
    gpt = json.loads((exported("gpt")[2] / "config.json").read_text())
    assert gpt["activation_function"] == "gelu"  # exact GELU, as brlm's MLP (not GPT-2's tanh gelu_new)


def _texts() -> list[str]:
    return [" ".join(SENTENCES[i:] + SENTENCES[:i]) + "\n<|endoftext|>\nNúmero 123, documento <CPF>." for i in range(len(SENTENCES))] * 3


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory):
    """kind -> a brlm tokenizer folder trained on the fixture sentences with the cleaning markers."""
    from brlm.tokenizers.base import train_tokenizer

    root = tmp_path_factory.mktemp("toks")
    cfgs = {
        "unigram": TokenizerConfig(model_type="unigram", vocab_size=360, user_defined_symbols=MARKERS),
        "bpe": TokenizerConfig(model_type="bpe", vocab_size=360, user_defined_symbols=MARKERS),
        "char": TokenizerConfig(kind="char", vocab_size=300, min_frequency=2, user_defined_symbols=MARKERS),
    }
    for name, cfg in cfgs.items():
        train_tokenizer(_texts(), cfg, root / name, data_key="fixture")
    return root


@pytest.mark.parametrize("kind", ["unigram", "bpe", "char"])
def test_exported_tokenizer_gives_brlm_ids(kind, tokenizers_dir, tmp_path):
    from brlm.tokenizers.base import load_tokenizer
    from brlm.tokenizers.hf import save_hf_tokenizer

    ours = load_tokenizer(tokenizers_dir / kind)
    save_hf_tokenizer(tokenizers_dir / kind, tmp_path, model_max_length=64)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in [PT_TEXT, *SENTENCES[:3], " dois  espaços ", "ção123\n"]:
        ids = ours.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.decode(ids) == ours.decode(ids)
    ids = ours.encode(PT_TEXT)
    for marker in MARKERS.split(","):
        assert hf.convert_tokens_to_ids(marker) in ids  # one token each
    assert (hf.bos_token, hf.eos_token, hf.unk_token) == ("<s>", "</s>", "<unk>")
    assert hf.eos_token_id == ours.eos_id and hf.bos_token_id == ours.bos_id
    if kind != "char":  # char: characters outside the vocabulary are <unk>, decoded as U+FFFD
        assert hf.decode(ids) == PT_TEXT
        assert any(ours.is_byte(i) for i in ids)  # the emoji went through byte fallback


def make_run(root: Path, cfg: ModelConfig, tokenizer_dir: Path, step: int = 5) -> Path:
    """A run folder with one checkpoint of a random model and a copy of a trained tokenizer."""
    from brlm.models.checkpoint import save_checkpoint, update_pointers

    run = root / cfg.arch
    shutil.copytree(tokenizer_dir, run / "tokenizer")
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    model = build_model(cfg, vocab)
    meta = {"arch": cfg.arch, "model": dataclasses.asdict(cfg), "vocab_size": vocab, "config": {"sample": {"temperature": 0.7}}}
    save_checkpoint(run / "checkpoints", step, model, meta)
    update_pointers(run / "checkpoints", best=step, last=step)
    return run


def test_rnn_is_refused_in_one_line(tokenizers_dir, tmp_path):
    cfg = ModelConfig(arch="rnn", n_layer=1, n_embd=32, rnn_hidden=32, block_size=32)
    run = make_run(tmp_path, cfg, tokenizers_dir / "unigram")
    proc = run_cli("export", "hf", str(run), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "model.arch=rnn" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_export_run_replaces_only_an_earlier_export(tokenizers_dir, tmp_path):
    from brlm.infer.export import export_run

    run = make_run(tmp_path, ModelConfig(arch="llama", n_head=4, n_kv_head=2, **SMALL), tokenizers_dir / "unigram")
    first = export_run(run, checkpoint="last")
    assert first["step"] == 5 and first["hf_architecture"] == "LlamaForCausalLM"
    again = export_run(run)  # an earlier export in <run>/hf is replaced whole
    assert again["files"] == first["files"]
    gen = json.loads((run / "hf" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2 and gen["do_sample"] is True and gen["temperature"] == 0.7
    other = tmp_path / "not-an-export"
    other.mkdir()
    (other / "notes.txt").write_text("meu")
    with pytest.raises(BrlmError, match="not an earlier export"):
        export_run(run, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_cli_export_end_to_end(tiny_run, tmp_path):
    """The real CLI on the tiny demo run (gpt): folder, manifest, model and chat template."""
    from brlm.models.checkpoint import load_checkpoint
    from brlm.tokenizers.base import load_tokenizer

    out = tmp_path / "demo-hf"
    proc = run_cli("export", "hf", str(tiny_run), "--out", str(out), "--checkpoint", "best", check=True)
    assert "GPT2LMHeadModel" in proc.stdout
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["source_run"] == str(tiny_run.resolve()) and manifest["brlm_version"]
    for name, sha in manifest["files"].items():
        assert file_sha256(out / name) == sha
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= set(manifest["files"])

    tok = transformers.AutoTokenizer.from_pretrained(out)
    brlm_tok = load_tokenizer(tiny_run / "tokenizer")
    assert tok("Olá, mundo! 2024 🎉")["input_ids"] == brlm_tok.encode("Olá, mundo! 2024 🎉")
    messages = [{"role": "system", "content": "Responda em português."}, {"role": "user", "content": "Qual é a capital?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|sistema|>\nResponda em português.\n<|usuario|>\nQual é a capital?\n<|assistente|>\n"
    done = tok.apply_chat_template([*messages, {"role": "assistant", "content": "Brasília."}], tokenize=False)
    assert done.endswith("<|assistente|>\nBrasília.</s>\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert ids == brlm_tok.encode(text)

    ours, _ = load_checkpoint(tiny_run / "checkpoints", "best")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    idx = torch.tensor([brlm_tok.encode("O ônibus da linha azul atrasou.")[:30]])
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf(input_ids=idx).logits, atol=1e-4)


def test_exported_model_scores_like_its_checkpoint(tiny_run, tmp_path):
    """`brlm eval intrinsic RUN --hf EXPORT` sees the same tokens, so it must give the checkpoint's
    loss and bits per byte (byte-fallback pieces count one byte, `▁` one space)."""
    out = tmp_path / "demo-hf"
    run_cli("export", "hf", str(tiny_run), "--out", str(out), check=True)
    ours = tmp_path / "ours.json"
    theirs = tmp_path / "theirs.json"
    run_cli("eval", "intrinsic", str(tiny_run), "--out", str(ours), check=True)
    run_cli("eval", "intrinsic", str(tiny_run), "--hf", str(out), "--out", str(theirs), check=True)
    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    assert a["tokens"] == b["tokens"] and a["bytes"] == b["bytes"]
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    assert b["bits_per_byte"] == pytest.approx(a["bits_per_byte"], abs=1e-4)
