"""`brlm export gguf`: the file read back with gguf.GGUFReader has llama.cpp's metadata keys,
tensor names and shapes, the SentencePiece vocabulary with token types, tensors that round-trip
to brlm's weights (f32 exact, f16 / q8_0 within their precision), and — computed the way llama.cpp
computes "llama" (RoPE on adjacent pairs) and "qwen3" (rotate-half RoPE, q/k norms) — brlm's logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brlm.config import ModelConfig
from brlm.infer.load import load_model
from brlm.models.export_gguf import permute_rope, unpermute_rope
from tests.conftest import run_cli
from tests.serving_helpers import LLAMA, make_run, train_tokenizer_dir

gguf = pytest.importorskip("gguf", reason="brlm export gguf needs the gguf package (pip install 'brlm[gguf]')")

CASES = {
    "gqa-untied": dataclasses.replace(LLAMA, tie_embeddings=False, rope_base=500.0, norm_eps=1e-6),
    "mha-tied": dataclasses.replace(LLAMA, n_kv_head=4),
    "qknorm": dataclasses.replace(LLAMA, qk_norm=True),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    tok = train_tokenizer_dir(root / "tok-bpe", model_type="bpe", symbols="<|endoftext|>")
    return {name: make_run(root / name, tok, cfg, noise=0.1) for name, cfg in CASES.items()}


def export(run, tmp_path, dtype="f32", name=None):
    out = tmp_path / f"{name or run.name}-{dtype}.gguf"
    run_cli("export", "gguf", str(run), "--dtype", dtype, "--out", str(out), check=True)
    return gguf.GGUFReader(str(out))


def field(reader, key):
    return reader.fields[key].contents()


def tensors(reader) -> dict[str, torch.Tensor]:
    out = {}
    for t in reader.tensors:
        data = t.data if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) \
            else gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = torch.from_numpy(np.array(data, dtype=np.float32))
    return out


def test_permutation_is_convert_hf_to_gguf_s_and_inverts():
    w = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)  # 2 heads of head_dim 8
    p = permute_rope(w, 2)
    # Head 0 rows: rotate-half order 0..7 holds pairs (0,4), (1,5), (2,6), (3,7) -> adjacent.
    assert [int(r) // 3 for r in p[:8, 0]] == [0, 4, 1, 5, 2, 6, 3, 7]
    ref = w.reshape(2, 2, 4, 3).swapaxes(1, 2).reshape(16, 3)  # convert_hf_to_gguf.py LlamaModel.permute
    assert torch.equal(p, ref) and torch.equal(unpermute_rope(p, 2), w)


@pytest.mark.parametrize("case", list(CASES))
def test_metadata_and_tensor_names(case, runs, tmp_path):
    cfg = CASES[case]
    r = export(runs[case], tmp_path)
    arch = "qwen3" if cfg.qk_norm else "llama"
    lm = load_model(runs[case])
    expect = {
        "general.architecture": arch, f"{arch}.context_length": cfg.block_size, f"{arch}.embedding_length": cfg.n_embd,
        f"{arch}.block_count": cfg.n_layer, f"{arch}.attention.head_count": cfg.n_head,
        f"{arch}.attention.head_count_kv": cfg.kv_heads, f"{arch}.feed_forward_length": cfg.ffn_hidden,
        f"{arch}.rope.dimension_count": cfg.head_dim, f"{arch}.attention.key_length": cfg.head_dim,
        f"{arch}.vocab_size": lm.model.vocab_size, "general.file_type": 0, "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_space_prefix": False,
        "tokenizer.ggml.eos_token_id": lm.tokenizer.eos_id, "tokenizer.ggml.bos_token_id": lm.tokenizer.bos_id,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    for key, value in expect.items():
        assert field(r, key) == value, key
    assert field(r, f"{arch}.rope.freq_base") == pytest.approx(cfg.rope_base)
    assert field(r, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(cfg.norm_eps)
    assert "<|assistente|>" in field(r, "tokenizer.chat_template")
    names = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}  # ggml order: (cols, rows)
    kvd = cfg.kv_heads * cfg.head_dim
    assert names["token_embd.weight"] == (cfg.n_embd, lm.model.vocab_size)
    assert ("output.weight" in names) == (not cfg.tie_embeddings)
    assert names["blk.1.attn_k.weight"] == (cfg.n_embd, kvd) and names["blk.0.ffn_down.weight"] == (cfg.ffn_hidden, cfg.n_embd)
    assert ("blk.0.attn_q_norm.weight" in names) == cfg.qk_norm
    per_layer = 9 + (2 if cfg.qk_norm else 0)
    assert len(names) == 2 + (0 if cfg.tie_embeddings else 1) + cfg.n_layer * per_layer


def test_vocabulary_pieces_scores_and_types(runs, tmp_path):
    r = export(runs["mha-tied"], tmp_path)
    sp = load_model(runs["mha-tied"]).tokenizer.sp
    tokens, scores, types = (field(r, f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    n = sp.get_piece_size()
    assert tokens == [sp.id_to_piece(i) for i in range(n)]
    assert np.allclose(scores, [sp.get_score(i) for i in range(n)])
    T = gguf.TokenType
    assert sum(t == T.BYTE for t in types) == 256 and tokens[types.index(T.BYTE)] == "<0x00>"
    assert types[0] == T.UNKNOWN and types[1] == types[2] == T.CONTROL
    assert types[sp.piece_to_id("\n")] == T.USER_DEFINED and types[sp.piece_to_id("<|endoftext|>")] == T.USER_DEFINED
    assert types[sp.piece_to_id("\u2581a")] == T.NORMAL


@pytest.mark.parametrize("dtype, tol", [("f32", 0.0), ("f16", 1e-3), ("q8_0", 1.5e-2)])
def test_tensors_round_trip(dtype, tol, runs, tmp_path):
    cfg = CASES["gqa-untied"]
    model = load_model(runs["gqa-untied"]).model
    got = tensors(export(runs["gqa-untied"], tmp_path, dtype))
    kinds = {t.name: t.tensor_type.name for t in export(runs["gqa-untied"], tmp_path, dtype, "again").tensors}
    assert kinds["blk.0.attn_norm.weight"] == "F32" and kinds["blk.0.ffn_up.weight"] == dtype.upper()
    back = {
        "tok_emb.weight": got["token_embd.weight"], "lm_head.weight": got["output.weight"], "norm.weight": got["output_norm.weight"],
    }
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        back |= {
            f"layers.{i}.attn.wq.weight": unpermute_rope(got[b + "attn_q.weight"], cfg.n_head),
            f"layers.{i}.attn.wk.weight": unpermute_rope(got[b + "attn_k.weight"], cfg.kv_heads),
            f"layers.{i}.attn.wv.weight": got[b + "attn_v.weight"], f"layers.{i}.attn.wo.weight": got[b + "attn_output.weight"],
            f"layers.{i}.ffn.w1.weight": got[b + "ffn_gate.weight"], f"layers.{i}.ffn.w3.weight": got[b + "ffn_up.weight"],
            f"layers.{i}.ffn.w2.weight": got[b + "ffn_down.weight"], f"layers.{i}.attn_norm.weight": got[b + "attn_norm.weight"],
            f"layers.{i}.ffn_norm.weight": got[b + "ffn_norm.weight"],
        }
    sd = model.state_dict()
    assert set(back) == set(sd)
    for name, w in sd.items():
        if tol == 0:
            assert torch.equal(back[name], w), name
        else:
            assert (back[name] - w).abs().max() <= tol * w.abs().max(), name


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, base, neox):
    """llama.cpp's rope: NORM rotates adjacent pairs (2i, 2i+1), NEOX the pairs (i, i + hd/2)."""
    T, H, D = x.shape
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]  # (T, D/2)
    cos, sin = ang.cos()[:, None, :].float(), ang.sin()[:, None, :].float()
    a, b = (x[..., : D // 2], x[..., D // 2:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return torch.cat([ra, rb], -1) if neox else torch.stack([ra, rb], -1).reshape(T, H, D)


def gguf_forward(reader, ids: list[int]) -> torch.Tensor:
    """Logits (T, V) computed from the GGUF alone, with llama.cpp's conventions for its architecture."""
    arch = field(reader, "general.architecture")
    g = lambda k: field(reader, f"{arch}.{k}")  # noqa: E731
    w = tensors(reader)
    nh, nkv, hd, eps, base = (g("attention.head_count"), g("attention.head_count_kv"), g("rope.dimension_count"),
                              g("attention.layer_norm_rms_epsilon"), g("rope.freq_base"))
    x = w["token_embd.weight"][ids]  # (T, C)
    T = len(ids)
    for i in range(g("block_count")):
        p = lambda n: w[f"blk.{i}.{n}.weight"]  # noqa: E731, B023
        h = _rms(x, p("attn_norm"), eps)
        q, k, v = (h @ p("attn_q").T).view(T, nh, hd), (h @ p("attn_k").T).view(T, nkv, hd), (h @ p("attn_v").T).view(T, nkv, hd)
        if arch == "qwen3":
            q, k = _rms(q, p("attn_q_norm"), eps), _rms(k, p("attn_k_norm"), eps)
        q, k = _rope(q, base, arch == "qwen3"), _rope(k, base, arch == "qwen3")
        k, v = (t.repeat_interleave(nh // nkv, dim=1) for t in (k, v))  # query head j reads kv head j // (nh / nkv)
        att = (q.transpose(0, 1) @ k.permute(1, 2, 0)) / hd**0.5  # (H, T, T)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        x = x + (att @ v.transpose(0, 1)).transpose(0, 1).reshape(T, nh * hd) @ p("attn_output").T
        h = _rms(x, p("ffn_norm"), eps)
        x = x + (F.silu(h @ p("ffn_gate").T) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    head = w.get("output.weight", w["token_embd.weight"])
    return _rms(x, w["output_norm.weight"], eps) @ head.T


@pytest.mark.parametrize("case", list(CASES))
def test_file_computes_brlm_logits_the_llama_cpp_way(case, runs, tmp_path):
    lm = load_model(runs[case])
    ids = lm.tokenizer.encode("O ônibus da linha azul atrasou de novo por causa da obra na avenida principal.")[:40]
    with torch.no_grad():
        want = lm.model(torch.tensor([ids]))[0][0]
    got = gguf_forward(export(runs[case], tmp_path), ids)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    q_file = tensors(export(runs[case], tmp_path, name="again"))["blk.0.attn_q.weight"]
    # "llama" needs the rows permuted for its adjacent-pair RoPE; "qwen3" (rotate-half) takes them as they are.
    assert torch.equal(q_file, lm.model.layers[0].attn.wq.weight) == CASES[case].qk_norm


def test_refusals_are_one_line(runs, tmp_path):
    tok = runs["mha-tied"] / "tokenizer"
    gpt = make_run(tmp_path / "gpt", tok, ModelConfig(arch="gpt", n_layer=1, n_head=2, n_embd=32, block_size=32))
    char_run = make_run(tmp_path / "char", train_tokenizer_dir(tmp_path / "tok-char", kind="char"), CASES["mha-tied"])
    for run, msg in [(gpt, "model.arch=gpt: no GGUF export (llama.cpp's gpt2 uses tanh-approximated GELU"),
                     (char_run, "tokenizer.kind='char' has no llama.cpp tokenizer")]:
        proc = run_cli("export", "gguf", str(run), "--out", str(tmp_path / "x.gguf"))
        assert proc.returncode == 2 and msg in proc.stderr and proc.stderr.strip().count("\n") == 0
        assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf.*"))
    proc = run_cli("export", "gguf", str(runs["mha-tied"]), "--dtype", "q8_0", check=True)
    assert (runs["mha-tied"] / "model-q8_0.gguf").is_file() and "GGUF llama q8_0" in proc.stdout
