"""Statistics of extrinsic scores: the seeds' std, bootstrap CIs (coverage with a fixed seed),
paired bootstrap and paired permutation test on an obvious and a null case."""

from __future__ import annotations

import numpy as np
import pytest

from brlm.errors import BrlmError
from brlm.eval.extrinsic.stats import (
    bootstrap_ci,
    compare_paired,
    effect_size,
    mean_std,
    paired_bootstrap,
    paired_permutation,
    seeds_bootstrap_ci,
    std,
)


def test_std_is_the_sample_std_as_the_seeds():
    # QA base EM of the seeds' three test-set seeds and their published std.
    assert mean_std([0.035, 0.05, 0.025])["std"] == pytest.approx(0.012583057392117916, abs=1e-15)
    assert std([0.035, 0.05, 0.025], ddof=0) == pytest.approx(0.010274023338281628)
    assert std([0.3]) == 0.0


def test_bootstrap_ci_sanity():
    assert bootstrap_ci([0.5] * 20, n_resamples=200) == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 20}
    x = np.random.default_rng(0).random(200)
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert a == b                                                    # seeded: repeatable
    assert a["lo"] < a["mean"] < a["hi"]
    # the CI of a mean of 200 uniforms is about mean ± 1.96 * 0.289 / sqrt(200) = ± 0.040
    assert a["hi"] - a["lo"] == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(200), rel=0.1)
    with pytest.raises(BrlmError):
        bootstrap_ci([])


def test_bootstrap_ci_coverage():
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(200):
        x = (rng.random(100) < 0.3).astype(float)                    # EM-like 0/1 scores, true mean 0.3
        ci = bootstrap_ci(x, n_resamples=500, seed=i)
        covered += ci["lo"] <= 0.3 <= ci["hi"]
    assert 0.88 <= covered / 200 <= 0.99


def test_seeds_bootstrap_ci():
    per_seed = [np.full(50, 0.1), np.full(50, 0.2), np.full(50, 0.3)]
    r = seeds_bootstrap_ci(per_seed, n_resamples=100)
    assert r["mean"] == pytest.approx(0.2) and r["std"] == pytest.approx(0.1)
    assert r["lo"] == pytest.approx(0.2) and r["hi"] == pytest.approx(0.2)
    assert r["n_seeds"] == 3 and r["n_items"] == 150


def test_permutation_obvious_case():
    rng = np.random.default_rng(2)
    base = rng.random(60) * 0.3
    adapted = base + 0.3 + rng.random(60) * 0.1
    r = paired_permutation(base, adapted, n_permutations=2000)
    assert r["p"] == pytest.approx(1 / 2001)                        # nothing as extreme: the +1 floor
    assert not r["exact"] and r["diff"] > 0.3 and r["cohen_dz"] > 5


def test_permutation_null_case():
    rng = np.random.default_rng(3)
    base, adapted = rng.random(80), rng.random(80)                   # same distribution, no effect
    r = paired_permutation(base, adapted, n_permutations=5000, seed=1)
    assert r["p"] > 0.05
    assert paired_permutation(base, base)["p"] == 1.0                # identical sides


def test_permutation_exact_for_few_items():
    r = paired_permutation([0, 0, 0], [1, 1, 1])
    assert r["exact"] and r["p"] == pytest.approx(2 / 8)             # all + or all - of 8 flips
    r = paired_permutation([0, 0, 0, 0], [1, 1, 1, 0.5])
    assert r["p"] == pytest.approx(2 / 16)


def test_paired_bootstrap_and_effect_size():
    base, adapted = [0.1, 0.2, 0.3, 0.4] * 10, [0.3, 0.3, 0.5, 0.6] * 10
    r = paired_bootstrap(base, adapted, n_resamples=2000)
    assert r["diff"] == pytest.approx(0.175) and 0 < r["lo"] < 0.175 < r["hi"]
    assert r["p"] == 0.0
    d = np.array(adapted) - np.array(base)
    assert effect_size(base, adapted)["cohen_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    c = compare_paired(base, adapted, n_resamples=500)
    assert c["base"] == pytest.approx(0.25) and c["adapted"] == pytest.approx(0.425) and c["p_permutation"] < 0.01
    with pytest.raises(BrlmError, match="pair them"):
        paired_bootstrap([0.1, 0.2], [0.3])
