"""The judges' fitted parts (evaluators/judges/models.py and evaluators/judges/calibration.py) on tiny hand-built inputs
whose answer is known: source weights, the member feature maps (TF-IDF vectorizer settings and their tiny-data fallback,
standardised surface / overlap / refsim features, the embedding concatenation, with `embed` faked), `JointHead` against
a logistic regression fitted here on the stacked rows its docstring describes (dense and sparse, weights, seed),
`LinearJudge.fit` against a reference that redoes the C search and the Platt / Bradley–Terry fits with sklearn, and
every calibration function (sigmoid clip, ECE bins, temperature bounds, Platt, reports) against hand computations.
Fast (no model, no data: `embed` and ROUGE are replaced by lookup tables); in `make mutation`'s test selection
(issue 29 item 8: the survivors of `make mutation` on these files). The learning behaviour is in tests/test_judges.py."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from evaluators import truthfulqa
from evaluators.judges import models
from evaluators.judges.calibration import (Calibrator, _nll, accuracy_ci, binary_report, ece, fit_calibrator, fit_platt,
                                           fit_temperature, pairwise_correct, pairwise_report, sigmoid)
from evaluators.judges.features import overlap, surface
from evaluators.judges.models import (Items, JointHead, LinearJudge, Member, _fit_pairwise, _flips, _logloss, _lr, _signed,
                                      refsim_features, source_weights)
from evaluators.metrics import bootstrap_ci
from harness.errors import BenchError

approx = pytest.approx


def _sig(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _ref_weights(sources):
    """1 / count of the row's source, rescaled to mean 1 (by hand, for the references below)."""
    w = np.array([1.0 / list(sources).count(s) for s in sources])
    return w * len(w) / w.sum()


def _ref_logloss(p, y, w):
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()


def _ref_ece(p, y, n_bins=10):
    p, y = np.asarray(p, float), np.asarray(y, float)
    tot = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (p >= lo) & ((p < hi) if b < n_bins - 1 else (p <= 1.0))
        if m.any():
            tot += m.mean() * abs(y[m].mean() - p[m].mean())
    return tot


def _exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _rng_flips(n, seed):
    return np.random.default_rng(seed).integers(0, 2, size=n).astype(bool)


# == calibration.py =================================================================================================


def test_sigmoid_values_dtype_and_its_clip_at_40() -> None:
    assert sigmoid(0) == 0.5
    got = sigmoid([0, math.log(3), -math.log(3)])
    assert got == approx([0.5, 0.75, 0.25], rel=1e-12) and got.dtype == np.float64
    # beyond ±40 the logit is clipped: -41 and -1000 read as -40, 41 as 40
    assert sigmoid(np.array([-41.0, -1000.0])) == approx([1 / (1 + math.exp(40))] * 2, rel=1e-9, abs=0)
    assert sigmoid(np.array([-39.0]))[0] == approx(1 / (1 + math.exp(39)), rel=1e-9, abs=0)
    assert sigmoid(41.0) == 1.0 and sigmoid(np.array([2.0]))[0] == approx(1 / (1 + math.exp(-2.0)), rel=1e-12)


def test_ece_bins_by_hand() -> None:
    assert math.isnan(ece([], []))
    assert ece([0.3], [1]) == approx(0.7)  # one item: |1 - 0.3|
    assert ece([0.3, 0.3], [1, 1]) == approx(0.7)  # all one label
    # bins 0 (0.05), 1 (0.15, 0.15), 9 (0.95 and 1.0: the last bin is closed at 1)
    got = ece([0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1])
    assert got == approx(0.05 / 5 + 0.35 * 2 / 5 + 0.025 * 2 / 5) and type(got) is float
    assert ece([1.0, 0.05], [0, 0]) == approx((1.0 + 0.05) / 2)  # p = 1 is counted (bin 9), not dropped
    # n_bins = 2: {0.2, 0.4} and {0.6, 1.0}; with the default 10 bins each is alone
    assert ece([0.2, 0.4, 0.6, 1.0], [0, 1, 1, 1], n_bins=2) == approx(0.2 * 2 / 4 + 0.2 * 2 / 4)
    assert ece([0.2, 0.4, 0.6, 1.0], [0, 1, 1, 1]) == approx((0.2 + 0.6 + 0.4 + 0.0) / 4)
    assert ece(np.array([0.0, 0.0]), np.array([1, 0])) == approx(0.5)  # p = 0 in bin 0


def test_nll_by_hand_with_its_clip() -> None:
    got = _nll(np.array([0.5, 0.25]), np.array([1.0, 0.0]), np.array([1.0, 3.0]))
    assert got == approx(-(math.log(0.5) + 3 * math.log(0.75)) / 4, rel=1e-12) and type(got) is float
    assert _nll(np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.ones(2)) == approx(-math.log(1e-12), rel=1e-4)
    assert _nll(np.array([0.0]), np.array([0.0]), np.ones(1)) == approx(0.0, abs=1e-9)


def test_calibrator_defaults_logit_and_call() -> None:
    c = Calibrator()
    assert (c.method, c.coef, c.intercept) == ("platt", [1.0], 0.0)
    assert Calibrator().coef is not c.coef
    two = Calibrator("platt", [2.0, -1.0], 0.5)
    assert two.logit([[1, 2], [3, 0]]) == approx([0.5, 6.5])
    one = Calibrator("temperature", [3.0], -1.0)
    out = one.logit([0, 1, 2])
    assert out.shape == (3,) and out == approx([-1.0, 2.0, 5.0])
    assert Calibrator(coef=[1.0], intercept=math.log(3))(np.array([0.0, -math.log(3)])) == approx([0.75, 0.5])


def _expected_rows(z, p):
    """Each z twice, weighted by P(y = 1) and 1 - P: the weighted NLL is smallest at the generating map."""
    z = np.asarray(z, dtype=float)
    zz = np.concatenate([z, z])
    yy = np.concatenate([np.ones(len(z)), np.zeros(len(z))]).astype(int)
    return zz, yy, np.concatenate([p, 1 - p])


def test_temperature_recovers_t_and_stops_at_its_bounds() -> None:
    z = np.linspace(-3, 3, 25)
    zz, yy, ww = _expected_rows(z, _sig(z / 0.5))
    cal = fit_temperature(zz, yy, ww)
    assert cal.method == "temperature" and cal.intercept == 0.0 and len(cal.coef) == 1 and type(cal.coef[0]) is float
    assert cal.coef[0] == approx(2.0, rel=1e-3)
    assert fit_temperature(zz.reshape(-1, 1), yy, ww).coef[0] == approx(cal.coef[0], rel=1e-9)  # z is raveled
    # no information (every z has both labels): T runs to its upper bound e^5
    assert fit_temperature([-1, 1, -1, 1], [0, 0, 1, 1]).coef[0] == approx(math.exp(-5), rel=1e-3)
    # a generating T of 0.0005 is below the lower bound e^-5: T stops there
    small = z / 2000
    zz, yy, ww = _expected_rows(small, _sig(small / 0.0005))
    assert fit_temperature(zz, yy, ww).coef[0] == approx(math.exp(5), rel=1e-3)


