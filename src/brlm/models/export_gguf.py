"""brlm llama-family checkpoints as GGUF files for llama.cpp and Ollama (`brlm export gguf RUN`),
written with the `gguf` package (llama.cpp's own gguf-py), tensor names and metadata keys taken
from its constants.

* llama -> GGUF architecture "llama"; with `model.qk_norm=true` -> "qwen3" (the same choice as
  `brlm export hf`: Llama has no qk-norm; Qwen3 RMS-normalises each query / key head before RoPE).
* RoPE layout. brlm rotates the pairs (x_i, x_{i+hd/2}) ("rotate_half", Hugging Face's layout;
  brlm.models.llama.rope_cos_sin), and its weights are exactly what `brlm export hf` writes as
  q_proj / k_proj. llama.cpp's "llama" applies RoPE to adjacent pairs (x_2i, x_2i+1), so, exactly as
  convert_hf_to_gguf.py does for LlamaForCausalLM, the rows of wq (n_head heads) and wk (n_kv_head
  heads) are permuted within each head: row (h, j, half) -> (h, 2j + half) (`permute_rope`).
  "qwen3" uses the rotate_half (NEOX) rope in llama.cpp and its convert script does not permute;
  neither do we (its per-head q/k norms would otherwise need the same permutation).
* Tied embeddings: no `output.weight`; llama.cpp then uses `token_embd.weight` (as convert does).
* Types: f32 (everything f32), f16 (matrices f16, norms f32), q8_0 (matrices whose rows are a
  multiple of 32 in Q8_0 through gguf.quants, others f16, norms f32): llama.cpp's own rules.
* gpt, moe and rnn are refused with one line: llama.cpp's gpt2 uses tanh-approximated GELU and a
  byte-level BPE tokenizer (brlm's gpt: exact GELU, SentencePiece), so the file would not compute
  brlm's function; moe and rnn mappings are not written.

Needs `pip install 'brlm[gguf]'` (the gguf package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from brlm.errors import BrlmError
from brlm.io.files import atomic_path
from brlm.tokenizers.gguf import GGUFVocab

DTYPES = ("f32", "f16", "q8_0")
_REFUSED = {
    "gpt": "llama.cpp's gpt2 uses tanh-approximated GELU and byte-level BPE, brlm's gpt exact GELU and "
           "SentencePiece, so the file would not be the same model; export llama runs (or use `brlm export hf`)",
    "moe": "no GGUF mapping for brlm's MoE yet; use `brlm export hf` (Mixtral / Qwen3-MoE)",
    "rnn": "llama.cpp has no LSTM/GRU language model; use `brlm sample` / `brlm chat` for rnn runs",
}


def require_gguf():
    try:
        import gguf
    except ImportError:
        raise BrlmError("exporting to GGUF needs the gguf package: pip install 'brlm[gguf]'") from None
    return gguf


def permute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q/k projection from rotate_half order (per head: first halves, then second
    halves) to llama.cpp's interleaved pairs; convert_hf_to_gguf.py's LlamaModel.permute."""
    out, inp = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, inp).swapaxes(1, 2).reshape(out, inp)


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of permute_rope (for reading a GGUF back into brlm's layout)."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def gguf_arch(model: nn.Module) -> str:
    cfg = model.cfg
    if cfg.arch in _REFUSED:
        raise BrlmError(f"model.arch={cfg.arch}: no GGUF export ({_REFUSED[cfg.arch]})")
    if cfg.arch != "llama":
        raise BrlmError(f"model.arch={cfg.arch!r}: no GGUF export; supported: llama")
    return "qwen3" if cfg.qk_norm else "llama"


def gguf_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """llama.cpp tensor name -> fp32 tensor in the layout llama.cpp reads (Q/K rows permuted for
    "llama"). Every brlm parameter must land somewhere, so a new weight is never dropped silently."""
    cfg, arch = model.cfg, gguf_arch(model)
    permute = arch == "llama"
    names = {
        "tok_emb.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "lm_head.weight": "output.weight",
    }
    per_layer = {
        "attn_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
        "attn.wq.weight": "attn_q.weight", "attn.wk.weight": "attn_k.weight", "attn.wv.weight": "attn_v.weight",
        "attn.wo.weight": "attn_output.weight", "attn.q_norm.weight": "attn_q_norm.weight",
        "attn.k_norm.weight": "attn_k_norm.weight", "ffn.w1.weight": "ffn_gate.weight", "ffn.w3.weight": "ffn_up.weight",
        "ffn.w2.weight": "ffn_down.weight",
    }
    out: dict[str, torch.Tensor] = {}
    sd = model.state_dict()
    for name, t in sd.items():
        t = t.detach().float().cpu()
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # llama.cpp falls back to token_embd
        if name in names:
            out[names[name]] = t
            continue
        parts = name.split(".", 2)
        if parts[0] != "layers" or parts[2] not in per_layer:
            raise BrlmError(f"model.arch={cfg.arch}: parameter {name!r} has no GGUF counterpart; cannot export")
        if permute and parts[2] == "attn.wq.weight":
            t = permute_rope(t, cfg.n_head)
        elif permute and parts[2] == "attn.wk.weight":
            t = permute_rope(t, cfg.kv_heads)
        out[f"blk.{parts[1]}.{per_layer[parts[2]]}"] = t
    return out


def _qtype(gguf: Any, name: str, t: torch.Tensor, dtype: str):
    Q = gguf.GGMLQuantizationType
    if t.ndim < 2 or dtype == "f32":
        return Q.F32  # norms stay f32 in every llama.cpp file type
    if dtype == "q8_0" and t.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16  # q8_0 falls back to f16 for rows that are not whole blocks, as convert does


def write_gguf(model: nn.Module, vocab: GGUFVocab, out: str | Path, dtype: str = "f16", name: str = "brlm",
               extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `model` (a brlm llama) and `vocab` as one GGUF file at `out`, atomically. Returns a
    summary: architecture, file type, tensor name -> GGML type."""
    if dtype not in DTYPES:
        raise BrlmError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    gguf = require_gguf()
    arch = gguf_arch(model)
    cfg = model.cfg
    if len(vocab.tokens) != model.vocab_size:
        raise BrlmError(f"tokenizer has {len(vocab.tokens)} entries but the model {model.vocab_size}")
    tensors = gguf_tensors(model)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    types = {}
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(name)
        for key, value in (extra or {}).items():
            w.add_string(key, value)
        w.add_context_length(cfg.block_size)
        w.add_embedding_length(cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(cfg.ffn_hidden)
        w.add_head_count(cfg.n_head)
        w.add_head_count_kv(cfg.kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(float(cfg.rope_base))
        w.add_layer_norm_rms_eps(float(cfg.norm_eps))
        w.add_vocab_size(model.vocab_size)
        w.add_file_type(ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model(vocab.model)
        w.add_add_space_prefix(False)  # SentencePiece trained with add_dummy_prefix=false
        w.add_token_list(vocab.tokens)
        w.add_token_scores(vocab.scores)
        w.add_token_types(vocab.token_types)
        for key, tid in vocab.special.items():
            getattr(w, f"add_{key}_token_id")(tid)
        w.add_add_bos_token(False)  # brlm trains on text without BOS
        w.add_add_eos_token(False)
        w.add_chat_template(vocab.chat_template)
        for tname, t in tensors.items():
            qtype = _qtype(gguf, tname, t, dtype)
            types[tname] = qtype.name
            data = gguf.quants.quantize(t.numpy().astype(np.float32), qtype)
            w.add_tensor(tname, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return {"architecture": arch, "dtype": dtype, "file_type": int(ftype), "tensors": types}
