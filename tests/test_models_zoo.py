"""The llama, moe and rnn families: shapes, hand-counted parameters, causality, MoE routing and
auxiliary losses, and cached (step-by-step) decoding equal to uncached decoding."""

import math

import pytest
import torch
import torch.nn.functional as F

from brlm.config import ModelConfig
from brlm.errors import ConfigError
from brlm.models.registry import ARCHS, build_model, flops_per_token

V = 300
LLAMA = ModelConfig(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16, dropout=0.0, qk_norm=True)
MOE = ModelConfig(arch="moe", n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16, dropout=0.0,
                  n_expert=4, expert_top_k=2, expert_hidden=48)
LSTM = ModelConfig(arch="rnn", rnn_cell="lstm", n_layer=2, n_embd=24, rnn_hidden=32, block_size=16,
                   dropout=0.0, tie_embeddings=False, rnn_layernorm=True)
GRU = ModelConfig(arch="rnn", rnn_cell="gru", n_layer=1, n_embd=32, rnn_hidden=32, block_size=16, dropout=0.0)


def test_registry_has_every_family():
    assert {"gpt", "llama", "moe", "rnn"} <= set(ARCHS)
    with pytest.raises(ConfigError, match="model.arch"):
        build_model(ModelConfig(arch="nope"), V)


@pytest.mark.parametrize("cfg", [LLAMA, MOE, LSTM, GRU], ids=["llama", "moe", "lstm", "gru"])
def test_shapes_and_initial_loss(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, V)
    idx = torch.randint(0, V, (3, 16))
    targets = torch.randint(0, V, (3, 16))  # not idx: a tied head favours the input token
    logits, _ = model(idx)
    none, loss = model(idx, targets)  # the fused head + loss returns no logits
    assert logits.shape == (3, 16, V) and none is None
    # ... and the same loss as cross-entropy over the full logits (the moe loss adds its aux losses)
    ce = model.aux_losses["ce"] if cfg.arch == "moe" else loss
    assert ce.item() == pytest.approx(F.cross_entropy(logits.view(-1, V), targets.view(-1)).item(), rel=1e-5)
    assert abs(loss.item() - math.log(V)) < 0.5
    assert model.block_size == 16
    assert flops_per_token(model) > 0


def test_llama_param_count_by_hand():
    C, L, hd, kv = 32, 2, 8, 2
    H = 128  # multiple of 64 near 8/3 * 32 = 85.3
    attn = C * C + 2 * C * (kv * hd) + C * C + 2 * hd  # wq, wk+wv (GQA: 2 kv heads), wo, q/k norms
    per_layer = C + attn + C + 3 * C * H  # two RMSNorms, SwiGLU w1 w3 w2
    expected = V * C + L * per_layer + C  # tied head
    assert build_model(LLAMA, V).num_params() == expected
    untied = build_model(ModelConfig(**{**LLAMA.__dict__, "tie_embeddings": False}), V)
    assert untied.num_params() == expected + V * C


def test_moe_param_count_by_hand():
    C, L, hd, kv, E, H = 32, 2, 8, 2, 4, 48
    attn = C * C + 2 * C * (kv * hd) + C * C  # no qk-norm here
    per_layer = 2 * C + attn + C * E + E * 3 * C * H  # norms, attention, router, experts
    model = build_model(MOE, V)
    assert model.num_params() == V * C + L * per_layer + C
    assert model.active_params() == model.num_params() - L * (E - 2) * 3 * C * H


def test_rnn_param_count_by_hand():
    E, H = 24, 32
    lstm = 4 * (E * H + H * H + 2 * H) + 4 * (H * H + H * H + 2 * H)  # two layers, 4 gates, 2 biases each
    expected = V * E + lstm + 2 * 2 * H + H * V + V  # + 2 LayerNorms + untied head with bias
    assert build_model(LSTM, V).num_params() == expected
    gru = 3 * (32 * 32 + 32 * 32 + 2 * 32)
    assert build_model(GRU, V).num_params() == V * 32 + gru + V  # tied head, its bias only