def test_temperature_weights_count_like_repeated_rows() -> None:
    z, y = np.array([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0]), np.array([0, 1, 1, 0, 1, 1])
    w = np.array([1.0, 5.0, 1.0, 4.0, 1.0, 1.0])
    rep = np.repeat(np.arange(6), w.astype(int))
    weighted, repeated, plain = fit_temperature(z, y, w), fit_temperature(z[rep], y[rep]), fit_temperature(z, y)
    assert weighted.coef[0] == approx(repeated.coef[0], rel=1e-4)
    assert abs(weighted.coef[0] - plain.coef[0]) > 0.05


def test_platt_matches_an_unregularised_logistic_regression() -> None:
    z = np.linspace(-4, 4, 17)
    zz, yy, ww = _expected_rows(z, _sig(-1.5 * z + 0.3))
    cal = fit_platt(zz, yy, ww)
    assert cal.method == "platt" and cal.coef == approx([-1.5], abs=1e-3) and cal.intercept == approx(0.3, abs=1e-3)
    assert type(cal.coef[0]) is float and type(cal.intercept) is float
    # two members: the stacked regression
    rng = np.random.default_rng(3)
    z2 = rng.normal(size=(30, 2))
    zz2, yy2, ww2 = _expected_rows(np.zeros(30), _sig(z2 @ [1.0, -2.0] + 0.5))
    zz2 = np.vstack([z2, z2])
    cal2 = fit_platt(zz2, yy2, ww2)
    assert cal2.coef == approx([1.0, -2.0], abs=2e-3) and cal2.intercept == approx(0.5, abs=2e-3)
    # no intercept: the regression through the origin, intercept 0 even though the data want one
    zz, yy, ww = _expected_rows(z, _sig(0.8 * z + 1.0))
    ref = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(zz[:, None], yy, sample_weight=ww)
    cal0 = fit_platt(zz, yy, ww, intercept=False)
    assert cal0.intercept == 0.0 and cal0.coef == approx([ref.coef_[0][0]], rel=1e-4)
    assert abs(cal0.coef[0] - 0.8) > 0.05


def test_platt_weights_count_like_repeated_rows_and_one_class_is_the_identity() -> None:
    z = np.array([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0])
    y = np.array([0, 1, 0, 0, 1, 1])
    w = np.array([1.0, 3.0, 1.0, 2.0, 1.0, 1.0])
    rep = np.repeat(np.arange(6), w.astype(int))
    weighted, repeated, plain = fit_platt(z, y, w), fit_platt(z[rep], y[rep]), fit_platt(z, y)
    assert weighted.coef == approx(repeated.coef, rel=1e-3) and weighted.intercept == approx(repeated.intercept, rel=1e-3)
    assert abs(weighted.coef[0] - plain.coef[0]) > 0.05
    assert fit_platt(np.zeros((3, 2)), [1, 1, 1]) == Calibrator("platt", [1.0, 1.0], 0.0)
    assert fit_platt(np.array([0.5, -1.0]), [0, 0]) == Calibrator("platt", [1.0], 0.0)


def test_platt_converges_on_an_ill_conditioned_stack() -> None:
    """Six near-copies of one score on scales 1 to 1e4: lbfgs needs a few hundred steps, and fit_platt's iteration
    budget is enough (no ConvergenceWarning; the fit of a regression allowed 20000 steps)."""
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(3)
    base = rng.normal(size=(30, 1))
    z = (base + 1e-3 * rng.normal(size=(30, 6))) * np.logspace(0, 4, 6)
    y = (rng.random(30) < _sig(3 * base[:, 0])).astype(int)
    ref = LogisticRegression(C=1e6, max_iter=20000).fit(z, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        cal = fit_platt(z, y)
    assert cal.intercept == approx(ref.intercept_[0], rel=1e-6)
    assert cal(z) == approx(_sig(z @ ref.coef_[0] + ref.intercept_[0]), rel=1e-6)


def test_fit_calibrator_dispatches_and_refuses_unknown_methods() -> None:
    with pytest.raises(BenchError, match=_exactly("judge calibration must be one of platt, temperature, got 'isotonic'")):
        fit_calibrator("isotonic", np.zeros(4), [0, 1, 0, 1])
    z = np.linspace(-3, 3, 25)
    zz, yy, ww = _expected_rows(z, _sig(z / 0.5))
    t = fit_calibrator("temperature", zz, yy, ww)
    assert t.method == "temperature" and t.coef == approx([2.0], rel=1e-3) and t.intercept == 0.0
    assert fit_calibrator("temperature", zz.reshape(-1, 1), yy, ww).coef == approx(t.coef, rel=1e-9)
    zz, yy, ww = _expected_rows(z, _sig(0.7 * z - 0.4))
    p = fit_calibrator("platt", zz, yy, ww)
    assert p.method == "platt" and p.coef == approx([0.7], abs=1e-3) and p.intercept == approx(-0.4, abs=1e-3)
    # without weights every row counts once
    y1 = np.array([0, 1, 0, 1, 1, 1])
    z1 = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    ref = LogisticRegression(C=1e6, max_iter=2000).fit(z1[:, None], y1)
    p1 = fit_calibrator("platt", z1, y1)
    assert p1.coef == approx([ref.coef_[0][0]], rel=1e-4) and p1.intercept == approx(ref.intercept_[0], rel=1e-4, abs=1e-6)
    # an ensemble calibrated by temperature: one temperature T over the members' mean, no intercept, so members that
    # all read m give the logit m / T: the coefficients sum to 1 / T. Members z and 3z: mean 2z, generating T 0.5 -> 1.
    zz, yy, ww = _expected_rows(z, _sig(z / 0.5))
    ens = fit_calibrator("temperature", np.stack([zz, 3 * zz], 1), yy, ww)
    assert ens.method == "temperature" and ens.intercept == 0.0 and sum(ens.coef) == approx(1.0, rel=1e-3)
    # one weight per member (1/k of 1/T each), so the calibrator reads the (n, k) member scores it was fitted on
    assert ens.coef == approx([0.5, 0.5], rel=1e-3)
    assert ens(np.stack([zz, 3 * zz], 1)) == approx(_sig(2 * zz), rel=1e-3)


def test_numbers_given_as_text_are_read_as_numbers() -> None:
    """Scores and labels read from a text file ("0.25", "1") are parsed as floats, never compared as strings."""
    assert sigmoid(["0", "1.5"]) == approx(_sig([0.0, 1.5]))
    assert ece(["0.05", "0.15", "0.15"], ["0", "1", "0"]) == approx(0.05 / 3 + 0.35 * 2 / 3)
    assert Calibrator(coef=[2.0], intercept=1.0).logit(["1", "2.5"]) == approx([3.0, 6.0])
    z = np.linspace(-3, 3, 25)
    zz, yy, ww = _expected_rows(z, _sig(z / 0.5))
    txt = fit_temperature([str(v) for v in zz], [str(v) for v in yy], [str(v) for v in ww])
    assert txt.coef == approx(fit_temperature(zz, yy, ww).coef, rel=1e-9)
    ens = fit_calibrator("temperature", [[str(v), str(3 * v)] for v in zz], yy, ww)  # two members: mean 2z, T 1
    assert sum(ens.coef) == approx(1.0, rel=1e-3)
    r = binary_report(["0.9", "0.2", "0.6"], ["1", "1", "0"], n_boot=10)
    assert (r["positives"], r["sensitivity"]["tp"], r["specificity"]["fp"]) == (2, 1, 1)
    assert pairwise_correct(["10", "2"], ["9", "2"]).tolist() == [1.0, 0.5]  # 10 > 9 though "10" < "9" as text


def test_accuracy_ci_is_the_item_bootstrap() -> None:
    spread = np.linspace(0, 1, 23).tolist()  # many distinct values: the seed and the draw count move the CI
    assert accuracy_ci(spread) == bootstrap_ci(spread, 1000, 0)
    assert bootstrap_ci(spread, 1000, 0) not in (bootstrap_ci(spread, 1000, 1), bootstrap_ci(spread, 1001, 0))
    x = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0] * 3
    assert accuracy_ci(x) == bootstrap_ci(x, 1000, 0)
    assert accuracy_ci(x, 200, 3) == bootstrap_ci(x, 200, 3)
    assert accuracy_ci(x, 200, 3) != accuracy_ci(x, 200, 4) and accuracy_ci(x, 200, 3) != accuracy_ci(x, 300, 3)
    assert accuracy_ci(x)["value"] == approx(4.5 / 7)
    assert accuracy_ci([1.0, 0.0, 0.5])["value"] == approx(0.5)


