"""The fused head + cross-entropy (models/loss.py) against F.cross_entropy over full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from brlm.models.loss import default_chunk_rows, linear_cross_entropy


def _inputs(n=37, c=8, v=50, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, c, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    return h, w, b, t


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, [x for x in tensors if x is not None])


@pytest.mark.parametrize("chunk_rows", [1, 5, 16, 37, 100])  # 37 rows: uneven, exact and oversized chunks
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["row", "col"])  # logits (rows, V) or their transpose (V, rows)
def test_matches_full_logits_loss_and_gradients(chunk_rows, bias, layout):
    h, w, b, t = _inputs(bias=bias)
    t[::4] = -100  # ignored rows count neither in the sum nor in the mean
    ref = F.cross_entropy(F.linear(h, w, b), t)
    got = linear_cross_entropy(h, w, t, bias=b, chunk_rows=chunk_rows, layout=layout)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    for g_ref, g_got in zip(_grads(ref, h, w, b), _grads(got, h, w, b)):
        assert torch.allclose(g_ref, g_got, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_confident_wrong_rows_keep_an_exact_finite_loss(dtype):
    """A target whose probability is far below the dtype's smallest number (a logit gap of 200 in
    fp32, 1000 in fp64) still gets the exact loss (log-sum-exp, never log of a probability), and
    its gradient is -1 there."""
    h, w, _, t = _inputs(n=8, c=4, v=30)
    gap = 200.0 if dtype == torch.float32 else 1000.0
    h = h.detach().to(dtype)
    w = w.detach().to(dtype)
    w[:, 0] = 0.0
    w[t[0], 0] = -1.0  # row 0's target sits `gap` below the rest
    h[0, 0] = gap
    h, w = h.requires_grad_(), w.requires_grad_()
    ref = F.cross_entropy(F.linear(h, w), t)
    got = linear_cross_entropy(h, w, t, chunk_rows=3)
    assert torch.isfinite(got) and got.item() == pytest.approx(ref.item(), rel=1e-6)
    for g_ref, g_got in zip(_grads(ref, h, w), _grads(got, h, w)):
        assert torch.allclose(g_ref, g_got, rtol=1e-5, atol=1e-6)


def test_incoming_gradient_scales_the_result():
    """loss / grad_accum, or a weighted sum of losses, must scale the stored gradients."""
    h, w, _, t = _inputs()
    ref = _grads(0.25 * F.cross_entropy(h @ w.t(), t), h, w)
    got = _grads(0.25 * linear_cross_entropy(h, w, t, chunk_rows=8), h, w)
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, rtol=1e-10)


def test_batched_hidden_and_targets_and_no_grad_path():
    h, w, _, t = _inputs(n=24)
    ref = F.cross_entropy(h @ w.t(), t)
    assert linear_cross_entropy(h.view(3, 8, -1), w, t.view(3, 8), chunk_rows=5).item() == pytest.approx(ref.item())
    with torch.no_grad():  # loss only, chunked, no stored gradients
        assert linear_cross_entropy(h, w, t, chunk_rows=5).item() == pytest.approx(ref.item(), rel=1e-12)
    with pytest.raises(ValueError, match="rows"):
        linear_cross_entropy(h, w, t[:-1])


def test_all_targets_ignored_gives_zero_not_nan():
    h, w, _, t = _inputs(n=4)
    loss = linear_cross_entropy(h, w, torch.full_like(t, -100))
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(g) == 0 for g in _grads(loss, h, w))


def test_tied_weight_gets_both_gradients():
    """With tied embeddings the head weight is also the embedding: autograd adds both parts."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(20, 6)
    idx, t = torch.randint(0, 20, (2, 7)), torch.randint(0, 20, (2, 7))
    ref = _grads(F.cross_entropy((emb(idx) @ emb.weight.t()).view(-1, 20), t.view(-1)), emb.weight)[0]
    got = _grads(linear_cross_entropy(emb(idx), emb.weight, t, chunk_rows=3), emb.weight)[0]
    assert torch.allclose(ref, got, atol=1e-6)


