"""Scaling laws: Chinchilla compute-optimal N and D, and Kaplan's predicted loss.

    from brlm.compute.scaling import chinchilla_optimal, kaplan_loss
    chinchilla_optimal(1e21)     # {"rule_20": {...}, "fitted": {...}} for a budget of 1e21 FLOPs

Compute: C = 6·N·D (Kaplan et al. 2020, §2.1).

Chinchilla (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"):
* Rule of thumb: ≈ 20 tokens per parameter at the optimum, so C = 6·N·20N ⇒ N = √(C/120), D = 20·N.
* Approach 3, the parametric fit L(N, D) = E + A/N^α + B/D^β with E = 1.69, A = 406.4, B = 410.7,
  α = 0.34, β = 0.28 (their eq. 10). Minimising L under C = 6·N·D gives
  N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b, with G = (αA / βB)^(1/(α+β)), a = β/(α+β), b = α/(α+β)
  (their eq. 4 and appendix D.2). With these published (rounded) constants the optimum uses far
  more than 20 tokens per parameter at large budgets (≈ 93 at Chinchilla's own 5.9e23 FLOPs);
  Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") report that the published
  approach-3 fit disagrees with approaches 1 and 2. brlm shows both answers side by side.

Kaplan et al. 2020 ("Scaling Laws for Neural Language Models"), with N = non-embedding parameters
and D = tokens, loss in nats/token on WebText2 with GPT-2's tokenizer:
* L(N) = (N_c/N)^α_N,  N_c = 8.8e13, α_N = 0.076     (eq. 1.1)
* L(D) = (D_c/D)^α_D,  D_c = 5.4e13, α_D = 0.095     (eq. 1.2)
* L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D          (eq. 1.5)

Both laws were fitted on English web text with other tokenizers: the losses are in *their* nats per
*their* token, so they rank choices (bigger model or more data?) but do not predict a brlm PT-BR
model's loss. Compare brlm runs through bits per byte instead.
"""

from __future__ import annotations

import math
from typing import Any

from brlm.errors import BrlmError

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
KAPLAN = {"N_c": 8.8e13, "alpha_N": 0.076, "D_c": 5.4e13, "alpha_D": 0.095}
TOKENS_PER_PARAM = 20.0


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise BrlmError(f"{name}={value!r}: expected a number > 0")


def chinchilla_loss(n_params: float, tokens: float) -> float:
    _positive("N", n_params)
    _positive("D", tokens)
    c = CHINCHILLA
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / tokens ** c["beta"]


def chinchilla_optimal(budget_flops: float) -> dict[str, Any]:
    """Compute-optimal N and D for a FLOPs budget: the 20-tokens rule and the approach-3 fit."""
    _positive("budget_flops", budget_flops)
    n20 = math.sqrt(budget_flops / (6 * TOKENS_PER_PARAM))
    c = CHINCHILLA
    s = c["alpha"] + c["beta"]
    G = (c["alpha"] * c["A"] / (c["beta"] * c["B"])) ** (1 / s)
    n_fit = G * (budget_flops / 6) ** (c["beta"] / s)
    d_fit = (budget_flops / 6) ** (c["alpha"] / s) / G
    return {
        "budget_flops": budget_flops,
        "rule_20": {"n_params": n20, "tokens": TOKENS_PER_PARAM * n20, "loss_fit": chinchilla_loss(n20, TOKENS_PER_PARAM * n20)},
        "fitted": {"n_params": n_fit, "tokens": d_fit, "tokens_per_param": d_fit / n_fit, "loss_fit": chinchilla_loss(n_fit, d_fit)},
    }


def kaplan_loss(n_params: float | None = None, tokens: float | None = None) -> float:
    """Kaplan's L(N), L(D) or L(N, D), whichever the arguments allow."""
    k = KAPLAN
    if n_params is None and tokens is None:
        raise BrlmError("kaplan_loss: give N, D or both")
    if tokens is None:
        _positive("N", n_params)
        return (k["N_c"] / n_params) ** k["alpha_N"]
    if n_params is None:
        _positive("D", tokens)
        return (k["D_c"] / tokens) ** k["alpha_D"]
    _positive("N", n_params)
    _positive("D", tokens)
    return ((k["N_c"] / n_params) ** (k["alpha_N"] / k["alpha_D"]) + k["D_c"] / tokens) ** k["alpha_D"]


def for_budget(budget_flops: float) -> dict[str, Any]:
    """Chinchilla-optimal N, D for the budget, with Kaplan's L(N, D) at each."""
    out = chinchilla_optimal(budget_flops)
    for key in ("rule_20", "fitted"):
        row = out[key]
        row["kaplan_loss"] = kaplan_loss(row["n_params"], row["tokens"])
    return out