def test_binary_report_by_hand() -> None:
    p, y = [0.9, 0.5, 0.2, 0.6, 0.1, 0.7], [1, 1, 1, 0, 0, 0]
    r = binary_report(p, y, n_boot=100, seed=2)
    assert set(r) == {"n", "positives", "accuracy", "sensitivity", "specificity", "ece"}
    assert (r["n"], r["positives"]) == (6, 3) and type(r["n"]) is int and type(r["positives"]) is int
    # 0.5 is not above the 0.5 threshold: predictions 1 0 0 1 0 1
    assert r["sensitivity"] == {"value": approx(1 / 3), "tp": 1, "fn": 2}
    assert r["specificity"] == {"value": approx(1 / 3), "tn": 1, "fp": 2}
    assert r["accuracy"] == bootstrap_ci([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 100, 2)
    assert r["ece"] == approx((0.1 + 0.5 + 0.8 + 0.6 + 0.1 + 0.7) / 6)
    low = binary_report(p, y, threshold=0.4, n_boot=100, seed=2)
    assert low["sensitivity"] == {"value": approx(2 / 3), "tp": 2, "fn": 1} and low["specificity"]["fp"] == 2
    assert low["accuracy"] == bootstrap_ci([1.0, 1.0, 0.0, 0.0, 1.0, 0.0], 100, 2)
    assert binary_report(p, y)["accuracy"] == bootstrap_ci([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 1000, 0)
    # 58 items: the default draw count (1000) and seed (0) are visible in the CI
    p40, y40 = np.linspace(0.01, 0.99, 58), np.array([1, 0, 0, 1, 1] * 12)[:58]
    correct = ((p40 > 0.5).astype(int) == y40).astype(float)
    ref = bootstrap_ci(correct, 1000, 0)
    assert ref not in (bootstrap_ci(correct, 1001, 0), bootstrap_ci(correct, 1000, 1))
    assert binary_report(p40, y40)["accuracy"] == ref
    assert binary_report(p40, y40, n_boot=1000, seed=5)["accuracy"] == bootstrap_ci(correct, 1000, 5) != ref


def test_binary_report_one_class_gives_nan_rates() -> None:
    neg = binary_report([0.7, 0.2], [0, 0], n_boot=10)
    assert math.isnan(neg["sensitivity"]["value"]) and (neg["sensitivity"]["tp"], neg["sensitivity"]["fn"]) == (0, 0)
    assert neg["specificity"] == {"value": 0.5, "tn": 1, "fp": 1} and neg["positives"] == 0
    pos = binary_report([0.7, 0.2], [1, 1], n_boot=10)
    assert math.isnan(pos["specificity"]["value"]) and (pos["specificity"]["tn"], pos["specificity"]["fp"]) == (0, 0)
    assert pos["sensitivity"] == {"value": 0.5, "tp": 1, "fn": 1} and pos["positives"] == 2


def test_pairwise_correct_and_report() -> None:
    got = pairwise_correct([3, 1, 2], [1, 1, 5])
    assert got.tolist() == [1.0, 0.5, 0.0]
    assert pairwise_correct([3, 1, 2], [1, 1, 5], higher_is_better=False).tolist() == [0.0, 0.5, 1.0]
    r = pairwise_report([3, 1, 2, 4], [1, 1, 5, 0], n_boot=50, seed=1)
    assert r == {"n": 4, "accuracy": bootstrap_ci([1.0, 0.5, 0.0, 1.0], 50, 1)}
    assert pairwise_report([3, 1, 2, 4], [1, 1, 5, 0])["accuracy"] == bootstrap_ci([1.0, 0.5, 0.0, 1.0], 1000, 0)
    a, b = np.arange(38) % 7, np.arange(38) % 5
    correct = np.where(a == b, 0.5, (a > b).astype(float))
    ref = bootstrap_ci(correct, 1000, 0)
    assert ref not in (bootstrap_ci(correct, 1001, 0), bootstrap_ci(correct, 1000, 1))
    assert pairwise_report(a, b) == {"n": 38, "accuracy": ref}
    lower = pairwise_report([3, 1, 2, 4], [1, 1, 5, 0], higher_is_better=False, n_boot=50, seed=1)
    assert lower["accuracy"] == bootstrap_ci([0.0, 0.5, 1.0, 0.0], 50, 1)


# == models.py: small helpers =======================================================================================


def test_source_weights_make_every_source_weigh_the_same() -> None:
    w = source_weights(["a", "a", "b", "a"])  # 1/3, 1/3, 1, 1/3: sum 2, rescaled by 4/2
    assert w == approx([2 / 3, 2 / 3, 2.0, 2 / 3]) and w.dtype == np.float64
    assert source_weights(["x"]) == approx([1.0])
    empty = source_weights([])
    assert empty.shape == (0,)


def test_lr_logloss_items_flips_and_signed() -> None:
    lr = _lr(0.3)
    assert isinstance(lr, LogisticRegression)
    assert (lr.C, lr.fit_intercept, lr.max_iter) == (0.3, True, 3000)
    assert _lr(2.0, intercept=False).fit_intercept is False
    got = _logloss(np.array([0.5, 0.25]), np.array([1.0, 0.0]), np.array([1.0, 3.0]))
    assert got == approx(-(math.log(0.5) + 3 * math.log(0.75)) / 4, rel=1e-12) and type(got) is float
    assert _logloss(np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.ones(2)) == approx(-math.log(1e-9), rel=1e-6)
    assert len(Items(["p", "q", "r"], ["a", "b", "c"])) == 3
    it = Items(["p"], ["a"])
    assert (it.b, it.labels, it.sources) == (None, None, [])
    f = _flips(12, 7)
    assert f.dtype == bool and f.tolist() == _rng_flips(12, 7).tolist() and f.tolist() != _flips(12, 8).tolist()
    assert _flips(0, 1).shape == (0,)
    d = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.0]])
    flip = np.array([True, False, True])
    want = [[-1.0, -2.0], [3.0, -4.0], [-0.5, 0.0]]
    assert _signed(d, flip).tolist() == want
    s = _signed(sp.csr_matrix(d), flip)
    assert sp.issparse(s) and s.toarray().tolist() == want


