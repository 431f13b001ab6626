"""evaluators/stats.py on hand-built cases whose answer is known exactly: error messages, result keys, boundaries,
the pairing of the bootstrap and the early returns (issue 29 item 8: the survivors of `make mutation` on this file).
Fast; in `make mutation`'s test selection. The statistical behaviour is tested in tests/test_evaluators_stats.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from evaluators import stats
from evaluators.stats import (as_matrix, holm, length_controlled, mcnemar_exact, paired_bootstrap_diff, percentile_ci,
                              resamples_for_family, rogan_gladen, rogan_gladen_ci, seeds_prompts_replicates, tiers)


def test_percentile_ci_reads_the_2_5_and_97_5_percentiles() -> None:
    out = percentile_ci(7, np.arange(1001.0))  # the q-th percentile of 0..1000 is 10 q
    assert out == {"value": 7.0, "ci_low": pytest.approx(25.0), "ci_high": pytest.approx(975.0)}
    assert all(type(v) is float for v in out.values())


def test_replicates_weight_seeds_and_prompts_by_their_draw_counts() -> None:
    m = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    c = np.array([[3, 0, 0], [0, 0, 3], [1, 1, 1]])
    w = np.array([[2, 0], [0, 2], [1, 1]])
    # w' m c / (k n): seed 0 x prompt 0; seed 1 x prompt 2; the plain mean
    assert seeds_prompts_replicates(m, c, None, w) == pytest.approx([1.0, 32.0, m.mean()])
    # one seed: every draw of w is [1], so the replicate is the prompt-weighted mean
    one = np.array([[1.0, 2.0, 4.0]])
    got = seeds_prompts_replicates(one, c, np.random.default_rng(0))
    assert got == pytest.approx([1.0, 4.0, 7 / 3])
    # several seeds and no w: the seed counts of each replicate sum to k
    many = seeds_prompts_replicates(np.array([[0.0] * 3, [3.0] * 3]), np.array([[1, 1, 1]] * 400), np.random.default_rng(1))
    assert set(np.round(many, 9)) <= {0.0, 1.5, 3.0} and {0.0, 1.5, 3.0} <= set(np.round(many, 9))


def test_as_matrix_shapes_and_refusals() -> None:
    got = as_matrix([1, 0, 1])
    assert got.shape == (1, 3) and got.dtype == np.float64
    assert as_matrix([[1, 2], [3, 4]]).shape == (2, 2)
    with pytest.raises(ValueError, match=re.escape("expected per-prompt values as (seeds x prompts), got shape (2, 0)")):
        as_matrix(np.zeros((2, 0)))
    with pytest.raises(ValueError, match=re.escape("got shape (1, 1, 2)")):
        as_matrix(np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=re.escape("got shape (1, 0)")):
        as_matrix([])


def test_two_sided_bootstrap_p_by_hand() -> None:
    p = stats._two_sided_boot_p
    assert p(np.array([1.0, 2.0, 3.0])) == 0.5  # 2 * min(0 + 1, 3 + 1) / 4
    assert p(np.array([-1.0, -2.0, -3.0, 1.0])) == pytest.approx(0.8)  # 2 * min(4, 2) / 5
    assert p(np.array([0.0, 1.0, -1.0, 2.0])) == 1.0  # 2 * min(3, 4) / 5 = 1.2, capped
    assert p(np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(0.8)  # a zero counts on both sides: 2 * min(2, 5) / 5


def test_paired_bootstrap_shares_one_prompt_resample_between_the_methods() -> None:
    b = np.array([0.0, 1.0, 5.0, 2.0, 9.0])
    a = b + 0.25  # every prompt 0.25 better: paired, every replicate of the difference is exactly 0.25
    out = paired_bootstrap_diff(a, b, n_boot=9, seed=3)
    assert out["value"] == pytest.approx(0.25) and out["ci_low"] == pytest.approx(0.25) and out["ci_high"] == pytest.approx(0.25)
    assert out["p_value"] == pytest.approx(0.2)  # 2 * (0 + 1) / (9 + 1)
    assert out["n_prompts"] == 5 and out["test"] == "paired-bootstrap"
    assert set(out) == {"value", "ci_low", "ci_high", "p_value", "n_prompts", "test"}
    one = paired_bootstrap_diff(a, b, n_boot=0, seed=3)  # at least one replicate
    assert one["p_value"] == 1.0  # 2 * 1 / 2
    worse = paired_bootstrap_diff(b, a, n_boot=99, seed=0)
    assert worse["value"] == pytest.approx(-0.25) and worse["p_value"] == pytest.approx(0.02)


def test_paired_bootstrap_seed_and_resample_count_are_used() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 30)), rng.normal(size=(2, 30))
    x, y = paired_bootstrap_diff(a, b, n_boot=200, seed=1), paired_bootstrap_diff(a, b, n_boot=200, seed=1)
    assert x == y
    assert paired_bootstrap_diff(a, b, n_boot=200, seed=2)["ci_low"] != x["ci_low"]
    assert paired_bootstrap_diff(a, b, n_boot=300, seed=1)["ci_low"] != x["ci_low"]
    assert x["value"] == pytest.approx(a.mean() - b.mean())


def test_paired_comparisons_refuse_different_prompts_with_the_counts() -> None:
    msg = re.escape("paired comparison needs the same prompts: 3 vs 2")
    with pytest.raises(ValueError, match=msg):
        paired_bootstrap_diff([[1, 2, 3]], [[1, 2]])
    with pytest.raises(ValueError, match=msg):
        mcnemar_exact([[1, 0, 1]], [[1, 0]])
    with pytest.raises(ValueError, match=re.escape("McNemar's test takes one seed per method, got 2 and 1: "
                                                   "compare several seeds with paired_bootstrap_diff")):
        mcnemar_exact([[1, 0, 1], [0, 0, 1]], [1, 0, 0])
    with pytest.raises(ValueError, match=re.escape("got 1 and 3: compare")):
        mcnemar_exact([1, 0], [[1, 0], [0, 0], [1, 1]])


def test_mcnemar_counts_and_keys() -> None:
    out = mcnemar_exact([1, 1, 1, 0, 0, 1], [0, 0, 1, 0, 1, 1])
    assert out["a_only"] == 2 and out["b_only"] == 1 and out["n_prompts"] == 6 and out["test"] == "mcnemar-exact"
    assert out["value"] == pytest.approx(1 / 6)
    assert out["p_value"] == pytest.approx(1.0)  # 3 discordant, 2 vs 1: two-sided binomial p = 1
    lopsided = mcnemar_exact([1] * 6 + [0], [0] * 7)
    assert lopsided["p_value"] == pytest.approx(2 * 0.5 ** 6)
    same = mcnemar_exact([1, 0, 1], [1, 0, 1])
    assert same["p_value"] == 1.0 and same["a_only"] == same["b_only"] == 0


def test_resamples_for_family_by_hand() -> None:
    assert resamples_for_family(66, 2000) == 5279  # ceil(4 * 66 / 0.05) - 1
    assert resamples_for_family(1, 2000) == 2000
    assert resamples_for_family(1, 10) == 79 and resamples_for_family(0, 10) == 79 and resamples_for_family(-3, 10) == 79
    assert resamples_for_family(2, 10.0) == 159 and type(resamples_for_family(1, 5000.0)) is int


def test_holm_leaves_none_and_nan_out_of_the_family() -> None:
    got = holm([0.01, None, 0.04, float("nan"), 0.03])
    assert got[1] is None and got[3] is None
    assert got[0] == pytest.approx(0.03) and got[2] == pytest.approx(0.06) and got[4] == pytest.approx(0.06)
    assert holm([None, float("nan")]) == [None, None] and holm([]) == []
    assert holm([0.2]) == [pytest.approx(0.2)] and type(holm([0.2])[0]) is float


def test_tiers_open_a_new_tier_on_any_difference() -> None:
    pairs = {frozenset(("a", "c"))}
    out = tiers(["a", "b", "c", "d"], lambda x, y: frozenset((x, y)) in pairs)
    assert out == {"a": 1, "b": 1, "c": 2, "d": 2}  # c differs from a only, yet opens tier 2; d ~ c joins it
    assert tiers([], lambda *_: True) == {}
    assert tiers(["x", "y", "z"], lambda *_: True) == {"x": 1, "y": 2, "z": 3}


def test_rogan_gladen_boundaries() -> None:
    assert rogan_gladen(0.3, 0.8, 0.9) == pytest.approx(0.2 / 0.7)
    assert rogan_gladen(0.3, 0.5, 0.5) is None  # J = 0 exactly
    assert rogan_gladen(0.3, 0.4, 0.5) is None
    assert rogan_gladen(0.0, 0.9, 0.9) == 0.0 and rogan_gladen(1.0, 0.9, 0.9) == 1.0
    assert type(rogan_gladen(0.5, 0.9, 0.9)) is float


@pytest.mark.parametrize("counts", [(-1, 5, 5, 5), (5, -1, 5, 5), (5, 5, -1, 5), (5, 5, 5, -1), (0, 0, 5, 5), (5, 5, 0, 0)])
def test_rogan_gladen_ci_refuses_counts_without_positives_and_negatives(counts) -> None:
    tp, fn, tn, fp = counts
    with pytest.raises(ValueError, match=re.escape(f"Rogan-Gladen needs held-out counts with positives and negatives, "
                                                   f"got tp={tp} fn={fn} tn={tn} fp={fp}")):
        rogan_gladen_ci([1, 0, 1], tp, fn, tn, fp)


def test_rogan_gladen_ci_record() -> None:
    flags = [1, 0, 0, 0]
    out = rogan_gladen_ci(flags, tp=9, fn=1, tn=8, fp=2, n_boot=500, seed=0)
    assert out["raw"] == 0.25 and out["value"] == pytest.approx((0.25 + 0.8 - 1) / 0.7)
    assert out["sensitivity"] == {"value": 0.9, "tp": 9, "fn": 1}
    assert out["specificity"] == {"value": 0.8, "tn": 8, "fp": 2}
    assert out["method"] == "rogan-gladen; CI: crossed bootstrap x Beta(counts + 1) posteriors of Se, Sp"
    assert 0.0 <= out["ci_low"] <= out["value"] <= out["ci_high"] <= 1.0 and out["ci_high"] > out["ci_low"]
    assert rogan_gladen_ci(flags, 9, 1, 8, 2, n_boot=500, seed=0) == out
    assert rogan_gladen_ci(flags, 9, 1, 8, 2, n_boot=500, seed=1)["ci_high"] != out["ci_high"]
    chance = rogan_gladen_ci(flags, tp=1, fn=1, tn=1, fp=1)
    assert chance["value"] is None and chance["ci_low"] is None and chance["ci_high"] is None and chance["raw"] == 0.25


def test_rogan_gladen_ci_of_a_sure_judge_is_the_prompt_interval() -> None:
    # Se and Sp known to ~1e-6: the corrected replicates are the prompt replicates; with Se = Sp = 1 they are p_obs*
    flags = np.array([1.0] * 3 + [0.0] * 7)
    out = rogan_gladen_ci(flags, tp=10**7, fn=0, tn=10**7, fp=0, n_boot=4000, seed=0)
    ref = paired_bootstrap_diff(flags, np.zeros(10), n_boot=4000, seed=0)
    assert out["value"] == pytest.approx(0.3)
    assert out["ci_low"] == pytest.approx(ref["ci_low"], abs=0.011) and out["ci_high"] == pytest.approx(ref["ci_high"], abs=0.011)
    assert out["ci_low"] < 0.3 < out["ci_high"]


def test_rogan_gladen_ci_is_everything_only_when_identification_often_fails() -> None:
    flags = np.array([1.0] * 40 + [0.0] * 60)
    weak = rogan_gladen_ci(flags, tp=3, fn=2, tn=3, fp=2, n_boot=2000, seed=0)  # Se + Sp <= 1 in ~30% of draws
    assert weak["value"] is not None and (weak["ci_low"], weak["ci_high"]) == (0.0, 1.0)
    ok = rogan_gladen_ci(flags, tp=40, fn=10, tn=40, fp=10, n_boot=2000, seed=0)  # J* > 0 in every draw
    assert 0.0 < ok["ci_low"] < ok["ci_high"] < 1.0


def test_length_controlled_hand_built_line() -> None:
    # dl = (-1, 0, 1) * 5, t = tanh(dl / sd) = (-a, 0, a), dr = (0, 1, 2) = 1 + t / a: phi = 1 / a, theta = 1
    a = np.tanh(1 / np.sqrt(2 / 3))
    out = length_controlled([0.0, 1.0, 2.0], [5.0, 10.0, 15.0], [0.0, 0.0, 0.0], [10.0, 10.0, 10.0])
    assert out["phi"] == pytest.approx(1 / a) and out["theta"] == pytest.approx(1.0)
    assert out["adjusted"] == pytest.approx([1.0, 1.0, 1.0]) and out["n"] == 3
    assert type(out["phi"]) is float and type(out["theta"]) is float
    # a baseline with its own rewards: theta is the mean gain over it at equal length
    out2 = length_controlled([1.0, 3.0, 5.0], [5.0, 10.0, 15.0], [1.0, 2.0, 3.0], [10.0, 10.0, 10.0])
    assert out2["theta"] == pytest.approx(1.0) and out2["phi"] == pytest.approx(1 / a)
    assert out2["adjusted"] == pytest.approx([2.0, 3.0, 4.0])


def test_length_controlled_early_returns_and_flat_lengths() -> None:
    raw = {"adjusted": [0.0, 1.0, 2.0], "phi": 0.0, "theta": None, "n": 3}
    assert length_controlled([0, 1, 2], [5, 10, 15]) == raw
    assert all(type(v) is float for v in length_controlled([0, 1, 2], [5, 10, 15])["adjusted"])  # JSON 0.0, not 0
    assert length_controlled([0, 1, 2], [5, 10, 15], ref_reward=[0, 0, 0]) == raw
    assert length_controlled([0, 1, 2], [5, 10, 15], ref_length=[10, 10, 10]) == raw
    assert length_controlled([0, 1], [5, 10], [0, 0], [10, 10]) == {"adjusted": [0.0, 1.0], "phi": 0.0, "theta": None, "n": 2}
    flat = length_controlled([1, 2, 6], [7, 7, 7], [0, 0, 0], [7, 7, 7])  # no length difference: adjusted = raw
    assert flat == {"adjusted": [1.0, 2.0, 6.0], "phi": 0.0, "theta": pytest.approx(3.0), "n": 3}
    same_shift = length_controlled([1, 2, 6], [9, 9, 9], [0, 0, 0], [7, 7, 7])  # a constant difference: t is constant
    assert same_shift["phi"] == 0.0 and same_shift["theta"] == pytest.approx(3.0 - 0.0)
    with pytest.raises(ValueError, match="^length_controlled: reward, length and the baseline's must cover the same prompts$"):
        length_controlled([0, 1, 2], [5, 10, 15], [0, 0], [10, 10, 10])
    with pytest.raises(ValueError, match="must cover the same prompts"):
        length_controlled([0, 1, 2], [5, 10], [0, 0, 0], [10, 10])  # lengths of other prompts


def test_defaults_are_2000_resamples_from_seed_0() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=40), rng.normal(size=40)
    assert paired_bootstrap_diff(a, b) == paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    flags = (rng.random(40) < 0.3).astype(float)
    assert rogan_gladen_ci(flags, 9, 1, 8, 2) == rogan_gladen_ci(flags, 9, 1, 8, 2, n_boot=2000, seed=0)


@pytest.mark.parametrize("n_boot", [0, 1])
def test_rogan_gladen_ci_with_one_replicate_is_a_point(n_boot) -> None:
    out = rogan_gladen_ci([1, 0, 0, 1, 0], tp=9, fn=1, tn=8, fp=2, n_boot=n_boot, seed=0)
    assert out["ci_low"] == out["ci_high"]


def test_the_judges_sensitivity_uncertainty_widens_the_interval_per_replicate() -> None:
    # 2000 prompts (prompt sampling alone: width ~0.03); Sp known, Se ~ Beta(9, 3) drawn per replicate: p = 0.4 / Se*
    flags = np.array([1.0] * 800 + [0.0] * 1200)
    out = rogan_gladen_ci(flags, tp=8, fn=2, tn=10**7, fp=0, n_boot=2000, seed=0)
    assert out["value"] == pytest.approx(0.5)
    assert out["ci_high"] - out["ci_low"] > 0.2
    sp_unsure = rogan_gladen_ci(flags, tp=10**7, fn=0, tn=8, fp=2, n_boot=2000, seed=0)  # and Sp per replicate
    assert sp_unsure["ci_high"] - sp_unsure["ci_low"] > 0.2
    sure = rogan_gladen_ci(flags, tp=10**7, fn=0, tn=10**7, fp=0, n_boot=2000, seed=0)
    assert sure["ci_high"] - sure["ci_low"] < 0.06
    low = rogan_gladen_ci(flags, tp=1, fn=1, tn=10**7, fp=0, n_boot=200, seed=0)  # Se ~ Beta(2, 2)
    assert low["value"] == pytest.approx(0.8) and low["ci_high"] == 1.0


def test_se_and_sp_are_drawn_from_beta_of_the_counts_plus_one() -> None:
    """Se* ~ Beta(tp + 1, fn + 1): with Sp known, p* = p_obs* / Se*, so the upper end of the interval is p_obs over the
    posterior's 2.5% quantile (Beta(2, 1) for tp = 1, fn = 0); likewise Sp* ~ Beta(tn + 1, fp + 1) sets the lower end
    1 - (1 - p_obs) / q_2.5% when Se is known. The prompt sampling (1000 prompts) adds a little spread on top."""
    from scipy.stats import beta

    low_rate = np.array([1.0] * 100 + [0.0] * 900)  # p_obs = 0.1
    out = rogan_gladen_ci(low_rate, tp=1, fn=0, tn=10**7, fp=0, n_boot=4000, seed=0)
    assert out["ci_high"] == pytest.approx(0.1 / beta.ppf(0.025, 2, 1), rel=0.1)
    high_rate = 1.0 - low_rate  # p_obs = 0.9
    out = rogan_gladen_ci(high_rate, tp=10**7, fn=0, tn=1, fp=0, n_boot=4000, seed=0)
    assert out["ci_low"] == pytest.approx(1 - 0.1 / beta.ppf(0.025, 2, 1), rel=0.1)
    out = rogan_gladen_ci(low_rate, tp=2, fn=1, tn=10**7, fp=0, n_boot=4000, seed=0)  # Beta(3, 2)
    assert out["ci_high"] == pytest.approx(0.1 / beta.ppf(0.025, 3, 2), rel=0.1)
    out = rogan_gladen_ci(high_rate, tp=10**7, fn=0, tn=2, fp=1, n_boot=4000, seed=0)
    assert out["ci_low"] == pytest.approx(1 - 0.1 / beta.ppf(0.025, 3, 2), rel=0.1)