@pytest.mark.parametrize("layout", ["row", "col"])
def test_bf16_autocast_close_to_fp32(layout):
    h, w, _, t = _inputs(n=64, c=16, v=40)
    h, w = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = F.cross_entropy(h @ w.t(), t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, t, chunk_rows=16, layout=layout)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(ref.item(), rel=2e-2)
    gh, gw = _grads(got, h, w)
    assert gh.dtype == h.dtype and gw.dtype == w.dtype
    assert torch.allclose(gh, _grads(ref, h)[0], atol=5e-3)


def test_default_chunk_keeps_logits_small():
    assert default_chunk_rows(8192) * 8192 * 4 <= 4 * 2**20
    assert default_chunk_rows(10**7) >= 16
    assert default_chunk_rows(8192, 2) == 2 * default_chunk_rows(8192) == 256


def test_chunk_rows_follow_the_matmul_dtype(monkeypatch):
    """bf16 matmuls (autocast or bf16 tensors) take chunks of twice the rows of fp32 ones."""
    import brlm.models.loss as L

    seen: list[int] = []
    real = L._chunk_softmax_loss
    monkeypatch.setattr(L, "_chunk_softmax_loss", lambda logits, *a: seen.append(logits.size(0)) or real(logits, *a))
    V = 8192
    h, w, t = torch.randn(600, 16, requires_grad=True), torch.randn(V, 16, requires_grad=True), torch.randint(0, V, (600,))
    linear_cross_entropy(h, w, t)
    assert seen[:2] == [128, 128]
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(h, w, t)
    assert seen[:2] == [256, 256]


def test_out_of_range_targets_are_refused_like_cross_entropy():
    h, w, _, t = _inputs(n=6, v=10)
    for bad in (-1, 10):
        t2 = t.clone()
        t2[3] = bad
        with pytest.raises(IndexError, match=f"target {bad} is out of bounds"):
            linear_cross_entropy(h, w, t2)


def test_second_order_gradients_fail_loudly():
    h, w, _, t = _inputs()
    (gh,) = torch.autograd.grad(linear_cross_entropy(h, w, t), h, create_graph=True)
    with pytest.raises(RuntimeError):
        gh.sum().backward()  # the gradients were computed in forward: not differentiable again


@pytest.mark.parametrize("chunk_rows", [1, 7, 100])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_label_smoothing_matches_f_cross_entropy(chunk_rows, bias, layout):
    h, w, b, t = _inputs(bias=bias)
    t[::5] = -100
    ref = F.cross_entropy(F.linear(h, w, b), t, label_smoothing=0.05)
    got = linear_cross_entropy(h, w, t, bias=b, chunk_rows=chunk_rows, label_smoothing=0.05, layout=layout)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    for g_ref, g_got in zip(_grads(ref, h, w, b), _grads(got, h, w, b)):
        assert torch.allclose(g_ref, g_got, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the loss-only path smooths the same way
        assert linear_cross_entropy(h, w, t, bias=b, chunk_rows=chunk_rows, label_smoothing=0.05,
                                    layout=layout).item() == pytest.approx(ref.item())


def test_models_smooth_only_in_training():
    from brlm.config import ModelConfig
    from brlm.models.registry import build_model

    torch.manual_seed(0)
    for cfg in (ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, dropout=0.0),
                ModelConfig(arch="rnn", n_layer=1, n_embd=16, rnn_hidden=16, block_size=8, dropout=0.0)):
        model = build_model(cfg, 40)
        x, y = torch.randint(0, 40, (2, 8)), torch.randint(0, 40, (2, 8))
        logits, _ = model(x)
        model.label_smoothing = 0.1
        model.train()
        _, loss = model(x, y)
        assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 40), y.reshape(-1), label_smoothing=0.1).item(), rel=1e-5)
        model.eval()
        _, loss = model(x, y)
        assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 40), y.reshape(-1)).item(), rel=1e-5)


@pytest.fixture
def plans(tmp_path, monkeypatch):
    """choose_loss_plan with a private cache and this process's decisions reset."""
    import brlm.models.loss as L

    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(L, "_plans", {})
    return L