def test_fit_pairwise_calibrators_have_no_intercept() -> None:
    z = np.linspace(-3, 3, 13)
    zz, yy, ww = _expected_rows(z, _sig(0.6 * z + 0.8))
    t = _fit_pairwise("temperature", zz, yy, ww)
    assert t.method == "temperature" and t.intercept == 0.0 and t.coef == approx(fit_temperature(zz, yy, ww).coef, rel=1e-9)
    ref = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(zz[:, None], yy, sample_weight=ww)
    p = _fit_pairwise("platt", zz, yy, ww)
    assert p.method == "platt" and p.intercept == 0.0 and p.coef == approx([ref.coef_[0][0]], rel=1e-4)
    unweighted = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(zz[:, None], yy)
    assert abs(unweighted.coef_[0][0] - ref.coef_[0][0]) > 0.05  # the weights are used


# == models.py: JointHead ============================================================================================

X6 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
Y6 = np.array([1, 0, 1, 1, 0, 0])
W6 = np.array([1.0, 2.0, 1.0, 1.0, 0.5, 1.0])
D5 = np.array([[1.0, -1.0], [0.5, 0.0], [0.0, -1.0], [2.0, 1.0], [1.0, 1.0]])
WP5 = np.array([1.0, 1.0, 2.0, 0.5, 1.0])


def _joint_reference(C, x, y, w, diff, wp, seed):
    """The docstring's regression: rows [x, 1] with y, rows [±diff, 0] with 1 / 0, no sklearn intercept."""
    f = _rng_flips(len(diff), seed)
    d = diff * np.where(f, -1.0, 1.0)[:, None]
    rows = np.vstack([np.hstack([x, np.ones((len(x), 1))]), np.hstack([d, np.zeros((len(d), 1))])])
    lab = np.concatenate([y, (~f).astype(int)])
    c = LogisticRegression(C=C, fit_intercept=False, max_iter=3000).fit(rows, lab, sample_weight=np.concatenate([w, wp])).coef_[0]
    return c[:-1], c[-1]


def test_joint_head_decision_function_adds_the_intercept_and_proba_is_one_minus_p_p() -> None:
    h = JointHead(np.array([2.0, -1.0]), 0.5)
    assert h.coef_.shape == (1, 2) and h.coef_.tolist() == [[2.0, -1.0]] and h.intercept_.tolist() == [0.5]
    x = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert h.decision_function(x).tolist() == [1.5, -2.5]
    s = h.decision_function(sp.csr_matrix(x))
    assert isinstance(s, np.ndarray) and s.shape == (2,) and s.tolist() == [1.5, -2.5]
    pr = h.predict_proba(x)
    p = [1 / (1 + math.exp(-1.5)), 1 / (1 + math.exp(2.5))]
    assert pr.shape == (2, 2) and pr[:, 1] == approx(p, rel=1e-12) and pr[:, 0] == approx([1 - q for q in p], rel=1e-12)
    assert JointHead(np.array([[0.0], [1.0]]), -2.0).coef_.shape == (1, 2)


def test_joint_head_fit_is_the_stacked_regression_dense_and_sparse() -> None:
    for C, seed in ((1.0, 0), (0.3, 5)):
        coef, b = _joint_reference(C, X6, Y6, W6, D5, WP5, seed)
        h = JointHead.fit(C, X6, Y6, W6, D5, WP5, seed)
        assert h.coef_.shape == (1, 2) and h.intercept_.shape == (1,)
        assert h.coef_[0] == approx(coef, rel=1e-6, abs=1e-9) and h.intercept_[0] == approx(b, rel=1e-6, abs=1e-9)
        hs = JointHead.fit(C, sp.csr_matrix(X6), Y6, W6, sp.csr_matrix(D5), WP5, seed)
        assert hs.coef_.shape == (1, 2) and hs.coef_[0] == approx(coef, rel=1e-6, abs=1e-9)
        assert hs.intercept_[0] == approx(b, rel=1e-6, abs=1e-9)
        assert h.decision_function(X6) == approx(X6 @ coef + b, rel=1e-6, abs=1e-9)
    # the intercept column is the last one: it differs from both weights here
    assert abs(b - coef[0]) > 0.1 and abs(b - coef[1]) > 0.1


def test_joint_head_weights_matter() -> None:
    h = JointHead.fit(1.0, X6, Y6, W6, D5, WP5, 0)
    flat = JointHead.fit(1.0, X6, Y6, np.ones(6), D5, np.ones(5), 0)
    coef, b = _joint_reference(1.0, X6, Y6, np.ones(6), D5, np.ones(5), 0)
    assert flat.coef_[0] == approx(coef, rel=1e-6) and flat.intercept_[0] == approx(b, rel=1e-6)
    assert np.abs(h.coef_[0] - flat.coef_[0]).max() > 1e-2
    heavy_pairs = JointHead.fit(1.0, X6, Y6, W6, D5, 5 * WP5, 0)
    coef, b = _joint_reference(1.0, X6, Y6, W6, D5, 5 * WP5, 0)
    assert heavy_pairs.coef_[0] == approx(coef, rel=1e-6) and np.abs(heavy_pairs.coef_[0] - h.coef_[0]).max() > 1e-2


def test_joint_head_seed_orients_the_pairs() -> None:
    """A pair's orientation does not change the fit (σ(w·d) for label 1 is 1 − σ(−w·d) for label 0), so any seed
    gives the same head; but the seed fixes the orientation: with every labelled row 0, seed 45 flips all 10 pairs
    (labels all 0: one class, sklearn refuses), seed 4303 flips none (with rows all 1: again one class)."""
    assert _rng_flips(10, 45).all() and not _rng_flips(10, 4303).any()
    a = JointHead.fit(1.0, X6, Y6, W6, D5, WP5, 0)
    b = JointHead.fit(1.0, X6, Y6, W6, D5, WP5, 1)
    assert a.coef_[0] == approx(b.coef_[0], rel=1e-6) and a.intercept_[0] == approx(b.intercept_[0], rel=1e-6)
    x, diff = np.array([[0.0], [1.0]]), np.array([[1.0]] * 10)
    with pytest.raises(ValueError, match="class"):
        JointHead.fit(1.0, x, np.array([0, 0]), np.ones(2), diff, np.ones(10), 45)
    with pytest.raises(ValueError, match="class"):
        JointHead.fit(1.0, x, np.array([1, 1]), np.ones(2), diff, np.ones(10), 4303)
    ok = JointHead.fit(1.0, x, np.array([0, 0]), np.ones(2), diff, np.ones(10), 4303)  # pair labels all 1
    assert ok.coef_[0][0] > 0


# == models.py: members =============================================================================================


def test_unknown_member_is_refused() -> None:
    msg = "unknown judge member 'bert': choose from tfidf, char, minilm, smollm2, surface, overlap, refsim (joined with '+')"
    with pytest.raises(BenchError, match=_exactly(msg)):
        Member("bert").fit(["p"], ["r"])
    m = Member("surface")
    assert (m.mode, m.max_length, m.state, m.refs) == ("pointwise", 128, {}, None)
    with pytest.raises(AssertionError, match="^tfidf$"):
        Member("tfidf")._raw(["p"], ["r"])


TFIDF = dict(ngram_range=(1, 2), min_df=2, max_features=50000, sublinear_tf=True, strip_accents="unicode")