def test_rnn_tie_needs_equal_widths():
    with pytest.raises(ConfigError, match="tie_embeddings"):
        build_model(ModelConfig(arch="rnn", n_embd=16, rnn_hidden=32, tie_embeddings=True), V)


@pytest.mark.parametrize("cfg", [LLAMA, MOE, LSTM], ids=["llama", "moe", "lstm"])
def test_causal(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, V).eval()
    a = torch.randint(0, V, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % V
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[0, :10], lb[0, :10], atol=1e-5)
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_gqa_matches_repeated_kv_heads():
    """GQA with 2 kv heads equals multi-head attention whose k/v weights repeat each kv head."""
    torch.manual_seed(0)
    gqa = build_model(LLAMA, V).eval()
    mha = build_model(ModelConfig(**{**LLAMA.__dict__, "n_kv_head": 4}), V).eval()
    sd = gqa.state_dict()
    for key in list(sd):
        if key.endswith(("wk.weight", "wv.weight")):
            w = sd[key].view(2, 8, 32)  # (kv, hd, C)
            sd[key] = w.repeat_interleave(2, dim=0).reshape(32, 32)  # query heads 0,1 -> kv 0; 2,3 -> kv 1
    mha.load_state_dict(sd)
    idx = torch.randint(0, V, (2, 16))
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


def test_rope_base_changes_output():
    torch.manual_seed(0)
    a = build_model(LLAMA, V).eval()
    b = build_model(ModelConfig(**{**LLAMA.__dict__, "rope_base": 500.0}), V).eval()
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, V, (1, 16))
    assert torch.allclose(a(idx)[0][:, 0], b(idx)[0][:, 0], atol=1e-5)  # position 0 is not rotated
    assert not torch.allclose(a(idx)[0][:, 5:], b(idx)[0][:, 5:])


def test_fused_rope_matches_rotate_half_and_its_gradient():
    """apply_rope's hand-written backward against autograd through the textbook formula."""
    from brlm.models.llama import apply_rope, rope_cos_sin

    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64, requires_grad=True)  # (B, T, nh, hd)
    cos, sin = (t.double() for t in rope_cos_sin(torch.arange(3, 8), 8, 10000.0))

    def textbook(x):  # HF: x * cos + rotate_half(x) * sin with cos, sin repeated over both halves
        c, s = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        return x * c + torch.cat([-x[..., 4:], x[..., :4]], -1) * s

    assert torch.allclose(apply_rope(x, cos, sin), textbook(x))
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, cos, sin), (x,))
    g = torch.randn_like(x)
    assert torch.allclose(torch.autograd.grad(apply_rope(x, cos, sin), x, g)[0], torch.autograd.grad(textbook(x), x, g)[0])


