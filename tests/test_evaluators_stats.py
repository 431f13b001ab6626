"""evaluators.stats against scipy / statsmodels and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from evaluators.stats import (holm, length_controlled, mcnemar_exact, paired_bootstrap_diff, resamples_for_family, rogan_gladen,
                              rogan_gladen_ci, tiers)


def test_paired_bootstrap_matches_paired_t_on_one_seed():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 400)
    a = b + rng.normal(0.12, 1, 400)  # paired: shared prompt effect b
    out = paired_bootstrap_diff(a, b, n_boot=20000, seed=3)
    d = a - b
    t = sps.ttest_rel(a, b)
    assert out["value"] == pytest.approx(d.mean())
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert out["ci_low"] == pytest.approx(d.mean() - half, abs=0.02)
    assert out["ci_high"] == pytest.approx(d.mean() + half, abs=0.02)
    assert out["p_value"] == pytest.approx(t.pvalue, abs=0.01)
    # a difference of zero: p near 1; the shared prompt effect cancels (an unpaired test would see noise)
    assert paired_bootstrap_diff(b + 5, b + 5, n_boot=200)["p_value"] == 1.0


def test_paired_bootstrap_seeds_widen_the_interval():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 300)
    one = paired_bootstrap_diff(base + 0.1, base, n_boot=4000, seed=0)
    seeds = np.stack([base + 0.1 + s for s in (-0.3, 0.0, 0.3)])  # seed-to-seed spread of the method's mean
    many = paired_bootstrap_diff(seeds, base, n_boot=4000, seed=0)
    assert many["value"] == pytest.approx(0.1)
    assert (many["ci_high"] - many["ci_low"]) > 3 * (one["ci_high"] - one["ci_low"])


def test_mcnemar_matches_statsmodels_exact():
    a = np.array([1] * 20 + [0] * 9 + [1] * 30 + [0] * 41)
    b = np.array([0] * 20 + [1] * 9 + [1] * 30 + [0] * 41)
    out = mcnemar_exact(a, b)
    table = [[30, 20], [9, 41]]  # rows: a unsafe / safe; columns: b unsafe / safe
    assert (out["a_only"], out["b_only"]) == (20, 9)
    assert out["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert out["test"] == "mcnemar-exact"
    assert out["value"] == pytest.approx(0.11)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_mcnemar_takes_one_seed_only():
    with pytest.raises(ValueError, match="one seed per method"):
        mcnemar_exact(np.zeros((3, 4)), np.zeros((1, 4)))


def test_several_seeds_compare_flags_with_the_crossed_bootstrap_not_a_test_on_seed_means():
    from leaderboards.compare import compare

    # B: a deterministic model (SFT, greedy): prompts 0-29 unsafe in every seed. A: three seeds that disagree; seed 0
    # is safe everywhere, seeds 1 and 2 are unsafe on prompts 0-29 like B. On seed means A is lower on 30 prompts and
    # never higher, so a sign test on them gives p ~ 2e-9; but two of A's three trained models equal B, and
    # resampling A's seeds shows the difference can be zero.
    b = np.zeros((3, 200))
    b[:, :30] = 1
    a = b.copy()
    a[0] = 0
    c = compare("a", "b", "unsafe_rate", a, b, n_boot=2000, seed=0)
    boot = paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert c.test == "paired-bootstrap"
    assert c.p == pytest.approx(boot["p_value"]) and c.p > 0.05
    assert c.diff == pytest.approx(-0.05) and c.ci_high == pytest.approx(0.0)
    one = compare("a", "b", "unsafe_rate", a[:1], b[:1], n_boot=2000, seed=0)  # one seed each: McNemar's exact test
    assert one.test == "mcnemar-exact" and one.p < 1e-8


def test_resamples_let_a_bootstrap_p_survive_holm_in_a_large_family():
    # hand: m = 66 -> B = ceil(4 * 66 / 0.05) - 1 = 5279, and 2 / 5280 = 0.05 / 132 exactly
    assert resamples_for_family(66, 2000) == 5279
    assert resamples_for_family(3, 2000) == 2000
    assert 2 / (resamples_for_family(105, 2000) + 1) <= 0.05 / (2 * 105)
    from leaderboards.compare import table_comparisons

    # 12 methods (66 pairs); "best" is far above the rest on every prompt. With B = 2000 its smallest p is 2/2001 and
    # Holm over 66 gives >= 0.066: never significant. The table must raise B so that it is.
    rng = np.random.default_rng(0)
    names = ["best"] + [f"m{i}" for i in range(11)]
    items = {n: {"reward_mean": ("k", rng.normal(0.0, 0.1, (1, 60)) + (1.0 if n == "best" else 0.0))} for n in names}
    tc = table_comparisons(names, items, ["reward_mean"], n_boot=2000, seed=0)
    best = [c for c in tc.pairwise if "best" in (c.a, c.b)]
    assert len(tc.pairwise) == 66 and all(c.significant for c in best)
    assert tc.tiers["best"] == 1 and all(tc.tiers[n] == 2 for n in names[1:])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, 1*0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])


def test_tiers_are_contiguous_and_need_all_pairs_indistinguishable():
    differs = {frozenset(p) for p in [("a", "c"), ("a", "d"), ("b", "d"), ("c", "e"), ("a", "e"), ("b", "e"), ("d", "e")]}
    out = tiers(["a", "b", "c", "d", "e"], lambda x, y: frozenset((x, y)) in differs)
    # b ~ a -> tier 1; c differs from a -> tier 2; d ~ c -> tier 2; e differs from c -> tier 3
    assert out == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 3}
    assert tiers(["x", "y"], lambda *_: False) == {"x": 1, "y": 1}


def test_rogan_gladen_point_by_hand():
    # p_obs 0.4, Se 0.9, Sp 0.8: (0.4 + 0.8 - 1) / (0.9 + 0.8 - 1) = 0.2 / 0.7
    assert rogan_gladen(0.4, 0.9, 0.8) == pytest.approx(0.2 / 0.7)
    assert rogan_gladen(0.1, 0.9, 0.8) == 0.0  # below the false-positive floor: clipped
    assert rogan_gladen(0.99, 0.9, 0.95) == 1.0
    assert rogan_gladen(0.4, 0.5, 0.5) is None  # a chance-level judge identifies nothing


def test_rogan_gladen_ci_hand_built_case():
    flags = np.array([1] * 40 + [0] * 60)  # p_obs = 0.4 on 100 prompts
    # (1) a judge known almost exactly: the interval is the prompt bootstrap mapped through the linear correction
    big = rogan_gladen_ci(flags, tp=900_000, fn=100_000, tn=800_000, fp=200_000, n_boot=20000, seed=0)
    assert big["value"] == pytest.approx(0.2 / 0.7)
    half_obs = 1.96 * np.sqrt(0.4 * 0.6 / 100)
    assert big["ci_low"] == pytest.approx((0.4 - half_obs - 0.2) / 0.7, abs=0.015)
    assert big["ci_high"] == pytest.approx((0.4 + half_obs - 0.2) / 0.7, abs=0.015)
    # (2) a judge measured on 100 + 100 held-out rows: its own uncertainty widens the interval. Delta method:
    # var(p) ≈ [var(p_obs) + (1 - p)^2 var(Sp) + p^2 var(Se)] / J^2 with J = 0.7, p = 2/7
    small = rogan_gladen_ci(flags, tp=90, fn=10, tn=80, fp=20, n_boot=20000, seed=0)
    p, j = 0.2 / 0.7, 0.7
    sd = np.sqrt(0.4 * 0.6 / 100 + (1 - p) ** 2 * 0.8 * 0.2 / 100 + p ** 2 * 0.9 * 0.1 / 100) / j
    assert small["ci_high"] - small["ci_low"] == pytest.approx(2 * 1.96 * sd, rel=0.12)
    assert small["ci_high"] - small["ci_low"] > 1.1 * (big["ci_high"] - big["ci_low"])
    assert small["sensitivity"] == {"value": 0.9, "tp": 90, "fn": 10}
    # (3) a judge whose Se + Sp may be <= 1: not identified, the interval is everything
    weak = rogan_gladen_ci(flags, tp=6, fn=4, tn=6, fp=4, n_boot=2000, seed=0)
    assert (weak["ci_low"], weak["ci_high"]) == (0.0, 1.0)


def test_length_controlled_removes_the_length_effect():
    rng = np.random.default_rng(0)
    n = 200
    len0 = rng.integers(20, 60, n).astype(float)
    r0 = rng.normal(0, 1, n)
    length = len0 + rng.normal(15, 10, n)  # this method is longer than SFT ...
    dl = length - len0
    t = np.tanh(dl / dl.std())
    reward = r0 + 0.3 + 2.0 * t  # ... gains 0.3 on its own and 2.0 * t from length
    out = length_controlled(reward, length, r0, len0)
    assert out["phi"] == pytest.approx(2.0)
    assert out["theta"] == pytest.approx(0.3)
    assert np.mean(out["adjusted"]) == pytest.approx(r0.mean() + 0.3)
    assert np.mean(reward) > np.mean(out["adjusted"]) + 1.0  # raw reward was inflated by verbosity
    # no baseline (the SFT run): adjusted == raw
    assert length_controlled(reward, length)["adjusted"] == pytest.approx(reward.tolist())