def test_tfidf_member_settings_vocabulary_and_transform() -> None:
    texts = ["good dog café", "good dog cafe", "bad cat zebra", "bad cat"]
    m = Member("tfidf")
    assert m.fit(["ignored"] * 4, texts) is m
    vec = m.state["vectorizer"]
    params = vec.get_params()
    assert {k: params[k] for k in TFIDF} == TFIDF
    # accents stripped: café = cafe (df 2); zebra (df 1) is below min_df; the repeated bigrams are kept
    assert set(vec.vocabulary_) == {"good", "dog", "cafe", "bad", "cat", "good dog", "dog cafe", "bad cat"}
    new = ["good good dog", "cat café zebra"]
    out = m.transform(["p", "q"], new)
    ref = TfidfVectorizer(**TFIDF).fit(texts)
    assert sp.issparse(out) and out.shape == (2, 8)
    assert out.toarray() == approx(ref.transform(new).toarray(), rel=1e-12)


def test_tfidf_member_falls_back_on_tiny_data() -> None:
    m = Member("tfidf").fit(["p", "q"], ["alpha beta", "gamma"])  # every term once: nothing survives min_df 2
    vec = m.state["vectorizer"]
    p = vec.get_params()
    assert (p["ngram_range"], p["min_df"], p["sublinear_tf"], p["max_features"], p["strip_accents"]) == ((1, 1), 1, True, None, None)
    assert set(vec.vocabulary_) == {"alpha", "beta", "gamma"}
    out = m.transform(["x"], ["alpha alpha beta"]).toarray()[0]
    # sublinear tf: 1 + ln 2 for alpha, 1 for beta, equal idf, L2-normalised
    a, b = 1 + math.log(2), 1.0
    assert out[vec.vocabulary_["alpha"]] == approx(a / math.hypot(a, b)) and out[vec.vocabulary_["beta"]] == approx(b / math.hypot(a, b))


def test_char_member_settings_and_fallback() -> None:
    m = Member("char")
    assert m.fit(["p"] * 4, ["abc", "abc", "abc", "xyz"]) is m
    vec = m.state["vectorizer"]
    p = vec.get_params()
    assert (p["analyzer"], p["ngram_range"], p["min_df"], p["max_features"], p["sublinear_tf"]) == ("char_wb", (2, 5), 3, 100000, True)
    assert set(vec.vocabulary_) == {" a", "ab", "bc", "c ", " ab", "abc", "bc ", " abc", "abc ", " abc "}
    ref = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, max_features=100000, sublinear_tf=True)
    ref.fit(["abc", "abc", "abc", "xyz"])
    out = m.transform(["p"], ["abcd", "xab"])
    assert sp.issparse(out) and out.toarray() == approx(ref.transform(["abcd", "xab"]).toarray(), rel=1e-12)
    tiny = Member("char").fit(["p", "q"], ["ab", "cd"]).state["vectorizer"]
    tp = tiny.get_params()
    assert (tp["analyzer"], tp["ngram_range"], tp["min_df"], tp["sublinear_tf"]) == ("char_wb", (2, 3), 1, True)
    assert set(tiny.vocabulary_) == {" a", "ab", "b ", " ab", "ab ", " c", "cd", "d ", " cd", "cd "}


def test_surface_and_overlap_members_are_standardised_on_their_training_rows() -> None:
    resp = ["a", "ab cd", "one two three four"]
    m = Member("surface")
    assert m.fit(["x"] * 3, resp) is m
    raw = surface(resp)
    assert m.state["mean"] == approx(raw.mean(0), rel=1e-6)
    assert m.state["std"] == approx(raw.std(0) + 1e-6, rel=1e-6)
    assert m.state["std"][2] == approx(1e-6, rel=1e-9)  # one line each: the std is the 1e-6 guard alone
    # by hand: log characters of the training rows are ln 2, ln 6, ln 19
    c = np.log([2.0, 6.0, 19.0])
    assert m.state["mean"][0] == approx(c.mean(), rel=1e-6) and m.state["std"][0] == approx(c.std() + 1e-6, rel=1e-6)
    new = ["hello there", "x\ny"]
    assert m.transform(["p", "q"], new) == approx((surface(new) - m.state["mean"]) / m.state["std"], rel=1e-6)
    assert m._raw(["whatever", "else"], new) == approx(surface(new))
    prompts = ["Human: how do I bake bread", "what is 2 + 2"]
    answers = ["I can't help with that.", "It is 4, do you want more?"]
    o = Member("overlap").fit(prompts, answers)
    raw = overlap(prompts, answers)
    assert o.state["mean"] == approx(raw.mean(0), rel=1e-6) and o.state["std"] == approx(raw.std(0) + 1e-6, rel=1e-6)
    assert o._raw(prompts, answers) == approx(raw)
    q = ["Human: bake bread now"]
    assert o.transform(q, ["bread 123?"]) == approx((overlap(q, ["bread 123?"]) - o.state["mean"]) / o.state["std"], rel=1e-6)


class _FakeEmbed:
    def __init__(self, table=None):
        self.table, self.calls = table, []

    def __call__(self, texts, backbone="minilm", max_length=128, *a, **k):
        self.calls.append((list(texts), backbone, max_length))
        if self.table is not None:
            return np.array([self.table[t] for t in texts], dtype=float)
        return np.array([[len(t), t.count("a")] for t in texts], dtype=float)


def test_embedding_members_concatenate_response_prompt_and_product(monkeypatch) -> None:
    fake = _FakeEmbed()
    monkeypatch.setattr(models, "embed", fake)
    prompts = ["Human: hi\n\nAssistant: yo\n\nHuman: banana", "plain prompt"]
    resp = ["ab", "xyz a"]
    m = Member("minilm", max_length=7)
    assert m.fit(prompts, resp) is m and m.state == {} and fake.calls == []
    out = m.transform(prompts, resp)
    # r = [[2, 1], [5, 1]]; prompts' last user turns "banana", "plain prompt": p = [[6, 3], [12, 1]]
    assert out.tolist() == [[2, 1, 6, 3, 12, 3], [5, 1, 12, 1, 60, 1]]
    assert fake.calls == [(resp, "minilm", 7), (["banana", "plain prompt"], "minilm", 7)]
    fake.calls.clear()
    pw = Member("smollm2", mode="pairwise")
    assert pw.transform(prompts, resp).tolist() == [[2, 1, 12, 3], [5, 1, 60, 1]]
    assert fake.calls == [(resp, "smollm2", 128), (["banana", "plain prompt"], "smollm2", 128)]


# -- refsim --------------------------------------------------------------------------------------------------------

E = {"yes": [1.0, 0.0], "Yes.": [0.8, 0.6], "I have no comment.": [0.0, 1.0], "No.": [-0.6, 0.8],
     "maybe": [0.6, 0.8], "Maybe.": [0.6, 0.8], "maybe.": [0.6, 0.8], "BOX": [1.0, 0.0], "BOX.": [0.8, 0.6]}
REFS = {"q1": (["Yes.", "I have no comment."], ["No."]), "q2": (["Yes."], ["No."]), "q3": (["Maybe."], ["maybe", "No."]),
        "q5": (["Yes."], []), "q6": (["Yes.", "yes"], ["No."]), "q7": (["I have no comment."], ["Maybe.", "No."]),
        "q8": (["BOX.", "I have no comment."], ["BOX"])}
