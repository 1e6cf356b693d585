"""Training attention (brlm.models.attention): the plain form equals the fused kernel to rounding,
grouped-query heads included; a model takes it only where the measured plan chose it and only
with gradients; the plan is measured once per machine and shape, on the CPU, within memory."""

import pytest
import torch
import torch.nn.functional as F

import brlm.models.attention as A


@pytest.fixture
def plans(tmp_path, monkeypatch):
    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(A, "_plans", {})
    return tmp_path / "cache"


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_plain_form_equals_the_fused_kernel_values_and_gradients(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 9, 8, requires_grad=True)
    k, v = (torch.randn(2, kv_heads, 9, 8, requires_grad=True) for _ in range(2))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != 4)
    out = A.plain_attention(q, k, v)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    g_out = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # bf16 inputs: the probabilities are rounded to bf16, the result stays close
    qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))
    torch.testing.assert_close(A.plain_attention(qb, kb, vb).float(), ref.detach(), rtol=0.05, atol=0.03)


def test_dropout_reaches_the_plain_form():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    assert not torch.allclose(A.plain_attention(q, k, v, dropout_p=0.5), A.plain_attention(q, k, v))


def test_models_follow_the_plan_only_with_gradients(plans, monkeypatch):
    from tests.test_infer_engine import tiny_model

    calls = []
    real = A.plain_attention
    monkeypatch.setattr(A, "plain_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for arch in ("gpt", "llama"):
        model = tiny_model(arch).train()
        idx = torch.randint(0, 97, (2, 12))
        _, fused = model(idx, idx)
        assert not calls  # no plan: the fused kernel
        A._plans[A._key(12, model.cfg.head_dim, torch.float32, "cpu")] = "plain"
        _, plain = model(idx, idx)
        assert len(calls) == model.cfg.n_layer
        torch.testing.assert_close(plain, fused, rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # evaluation keeps the fused kernel whatever the plan
            model(idx, idx)
        assert len(calls) == model.cfg.n_layer
        calls.clear()
        A._plans.clear()


def test_plan_follows_the_timing_and_is_measured_once(plans, monkeypatch):
    timed = []

    def fake(slices, T, hd, dtype):
        timed.append((slices, T, hd, dtype))
        return {"fused": 10.0, "plain": 5.0 if dtype == torch.bfloat16 else 9.5}

    monkeypatch.setattr(A, "_time_pair", fake)
    rec = A.choose_attention_plan(16, 4, 256, 64, 4, torch.bfloat16)
    assert rec["form"] == "plain" and not rec["cached"] and timed == [(64, 256, 64, torch.bfloat16)]
    assert A._plans[A._key(256, 64, torch.bfloat16, "cpu")] == "plain"
    rec = A.choose_attention_plan(16, 4, 256, 64, 4, torch.float32)  # 0.95x: not enough
    assert rec["form"] == "fused" and A._plans[A._key(256, 64, torch.float32, "cpu")] == "fused"
    monkeypatch.setattr(A, "_plans", {})  # a new process: decided from the cache file
    again = A.choose_attention_plan(16, 4, 256, 64, 4, torch.bfloat16)
    assert again["cached"] and again["form"] == "plain" and len(timed) == 2
    assert (plans / "attention_plan.json").is_file()


def test_plan_not_measured_off_the_cpu_or_beyond_memory(plans, monkeypatch):
    monkeypatch.setattr(A, "_time_pair", lambda *a: pytest.fail("timed"))
    A._plans[A._key(256, 64, torch.bfloat16, "meta")] = "plain"
    rec = A.choose_attention_plan(16, 4, 256, 64, 4, torch.bfloat16, device="meta")
    assert rec["form"] == "fused" and "not timed off the CPU" in rec["reason"] and not A._plans
    monkeypatch.setattr(A, "_available_bytes", lambda: 2**30)
    rec = A.choose_attention_plan(32, 16, 4096, 64, 24, torch.bfloat16)
    assert rec["form"] == "fused" and "MiB" in rec["reason"]


def test_real_timing_runs(plans):
    rec = A.choose_attention_plan(2, 2, 16, 8, 1, torch.float32)
    assert rec["form"] in ("fused", "plain") and set(rec["ms"]) == {"fused", "plain"} and rec["slices_timed"] == 4