def _fake_times(L, monkeypatch, ms: dict[str, float]) -> list[tuple[bool, int]]:
    """_time_plan returns ms["row/128"] etc.; records every plan it was asked to time."""
    asked: list[tuple[bool, int]] = []

    def fake(hidden, weight, bias, targets, col, rows):
        asked.append((col, rows))
        return ms[f"{'col' if col else 'row'}/{rows}"] / 1e3

    monkeypatch.setattr(L, "_time_plan", fake)
    return asked


@pytest.mark.parametrize("ms, want", [
    ({"row/128": 10.0, "row/256": 9.0, "col/128": 8.0, "col/256": 7.0}, ("col", 256)),
    ({"row/128": 10.0, "row/256": 8.0, "col/128": 8.5, "col/256": 9.6}, ("row", 256)),
    ({"row/128": 10.0, "row/256": 9.6, "col/128": 9.7, "col/256": 9.8}, ("row", 128)),  # nothing 5 % faster
])
def test_loss_plan_follows_the_timings_and_training_uses_it(plans, monkeypatch, ms, want):
    L = plans
    V = 8192
    w = torch.randn(V, 16)
    _fake_times(L, monkeypatch, ms)
    rec = L.choose_loss_plan(w, rows=4096)
    assert (rec["layout"], rec["chunk_rows"]) == want and rec["cached"] is False
    assert rec["ms"] == ms and rec["rows_timed"] == 512  # 2 chunks of the larger size
    # The grad path now runs that plan; the no-grad path keeps the row layout in default chunks.
    seen: list[tuple[int, int]] = []
    real = L._chunk_softmax_loss
    monkeypatch.setattr(L, "_chunk_softmax_loss", lambda logits, *a: seen.append(tuple(logits.shape)) or real(logits, *a))
    h = torch.randn(600, 16, requires_grad=True)
    t = torch.randint(0, V, (600,))
    linear_cross_entropy(h, w.requires_grad_(), t)
    rows = want[1]
    assert seen[0] == ((V, rows) if want[0] == "col" else (rows, V))
    seen.clear()
    with torch.no_grad():
        linear_cross_entropy(h, w, t)
    assert seen[0] == (128, V)


def test_loss_plan_is_measured_once_per_machine_and_shape(plans, monkeypatch):
    L = plans
    w = torch.randn(8192, 16)
    asked = _fake_times(L, monkeypatch, {"row/128": 10.0, "row/256": 9.0, "col/128": 8.0, "col/256": 7.0})
    L.choose_loss_plan(w, rows=4096)
    assert sorted(set(asked)) == [(False, 128), (False, 256), (True, 128), (True, 256)]
    asked.clear()
    monkeypatch.setattr(L, "_plans", {})  # a new process on the same machine reads the file
    again = L.choose_loss_plan(w, rows=4096)
    assert asked == [] and again["cached"] is True and again["layout"] == "col"
    # Another shape is another measurement; a step of one chunk only chooses the layout.
    L.choose_loss_plan(torch.randn(8192, 32), rows=100)
    assert sorted(set(asked)) == [(False, 128), (True, 128)]


def test_loss_plan_not_measured_off_the_cpu_or_for_huge_heads(plans, monkeypatch):
    L = plans
    asked = _fake_times(L, monkeypatch, {})
    rec = L.choose_loss_plan(torch.empty(8192, 16, device="meta"), rows=4096)
    assert rec["layout"] == "row" and "not measured" in rec["reason"]
    monkeypatch.setattr(L, "PROBE_FLOPS", 1.0)
    rec = L.choose_loss_plan(torch.randn(8192, 16), rows=4096)
    assert rec["layout"] == "row" and "too big" in rec["reason"] and asked == []


def test_loss_plan_real_timing_runs_and_bad_layout_is_refused(plans):
    rec = plans.choose_loss_plan(torch.randn(500, 8), torch.randn(500), rows=64, cache=False)
    assert rec["layout"] in ("row", "col") and set(rec["ms"]) == {"row/2097", "col/2097"}
    h, w, _, t = _inputs()
    with pytest.raises(ValueError, match="layout='diagonal'"):
        linear_cross_entropy(h, w, t, layout="diagonal")
