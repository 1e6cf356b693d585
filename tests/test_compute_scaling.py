"""Scaling laws: Chinchilla's optimum for its own budget, Kaplan's published curves."""

from __future__ import annotations

import pytest

from brlm.compute.scaling import chinchilla_loss, chinchilla_optimal, for_budget, kaplan_loss
from brlm.errors import BrlmError


def test_chinchilla_budget_gives_70b_on_1_4t_tokens():
    # Chinchilla: 70B parameters, 1.4T tokens, C = 6·N·D ≈ 5.88e23 FLOPs.
    out = chinchilla_optimal(6 * 70e9 * 1.4e12)
    assert out["rule_20"]["n_params"] == pytest.approx(70e9, rel=0.01)
    assert out["rule_20"]["tokens"] == pytest.approx(1.4e12, rel=0.01)
    fit = out["fitted"]
    assert 6 * fit["n_params"] * fit["tokens"] == pytest.approx(6 * 70e9 * 1.4e12)
    # The fitted optimum is a minimum of L(N, D) along the budget curve.
    c = 6 * 70e9 * 1.4e12
    for f in (0.8, 1.25):
        n = fit["n_params"] * f
        assert chinchilla_loss(n, c / (6 * n)) > fit["loss_fit"]


def test_kaplan_published_curves():
    assert kaplan_loss(8.8e13) == pytest.approx(1.0)  # N = N_c
    assert kaplan_loss(tokens=5.4e13) == pytest.approx(1.0)
    assert kaplan_loss(1e9) > kaplan_loss(1e10)
    # With infinite data L(N, D) tends to L(N).
    assert kaplan_loss(1e9, 1e30) == pytest.approx(kaplan_loss(1e9), rel=1e-6)
    assert for_budget(1e20)["fitted"]["kaplan_loss"] > for_budget(1e22)["fitted"]["kaplan_loss"]
    with pytest.raises(BrlmError):
        kaplan_loss(-1)
    with pytest.raises(BrlmError):
        chinchilla_optimal(0)