def test_moe_routing_and_aux_losses():
    torch.manual_seed(0)
    model = build_model(MOE, V)
    idx = torch.randint(0, V, (4, 16))
    _, loss = model(idx, idx)
    aux = model.aux_losses
    expected = aux["ce"] + MOE.aux_loss_coef * aux["moe_balance"] + MOE.z_loss_coef * aux["moe_z"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0.9 < aux["moe_balance"].item() < 1.2  # near 1.0: a fresh router spreads tokens evenly
    load = model.expert_load
    assert load.shape == (2, 4) and torch.allclose(load.sum(-1), torch.ones(2))
    # The balance loss has a gradient into the router, so training can fix a skewed router.
    loss.backward()
    assert model.layers[0].ffn.router.weight.grad.abs().sum() > 0

    # A router that sends every token to expert 0 first: the load and the balance loss show it.
    ffn = model.layers[0].ffn
    u = torch.randn(32)
    with torch.no_grad():
        ffn.router.weight.zero_()
        ffn.router.weight[0] = 10 * u / u.dot(u)  # router logit 10 for expert 0, 0 for the others
        ffn(u.expand(2, 8, 32))
    assert ffn.load[0].item() == pytest.approx(0.5)  # top-2: expert 0 holds half of all routed slots
    assert ffn.balance_loss.item() > 1.9  # 4 * (0.5 * ~1 + 0.5 * ~0): skew costs about twice the balanced 1.0


def test_moe_top1_output_equals_chosen_expert():
    """With top-1 routing a token's FFN output is exactly its expert's output (weight 1, no dropping)."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**MOE.__dict__, "expert_top_k": 1})
    ffn = build_model(cfg, V).layers[0].ffn
    x = torch.randn(1, 10, 32)
    out = ffn(x)
    choice = ffn.router(x[0]).argmax(-1)
    for t in range(10):
        ref = ffn.experts[int(choice[t])](x[0, t : t + 1])
        assert torch.allclose(out[0, t], ref[0], atol=1e-6)


@pytest.mark.parametrize("cfg", [LLAMA, MOE, LSTM, GRU], ids=["llama", "moe", "lstm", "gru"])
def test_cached_greedy_decoding_equals_uncached(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, V).eval()
    prompt = torch.randint(0, V, (2, 5))
    steps = 8
    # Uncached: the whole sequence each time.
    seq = prompt
    ref = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(seq)[0][:, -1]
            ref.append(logits)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
        # Cached: the prompt once, then one token per call.
        cache = model.make_cache(2, 16, "cpu")
        logits = model(prompt, cache=cache)[0][:, -1]
        got = [logits]
        for t in range(steps - 1):
            nxt = logits.argmax(-1, keepdim=True)
            assert torch.equal(nxt[:, 0], seq[:, 5 + t])
            logits = model(nxt, cache=cache)[0][:, -1]
            got.append(logits)
    assert cache.pos == 5 + steps - 1
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_cache_prefill_in_chunks():
    """Two tokens at a time after a prefill (mask with an offset) equal the uncached logits."""
    torch.manual_seed(0)
    model = build_model(LLAMA, V).eval()
    idx = torch.randint(0, V, (1, 12))
    with torch.no_grad():
        full = model(idx)[0]
        cache = model.make_cache(1, 12, "cpu")
        parts = [model(idx[:, i : i + 3], cache=cache)[0] for i in range(0, 12, 3)]
    assert torch.allclose(full, torch.cat(parts, dim=1), atol=1e-5)


def test_llama_matches_hugging_face_logits():
    """Copy a 2-layer brlm llama (GQA) into transformers' LlamaForCausalLM: same logits."""
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig(**{**LLAMA.__dict__, "qk_norm": False, "rope_base": 500.0})
    torch.manual_seed(0)
    ours = build_model(cfg, V).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=cfg.norm_eps, rope_theta=500.0,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn.wq": "self_attn.q_proj",
             "attn.wk": "self_attn.k_proj", "attn.wv": "self_attn.v_proj", "attn.wo": "self_attn.o_proj",
             "ffn.w1": "mlp.gate_proj", "ffn.w3": "mlp.up_proj", "ffn.w2": "mlp.down_proj"}
    sd = {"model.embed_tokens.weight": ours.tok_emb.weight, "model.norm.weight": ours.norm.weight,
          "lm_head.weight": ours.tok_emb.weight}
    for i in range(2):
        for a, b in names.items():
            sd[f"model.layers.{i}.{b}.weight"] = ours.state_dict()[f"layers.{i}.{a}.weight"]
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf(input_ids=idx).logits, atol=1e-4)


@pytest.mark.parametrize("cfg", [LLAMA, ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)],
                         ids=["llama", "gpt"])
def test_training_forward_compiles_without_graph_breaks(cfg):
    """train.compile=true: the fused RoPE and the fused loss must trace as one graph. (moe is not
    here: its token dispatch has data-dependent shapes, which Dynamo splits the graph at.)"""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    torch.manual_seed(0)
    model = build_model(cfg, V)
    idx, targets = torch.randint(0, V, (2, 16)), torch.randint(0, V, (2, 16))
    eager = model(idx, targets)[1]
    compiled = torch.compile(model, backend=counter)(idx, targets)[1]
    compiled.backward()
    assert counter.frame_count == 1
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5)