QS = ["q1", "q2", "q3", "q5", "q6", "q7", "q8"]
ANS = ["yes", "  ", "maybe\n\nQ: junk", "yes", "yes", "maybe.", "BOX"]
EMPTY = [0.0, -1.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
L3, L5, L6 = math.log1p(3), math.log1p(5), math.log1p(6)
# rows: max/mean cos over T and F, max_T - max_F, rouge max T / F / diff, cos with mean(T) - mean(F), log length
ROWS = [
    [0.8, -0.6, 0.4, -0.6, 1.4, 3 / 7, 1 / 2, 3 / 7 - 1 / 2, 1.0, L3],
    EMPTY,
    [1.0, 1.0, 1.0, 0.64, 0.0, 5 / 11, 5 / 8, 5 / 11 - 5 / 8, 0.36, L5],
    [0.8, -1.0, 0.8, -1.0, 1.8, 3 / 7, 0.0, 3 / 7, 0.8, L3],
    [1.0, -0.6, 0.9, -0.6, 1.6, 0.5, 0.5, 0.0, 1.5, L3],
    [0.8, 1.0, 0.8, 0.64, -0.2, 0.25, 2 / 3, 0.25 - 2 / 3, 0.16, L6],
    [0.8, 1.0, 0.4, 1.0, -0.2, 3 / 7, 0.5, 3 / 7 - 0.5, -0.6, L3],
]
ROWS_LOO = [  # an answer's own text is no reference of it (case and a final "." aside); a true set left empty keeps its last
    [0.0, -0.6, 0.0, -0.6, 0.6, 1 / 7, 1 / 2, 1 / 7 - 1 / 2, 0.6, L3],
    EMPTY,
    [1.0, 0.28, 1.0, 0.28, 0.72, 5 / 11, 5 / 8, 5 / 11 - 5 / 8, 0.72, L5],
    [0.8, -1.0, 0.8, -1.0, 1.8, 3 / 7, 0.0, 3 / 7, 0.8, L3],
    [1.0, -0.6, 1.0, -0.6, 1.6, 0.5, 0.5, 0.0, 1.6, L3],
    [0.8, 0.28, 0.8, 0.28, 0.52, 0.25, 2 / 3, 0.25 - 2 / 3, 0.52, L6],
    [0.0, -1.0, 0.0, -1.0, 1.0, 1 / 7, 0.0, 1 / 7, 0.0, L3],
]


def _fake_rouge(ref: str, pred: str) -> float:
    return len(pred) / (len(ref) + len(pred))  # asymmetric on purpose


@pytest.fixture
def refsim_fakes(monkeypatch):
    fake = _FakeEmbed(E)
    monkeypatch.setattr(models, "embed", fake)
    monkeypatch.setattr(truthfulqa, "_rouge_l", _fake_rouge)
    return fake


def test_refsim_features_by_hand(refsim_fakes) -> None:
    out = refsim_features(QS, ANS, REFS.get, max_length=9)
    assert out.shape == (7, 10) and out.dtype == np.float64
    assert out == approx(np.array(ROWS), abs=1e-9)
    assert refsim_fakes.calls == [(sorted(E), "minilm", 9)]  # every text once, sorted; the empty answer is not embedded
    assert refsim_features(QS, ANS, REFS.get, loo=True) == approx(np.array(ROWS_LOO), abs=1e-9)
    assert refsim_fakes.calls[-1][2] == 128


def test_refsim_features_edge_cases(refsim_fakes) -> None:
    with pytest.raises(BenchError, match=_exactly("refsim features need the questions' reference answers")):
        refsim_features(["q1"], ["yes"], None)
    # nothing to embed: no call at all
    assert refsim_features(["q"], [""], lambda q: ([], [])).tolist() == [EMPTY]
    assert refsim_fakes.calls == []


def test_refsim_member_fits_with_loo_and_transforms_as_asked(refsim_fakes) -> None:
    m = Member("refsim", max_length=11, refs=REFS.get)
    assert m.fit(QS, ANS) is m
    loo = np.array(ROWS_LOO)
    assert m.state["mean"] == approx(loo.mean(0), abs=1e-9) and m.state["std"] == approx(loo.std(0) + 1e-6, abs=1e-9)
    assert refsim_fakes.calls[-1][1:] == ("minilm", 11)
    assert m.transform(QS, ANS) == approx((np.array(ROWS) - m.state["mean"]) / m.state["std"], abs=1e-6)
    assert m.transform(QS, ANS, loo=True) == approx((loo - m.state["mean"]) / m.state["std"], abs=1e-6)
    assert m._raw(QS, ANS) == approx(np.array(ROWS), abs=1e-9)  # raw features: no loo unless asked


# == models.py: LinearJudge =========================================================================================


class _Table:
    """A member whose features are looked up per response text; it records what it was fitted on and each loo flag."""

    def __init__(self, kind, table):
        self.kind, self.table, self.fit_calls, self.calls = kind, table, [], []

    def fit(self, prompts, responses):
        self.fit_calls.append((list(prompts), list(responses)))
        return self

    def transform(self, prompts, responses, loo=False):
        assert len(prompts) == len(responses)
        self.calls.append((tuple(responses), loo))
        return np.array([self.table[r] for r in responses], dtype=float)


def _pointwise_data():
    rng = np.random.default_rng(5)
    tr, ca = [f"t{i}" for i in range(16)], [f"c{i}" for i in range(10)]
    t1 = {t: rng.normal(size=2) for t in tr + ca}
    t2 = {t: rng.normal(size=3) for t in tr + ca}
    logit = {t: 1.5 * t1[t][0] - t2[t][1] for t in tr + ca}
    lab = {t: int(rng.random() < _sig(logit[t])) for t in tr + ca}
    train = Items([f"p{t}" for t in tr], tr, labels=[lab[t] for t in tr], sources=["A"] * 12 + ["B"] * 4)
    calib = Items([f"p{t}" for t in ca], ca, labels=[lab[t] for t in ca], sources=["A"] * 6 + ["B"] * 4)
    return t1, t2, train, calib


def _ref_pointwise_head(table, train, calib, pairs=None, seed=0):
    xt = np.array([table[t] for t in train.a])
    xc = np.array([table[t] for t in calib.a])
    yt, yc = np.array(train.labels), np.array(calib.labels)
    w_ca = _ref_weights(calib.sources)
    if pairs is None:
        w_tr = _ref_weights(train.sources)
    else:
        w_all = _ref_weights(list(train.sources) + list(pairs.sources))
        w_tr, w_pr = w_all[: len(train)], w_all[len(train):]
        diff = np.array([table[t] for t in pairs.b]) - np.array([table[t] for t in pairs.a])
    fits = []
    for C in (0.03, 0.3, 1.0, 3.0):
        if pairs is None:
            lr = LogisticRegression(C=C, max_iter=3000).fit(xt, yt, sample_weight=w_tr)
            coef, b = lr.coef_[0], lr.intercept_[0]
        else:
            coef, b = _joint_reference(C, xt, yt, w_tr, diff, w_pr, seed)
        fits.append((_ref_logloss(_sig(xc @ coef + b), yc, w_ca), C, coef, b))
    losses = [f[0] for f in fits]
    assert len(set(np.round(losses, 9))) == 4  # the C search has one answer
    return min(fits, key=lambda f: f[0])


def _check_pointwise(judge, rec, tables, train, calib, pairs=None, seed=0):
    refs = [_ref_pointwise_head(t, train, calib, pairs, seed) for t in tables]
    assert judge.C == [r[1] for r in refs]
    for h, r in zip(judge.heads, refs):
        assert np.ravel(h.coef_) == approx(r[2], rel=1e-6, abs=1e-9)
        assert np.ravel(h.intercept_) == approx([r[3]], rel=1e-6, abs=1e-9)
    z = np.stack([np.array([t[c] for c in calib.a]) @ r[2] + r[3] for t, r in zip(tables, refs)], 1)
    y, w_ca = np.array(calib.labels), _ref_weights(calib.sources)
    cal = LogisticRegression(C=1e6, max_iter=2000).fit(z, y, sample_weight=w_ca)
    after = _sig(z @ cal.coef_[0] + cal.intercept_[0])
    assert judge.calibrator.coef == approx(cal.coef_[0], rel=1e-4, abs=1e-6)
    assert judge.calibrator.intercept == approx(cal.intercept_[0], rel=1e-4, abs=1e-6)
    kinds = [m.kind for m in judge.members]
    assert set(rec) == {"method", "ece_before", "ece_after", "n", "calib_accuracy_weighted", "split", "member_C", "member_weights"}
    assert rec["method"] == "platt" and rec["n"] == len(calib) and rec["split"] == "judge-calib"
    assert rec["member_C"] == dict(zip(kinds, [r[1] for r in refs]))
    assert list(rec["member_weights"]) == kinds
    assert list(rec["member_weights"].values()) == approx(cal.coef_[0], rel=1e-4, abs=1e-6)
    assert rec["ece_before"] == approx(_ref_ece(_sig(z.mean(1)), y), rel=1e-6, abs=1e-9)
    assert rec["ece_after"] == approx(_ref_ece(after, y), rel=1e-4, abs=1e-6)
    acc = (w_ca * ((after > 0.5) == (y == 1))).sum() / w_ca.sum()
    assert rec["calib_accuracy_weighted"] == approx(acc, rel=1e-9)
    assert judge.prob(calib.prompts, calib.a) == approx(after, rel=1e-4, abs=1e-6)
    assert judge.member_scores(calib.prompts, calib.a) == approx(z, rel=1e-6, abs=1e-9)
    return refs, z, after


def test_linear_judge_pointwise_fit_picks_c_on_calib_and_platt_stacks_the_members() -> None:
    t1, t2, train, calib = _pointwise_data()
    m1, m2 = _Table("m1", t1), _Table("m2", t2)
    judge = LinearJudge([m1, m2], "pointwise")
    assert (judge.calibration, judge.seed, judge.heads, judge.C, judge.calibrator) == ("platt", 0, [], [], None)
    rec = judge.fit(train, calib)
    refs, z, after = _check_pointwise(judge, rec, [t1, t2], train, calib)
    assert m1.fit_calls == [(train.prompts, train.a)]
    assert {r[1] for r in refs} != {3.0}  # not simply the largest C
    assert {loo for _, loo in m1.calls} == {False}
    # loo reaches every transform, and judge.prob passes it on
    m3 = _Table("m1", t1)
    LinearJudge([m3], "pointwise").fit(train, calib, loo=True)
    assert m3.calls and {loo for _, loo in m3.calls} == {True}
    m3.calls.clear()
    judge.members[0] = m3
    judge.prob(calib.prompts, calib.a, loo=True)
    assert m3.calls == [(tuple(calib.a), True)]


def test_linear_judge_refuses_one_label_training_data() -> None:
    t1, _, train, calib = _pointwise_data()
    train.labels = [1] * len(train)
    msg = "judge training data hold only label 1: need both classes (more rows or another source)"
    with pytest.raises(BenchError, match=_exactly(msg)):
        LinearJudge([_Table("m1", t1)], "pointwise").fit(train, calib)
    one = Items(train.prompts[:1], train.a[:1], labels=[0], sources=["A"])
    with pytest.raises(BenchError, match=_exactly("judge training data hold only label 0: need both classes (more rows or another source)")):
        LinearJudge([_Table("m1", t1)], "pointwise").fit(one, calib)


def test_linear_judge_keeps_the_smallest_c_when_the_losses_tie() -> None:
    """A member that reads nothing (every feature 0) fits the same head at every C: the first C of the grid is kept."""
    t1, _, train, calib = _pointwise_data()
    zero = {t: [0.0] for t in train.a + calib.a}
    judge = LinearJudge([_Table("zero", zero)], "pointwise")
    assert judge.fit(train, calib)["member_C"] == {"zero": 0.03}
    table, ptrain, pcalib = _pairwise_data()
    zero = {t: [0.0] for t in ptrain.a + ptrain.b + pcalib.a + pcalib.b}
    pj = LinearJudge([_Table("zero", zero)], "pairwise")
    assert pj.fit(ptrain, pcalib)["member_C"] == {"zero": 0.03}


def test_linear_judge_pairwise_orientation_comes_from_the_seed() -> None:
    """Orientation does not change a Bradley–Terry fit, but it is the seed's: seed 19821 turns all 14 training pairs
    (every label 0: one class, sklearn refuses), seed 3 does not."""
    assert _rng_flips(14, 19821).all()
    table, train, calib = _pairwise_data()
    with pytest.raises(ValueError, match="class"):
        LinearJudge([_Table("m1", table)], "pairwise", seed=19821).fit(train, calib)
    assert LinearJudge([_Table("m1", table)], "pairwise", seed=3).fit(train, calib)["n"] == 10


def _pairs(table_list, n=8, seed=9):
    rng = np.random.default_rng(seed)
    a, b = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    for table in table_list:
        d = len(next(iter(table.values())))
        for i in range(n):  # the rejected (less safe) side: larger first feature
            table[a[i]] = rng.normal(size=d)
            table[b[i]] = table[a[i]] + np.r_[1.0 + rng.random(), rng.normal(size=d - 1)]
    return Items([f"pp{i}" for i in range(n)], a, b, sources=["H"] * n)


def test_linear_judge_pointwise_with_pairs_fits_joint_heads() -> None:
    t1, t2, train, calib = _pointwise_data()
    pairs = _pairs([t1, t2])
    m1, m2 = _Table("m1", t1), _Table("m2", t2)
    judge = LinearJudge([m1, m2], "pointwise", seed=4)
    rec = judge.fit(train, calib, pairs=pairs)
    assert all(isinstance(h, JointHead) for h in judge.heads)
    _check_pointwise(judge, rec, [t1, t2], train, calib, pairs=pairs, seed=4)
    assert m1.fit_calls == [(train.prompts + pairs.prompts * 2, train.a + pairs.a + pairs.b)]
    # the pairs change the heads (else this test could not tell them from the rows-only fit)
    plain = _ref_pointwise_head(t1, train, calib)
    assert np.abs(np.ravel(judge.heads[0].coef_) - plain[2]).max() > 1e-3
    # the pair rows are read without loo
    m3 = _Table("m1", t1)
    LinearJudge([m3], "pointwise").fit(train, calib, loo=True, pairs=pairs)
    assert {loo for r, loo in m3.calls if r[0].startswith(("a", "b"))} == {False}
    assert {loo for r, loo in m3.calls if r[0].startswith(("t", "c"))} == {True}


def test_linear_judge_ignores_empty_pairs() -> None:
    t1, _, train, calib = _pointwise_data()
    judge = LinearJudge([_Table("m1", t1)], "pointwise")
    rec = judge.fit(train, calib, pairs=Items([], [], [], sources=[]))
    _check_pointwise(judge, rec, [t1], train, calib)
    assert not isinstance(judge.heads[0], JointHead)


TIES = [1, 3, 5, 8]  # calibration pairs with one response on both sides


def _pairwise_data():
    rng = np.random.default_rng(21)
    table = {}
    tr_a, tr_b = [f"ta{i}" for i in range(14)], [f"tb{i}" for i in range(14)]
    ca_a, ca_b = [f"ca{i}" for i in range(10)], [f"cb{i}" for i in range(10)]
    for t in tr_b + ca_b:
        table[t] = rng.normal(size=2)
    for i, (a, b) in enumerate(zip(tr_a + ca_a, tr_b + ca_b)):  # chosen better along [1.5, 0.7], some pairs reversed
        sign = -1.0 if i in (3, 11) else -0.2 if i in (14, 23) else 1.0
        table[a] = table[b] + np.array([1.5, 0.7]) * sign + 0.3 * rng.normal(size=2)
    for i in TIES:  # ties: the same response on both sides
        ca_b[i] = ca_a[i]
    train = Items([f"p{i}" for i in range(14)], tr_a, tr_b, sources=["A"] * 10 + ["B"] * 4)
    calib = Items([f"q{i}" for i in range(10)], ca_a, ca_b, sources=["A"] * 7 + ["B"] * 3)
    return table, train, calib


def test_linear_judge_pairwise_fit_is_bradley_terry_with_a_no_intercept_platt() -> None:
    table, train, calib = _pairwise_data()
    seed = 3
    m = _Table("m1", table)
    judge = LinearJudge([m], "pairwise", seed=seed)
    pairs = _pairs([dict(table)])  # a pairwise judge never reads these (not even their texts)
    rec = judge.fit(train, calib, pairs=pairs)
    assert m.fit_calls == [(train.prompts, train.a + train.b)]
    X = lambda ts: np.array([table[t] for t in ts])  # noqa: E731
    w_tr, w_ca = _ref_weights(train.sources), _ref_weights(calib.sources)
    ft = _rng_flips(len(train), seed)
    dt = (X(train.a) - X(train.b)) * np.where(ft, -1.0, 1.0)[:, None]
    dc = X(calib.a) - X(calib.b)
    fits = []
    for C in (0.03, 0.3, 1.0, 3.0):
        coef = LogisticRegression(C=C, fit_intercept=False, max_iter=3000).fit(dt, (~ft).astype(int), sample_weight=w_tr).coef_[0]
        fits.append((_ref_logloss(_sig(dc @ coef), np.ones(len(calib)), w_ca), C, coef))
    assert len(set(np.round([f[0] for f in fits], 9))) == 4
    _, C, coef = min(fits, key=lambda f: f[0])
    assert C != 0.03  # not the first C of the grid
    assert judge.C == [C] and rec["member_C"] == {"m1": C}
    assert np.ravel(judge.heads[0].coef_) == approx(coef, rel=1e-6, abs=1e-9)
    # a head with an intercept would not change a pairwise member score: it is w·φ
    assert judge.member_scores(calib.prompts, calib.a)[:, 0] == approx(X(calib.a) @ coef, rel=1e-6, abs=1e-9)
    fc = _rng_flips(len(calib), seed + 2)
    z = (X(calib.a) - X(calib.b)) @ coef
    z = np.where(fc, -z, z)[:, None]
    y = (~fc).astype(int)
    cal = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(z, y, sample_weight=w_ca)
    assert judge.calibrator.intercept == 0.0 and judge.calibrator.coef == approx(cal.coef_[0], rel=1e-4)
    after = _sig(z @ cal.coef_[0])
    # the four tied pairs sit at exactly 1/2: right only where the seed+2 draw flipped them to label 0
    assert fc[TIES].tolist() != _rng_flips(10, seed)[TIES].tolist() != _rng_flips(10, seed + 1)[TIES].tolist()
    unweighted = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(z, y)
    assert abs(unweighted.coef_[0][0] - cal.coef_[0][0]) > 0.05  # the calibration weights count
    acc = (w_ca * ((after > 0.5) == (y == 1))).sum() / w_ca.sum()
    assert rec["calib_accuracy_weighted"] == approx(acc, rel=1e-9)
    assert rec["ece_before"] == approx(_ref_ece(_sig(z.mean(1)), y), rel=1e-6, abs=1e-9)
    assert rec["ece_after"] == approx(_ref_ece(after, y), rel=1e-4, abs=1e-6)
    assert (rec["method"], rec["n"], rec["split"]) == ("platt", 10, "judge-calib")
    assert rec["member_weights"] == {"m1": approx(cal.coef_[0][0], rel=1e-4)}
    # reward: the calibrated logit of w·φ, no intercept
    assert judge.reward(calib.prompts, calib.a) == approx(X(calib.a) @ coef * cal.coef_[0][0], rel=1e-4)


def test_linear_judge_pairwise_temperature_and_pointwise_temperature() -> None:
    table, train, calib = _pairwise_data()
    judge = LinearJudge([_Table("m1", table)], "pairwise", calibration="temperature", seed=1)
    rec = judge.fit(train, calib)
    assert rec["method"] == "temperature" and judge.calibrator.method == "temperature"
    X = lambda ts: np.array([table[t] for t in ts])  # noqa: E731
    fc = _rng_flips(len(calib), 3)
    z = (X(calib.a) - X(calib.b)) @ np.ravel(judge.heads[0].coef_)
    z = np.where(fc, -z, z)
    y = (~fc).astype(int)
    ref = fit_temperature(z, y, _ref_weights(calib.sources))
    assert judge.calibrator.coef == approx(ref.coef, rel=1e-6)
    t1, _, ptrain, pcalib = _pointwise_data()
    pj = LinearJudge([_Table("m1", t1)], "pointwise", calibration="temperature")
    prec = pj.fit(ptrain, pcalib)
    zc = pj.member_scores(pcalib.prompts, pcalib.a)[:, 0]
    ref = fit_temperature(zc, pcalib.labels, _ref_weights(pcalib.sources))
    assert prec["method"] == "temperature" and pj.calibrator.coef == approx(ref.coef, rel=1e-6)
    assert pj.calibrator.intercept == 0.0


def test_linear_judge_member_scores_without_members_and_with_hand_heads() -> None:
    judge = LinearJudge([], "pointwise")
    assert judge.member_scores(["a", "b", "c"], ["x", "y", "z"]).shape == (3, 0)
    table = {"r1": [1.0, 2.0], "r2": [0.0, -1.0]}
    judge = LinearJudge([_Table("k1", table), _Table("k2", table)], "pointwise")
    judge.heads = [JointHead(np.array([1.0, 1.0]), 0.5), JointHead(np.array([2.0, 0.0]), -1.0)]
    assert judge.member_scores(["p", "q"], ["r1", "r2"]).tolist() == [[3.5, 1.0], [-0.5, -1.0]]
    judge.calibrator = Calibrator("platt", [1.0, -1.0], 0.25)
    assert judge.prob(["p", "q"], ["r1", "r2"]) == approx(_sig([2.75, 0.75]))
    pw = LinearJudge([_Table("k1", table)], "pairwise")
    pw.heads = [JointHead(np.array([1.0, 1.0]), 5.0)]  # the intercept is not part of a reward
    assert pw.member_scores(["p", "q"], ["r1", "r2"]).tolist() == [[3.0], [-1.0]]
    pw.calibrator = Calibrator("platt", [2.0], 0.0)
    assert pw.reward(["p", "q"], ["r1", "r2"]).tolist() == [6.0, -2.0]
