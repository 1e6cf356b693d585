"""Statistics for extrinsic scores: means, the seeds' spread, bootstrap CIs, paired tests.

Everything is seeded (numpy's PCG64 through `default_rng(seed)`), so the same scores give the same
intervals and p-values on every machine. Scores are per-item numbers in [0, 1].

* `mean_std(values)`: the seeds' "mean ± std" across test-set seeds. Their published std is the
  sample std (ddof = 1): for QA base EM 0.035 / 0.050 / 0.025 it is 0.012583, ddof = 0 would give
  0.010274 (see tests/test_extrinsic_data.py, which checks every figure of their JSON).
* `bootstrap_ci(values)`: percentile 95 % CI of the mean, resampling items.
* `seeds_bootstrap_ci(per_seed)`: the CI of the mean over seeds, resampling items within each seed.
* `paired_bootstrap(a, b)`, `paired_permutation(a, b)`: base vs adapted on the same items.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from brlm.errors import BrlmError


def _array(values: Sequence[float], name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise BrlmError(f"{name}: no scores to summarise")
    if not np.all(np.isfinite(x)):
        raise BrlmError(f"{name}: scores must be finite numbers")
    return x


def mean(values: Sequence[float]) -> float:
    return float(_array(values).mean())


def std(values: Sequence[float], ddof: int = 1) -> float:
    """Sample standard deviation (ddof = 1, as the seeds); 0.0 for a single value."""
    x = _array(values)
    return float(x.std(ddof=ddof)) if x.size > ddof else 0.0


def mean_std(values: Sequence[float], ddof: int = 1) -> dict[str, float]:
    return {"mean": mean(values), "std": std(values, ddof=ddof), "n": int(len(values))}


def _percentile_ci(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator, chunk: int = 1000) -> np.ndarray:
    # In chunks so a 10k x 10k resample never needs 800 MB at once.
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        idx = rng.integers(0, x.size, size=(k, x.size))
        out[start:start + k] = x[idx].mean(axis=1)
    return out


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap CI of the mean over items (Efron & Tibshirani 1993, ch. 13)."""
    x = _array(values)
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    lo, hi = _percentile_ci(means, confidence)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "n": int(x.size)}


def seeds_bootstrap_ci(per_seed: Sequence[Sequence[float]], *, n_resamples: int = 10_000, confidence: float = 0.95,
                       seed: int = 0) -> dict[str, float]:
    """Mean ± std over test-set seeds, and a CI of that mean resampling items within each seed."""
    arrays = [_array(v, f"seed {i}") for i, v in enumerate(per_seed)]
    rng = np.random.default_rng(seed)
    seed_means = np.stack([_resampled_means(x, n_resamples, rng) for x in arrays])  # (S, R)
    lo, hi = _percentile_ci(seed_means.mean(axis=0), confidence)
    per = [float(x.mean()) for x in arrays]
    return {"mean": float(np.mean(per)), "std": std(per), "lo": lo, "hi": hi,
            "n_seeds": len(arrays), "n_items": int(sum(x.size for x in arrays))}


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = _array(a, "base scores"), _array(b, "adapted scores")
    if x.size != y.size:
        raise BrlmError(f"paired scores: {x.size} base items but {y.size} adapted items; pair them by item hash first")
    return y - x


def effect_size(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean difference b - a and Cohen's d_z (mean difference / std of the differences, ddof = 1)."""
    d = _paired(a, b)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    dz = float(d.mean() / sd) if sd > 0 else (0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()))
    return {"diff": float(d.mean()), "cohen_dz": dz}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """CI of mean(b - a) resampling items (pairs stay together); p = two-sided share of resampled
    differences on the other side of zero (Koehn 2004, https://aclanthology.org/W04-3250/)."""
    d = _paired(a, b)
    means = _resampled_means(d, n_resamples, np.random.default_rng(seed))
    lo, hi = _percentile_ci(means, confidence)
    below, above = float(np.mean(means <= 0)), float(np.mean(means >= 0))
    p = min(1.0, 2 * min(below, above))
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "p": p, "n": int(d.size), **effect_size(a, b)}


def paired_permutation(a: Sequence[float], b: Sequence[float], *, n_permutations: int = 10_000,
                       seed: int = 0) -> dict[str, float]:
    """Two-sided paired permutation (sign-flip) test of mean(b - a) = 0.

    Under the null each item's base and adapted scores are exchangeable, so each difference's sign
    is a coin flip. Exact over all 2^n flips when that is at most `n_permutations`; otherwise
    Monte Carlo with the +1 correction, p = (1 + #{|stat| >= |observed|}) / (1 + N)
    (Phipson & Smyth 2010, https://doi.org/10.2202/1544-6115.1585), so p is never 0.
    """
    d = _paired(a, b)
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)  # float sums of the same terms in another order
    if 2 ** d.size <= n_permutations:
        signs = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1  # (2^n, n)
        stats = np.abs((signs * d).mean(axis=1))
        p = float(np.mean(stats >= observed - tol))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_permutations, 1000):
            k = min(1000, n_permutations - start)
            signs = rng.integers(0, 2, size=(k, d.size)) * 2 - 1
            hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tol))
        p = (1 + hits) / (1 + n_permutations)
        exact = False
    return {"diff": float(d.mean()), "p": p, "exact": exact, "n": int(d.size), **effect_size(a, b)}


def compare_paired(a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_resamples: int = 10_000) -> dict[str, float]:
    """Base vs adapted on the same items: both means, the paired bootstrap CI and the permutation p."""
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
    perm = paired_permutation(a, b, n_permutations=n_resamples, seed=seed)
    return {"base": mean(a), "adapted": mean(b), "diff": boot["diff"], "lo": boot["lo"], "hi": boot["hi"],
            "p_bootstrap": boot["p"], "p_permutation": perm["p"], "cohen_dz": boot["cohen_dz"], "n": boot["n"]}
