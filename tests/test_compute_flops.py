"""FLOPs and parameter counts: exact counts by hand for tiny gpt and llama configs, and a check
against PyTorch's own FLOP counter on the real GPT model."""

from __future__ import annotations

import pytest
import torch

from brlm.compute.flops import (
    flops_per_token,
    flops_per_token_6n,
    forward_flops_breakdown,
    forward_flops_per_token,
    mfu,
    param_counts,
)
from brlm.config import ModelConfig
from brlm.config import swiglu_width as llama_hidden
from brlm.errors import BrlmError

V = 300


def test_gpt_tiny_count_by_hand():
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)
    # Per layer, 2 FLOPs per multiply-add:
    qkv = 2 * 32 * (3 * 32)  # 6144
    proj = 2 * 32 * 32  # 2048
    scores = 2 * 2 * 32 * (16 + 1) / 2  # Q·Kᵀ and ·V over a mean causal context of 8.5 keys = 1088
    mlp = 2 * 32 * 128 + 2 * 128 * 32  # 16384
    head = 2 * 32 * V  # 19200
    by_hand = 2 * (qkv + proj + scores + mlp) + head
    assert by_hand == 70528
    assert forward_flops_per_token(cfg, V) == by_hand
    assert flops_per_token(cfg, V) == 3 * by_hand
    full = forward_flops_breakdown(cfg, V, attention="full")
    assert full["attention_scores"] == 2 * 2 * 2 * 32 * 16


def test_llama_tiny_gqa_swiglu_count_by_hand():
    cfg = ModelConfig(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16)
    assert llama_hidden(32) == 128  # 2/3·4·32 = 85.3 -> next multiple of 64
    q = o = 2 * 32 * 32
    k = v = 2 * 32 * (2 * 8)  # 2 kv heads of head_dim 8
    scores = 2 * 2 * 32 * 8.5
    swiglu = 3 * 2 * 32 * 128
    head = 2 * 32 * V
    by_hand = 2 * (q + k + v + o + scores + swiglu) + head
    assert by_hand == 82816
    assert forward_flops_per_token(cfg, V) == by_hand
    # Parameters: embedding + per layer (q, k, v, o, 2 RMSNorms, 3 SwiGLU matrices) + final norm; tied head.
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 2 * 32 + 3 * 32 * 128
    assert param_counts(cfg, V)["total"] == V * 32 + 2 * per_layer + 32


def test_moe_counts_only_active_experts_and_router():
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, expert_hidden=64)
    one = ModelConfig(arch="moe", n_expert=8, expert_top_k=1, **base)
    two = ModelConfig(arch="moe", n_expert=8, expert_top_k=2, **base)
    b1, b2 = forward_flops_breakdown(one, V), forward_flops_breakdown(two, V)
    assert b2["mlp"] == 2 * b1["mlp"] == 2 * (2 * 3 * 2 * 32 * 64)
    assert b1["router"] == 2 * 2 * 32 * 8
    p = param_counts(two, V)
    assert p["total"] - p["active"] == 2 * 6 * 3 * 32 * 64  # 6 idle experts per layer
    assert flops_per_token_6n(two, V) == 6 * p["active"]


def test_rnn_lstm_and_gru():
    lstm = ModelConfig(arch="rnn", n_layer=2, n_embd=32, rnn_hidden=64, rnn_cell="lstm", tie_embeddings=False)
    gru = ModelConfig(arch="rnn", n_layer=2, n_embd=32, rnn_hidden=64, rnn_cell="gru", tie_embeddings=False)
    lb = forward_flops_breakdown(lstm, V)
    assert lb["recurrent"] == 2 * 4 * 64 * (32 + 64) + 2 * 4 * 64 * (64 + 64)
    assert forward_flops_breakdown(gru, V)["recurrent"] * 4 == lb["recurrent"] * 3
    assert lb["attention_scores"] == 0 and lb["lm_head"] == 2 * 64 * V
    # Same count as PyTorch's own modules.
    n_torch = sum(p.numel() for p in torch.nn.LSTM(32, 64, num_layers=2).parameters())
    assert param_counts(lstm, V)["total"] == V * 32 + n_torch + V * 64 + V  # embedding, LSTMs, head + bias


@pytest.mark.parametrize("bias,tie", [(True, True), (False, False)])
def test_gpt_params_and_flops_match_the_real_model(bias, tie):
    from torch.utils.flop_counter import FlopCounterMode

    from brlm.models.gpt import GPT

    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, bias=bias, tie_embeddings=tie)
    model = GPT(cfg, V)
    assert param_counts(cfg, V)["total"] == model.num_params()
    x = torch.randint(0, V, (3, 16))
    with FlopCounterMode(display=False) as fc:
        model(x, x)[1].backward()
    b = forward_flops_breakdown(cfg, V)
    # PyTorch's counter does not see the fused CPU attention kernel, so compare everything else.
    assert fc.get_total_flops() / x.numel() == 3 * (sum(b.values()) - b["attention_scores"])


def test_mfu_and_bad_input():
    assert mfu(1000.0, 2e6, 4e9) == pytest.approx(0.5)
    with pytest.raises(BrlmError):
        mfu(1.0, 1.0, 0.0)
    with pytest.raises(BrlmError, match="model.arch"):
        forward_flops_per_token(ModelConfig(arch="mamba"), V)
