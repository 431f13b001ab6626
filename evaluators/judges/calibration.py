"""Calibration and held-out accuracy for the judges: Platt / temperature scaling, ECE, accuracy with a CI,
sensitivity and specificity with their counts (what the Rogan–Gladen correction reads from a judge's card).

- ECE (Guo et al. 2017, binary form): equal-width bins of the predicted P(y = 1) over [0, 1];
  ECE = Σ_b (n_b / n) · |mean(y in b) − mean(p in b)|. `n_bins` = 10.
- Temperature scaling: p = σ(z / T), T > 0 minimising the NLL on the calibration split (one parameter; keeps the
  ranking and the 0.5 decision boundary at z = 0).
- Platt scaling: p = σ(a·z + b), (a, b) minimising the NLL. With several member scores z ∈ R^k (an ensemble) the
  same fit is a stacked logistic regression p = σ(a·z + b): calibration and ensemble weights in one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from evaluators.metrics import bootstrap_ci

N_BINS = 10
METHODS = ("platt", "temperature")


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.clip(np.asarray(z, dtype=float), -40, 40)
    return 1.0 / (1.0 + np.exp(-z))


def ece(probs: Sequence[float], labels: Sequence[int], n_bins: int = N_BINS) -> float:
    """Expected calibration error of P(y = 1) over equal-width bins (the last bin closed at 1)."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.sum() / p.size * abs(y[m].mean() - p[m].mean())
    return float(total)


def _nll(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


@dataclass
class Calibrator:
    """p = σ(coef · z + intercept) over k member scores z (k = 1 for a single model)."""

    method: str = "platt"
    coef: list[float] = field(default_factory=lambda: [1.0])
    intercept: float = 0.0

    def logit(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float).reshape(len(z), -1)
        return z @ np.asarray(self.coef, dtype=float) + self.intercept

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(z))


def fit_temperature(z: Sequence[float], y: Sequence[int], weights: Sequence[float] | None = None) -> Calibrator:
    """T minimising the weighted NLL of σ(z / T) (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    z, y = np.asarray(z, dtype=float).ravel(), np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    res = minimize_scalar(lambda lt: _nll(sigmoid(z / np.exp(lt)), y, w), bounds=(-5, 5), method="bounded")
    return Calibrator("temperature", [float(1 / np.exp(res.x))], 0.0)


def fit_platt(z: np.ndarray, y: Sequence[int], weights: Sequence[float] | None = None, intercept: bool = True) -> Calibrator:
    """(coef, intercept) of the weighted logistic regression of y on the k member scores z (unregularised)."""
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(z, dtype=float)
    z = z.reshape(len(z), -1)
    y = np.asarray(y, dtype=int)
    if len(set(y.tolist())) < 2:
        return Calibrator("platt", [1.0] * z.shape[1], 0.0)
    lr = LogisticRegression(C=1e6, fit_intercept=intercept, max_iter=2000)
    lr.fit(z, y, sample_weight=None if weights is None else np.asarray(weights, dtype=float))
    return Calibrator("platt", [float(c) for c in lr.coef_[0]], float(lr.intercept_[0]) if intercept else 0.0)


def fit_calibrator(method: str, z: np.ndarray, y: Sequence[int], weights: Sequence[float] | None = None) -> Calibrator:
    if method not in METHODS:
        from harness.errors import BenchError

        raise BenchError(f"judge calibration must be one of {', '.join(METHODS)}, got {method!r}")
    z = np.asarray(z, dtype=float).reshape(len(z), -1)
    if method == "temperature":
        if z.shape[1] != 1:
            # an ensemble: average the members, then one temperature; the mean's 1/k goes into each member's weight
            k = z.shape[1]
            cal = fit_temperature(z.mean(1), y, weights)
            return Calibrator("temperature", [cal.coef[0] / k] * k, 0.0)
        return fit_temperature(z[:, 0], y, weights)
    return fit_platt(z, y, weights)


# -- held-out reports --------------------------------------------------------------------------------------------


def accuracy_ci(correct: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean of per-item correctness (1, 0, or 1/2 for a tie) with its 95% bootstrap CI over items."""
    return bootstrap_ci(list(correct), n_boot, seed)


def binary_report(probs: Sequence[float], labels: Sequence[int], threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy [CI], sensitivity (TP / (TP + FN)) and specificity (TN / (TN + FP)) with counts, ECE, base rate."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=int)
    pred = (p > threshold).astype(int)
    tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
    tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())
    return {
        "n": int(y.size), "positives": int(y.sum()),
        "accuracy": accuracy_ci((pred == y).astype(float), n_boot, seed),
        "sensitivity": {"value": tp / (tp + fn) if tp + fn else float("nan"), "tp": tp, "fn": fn},
        "specificity": {"value": tn / (tn + fp) if tn + fp else float("nan"), "tn": tn, "fp": fp},
        "ece": ece(p, y),
    }


def pairwise_correct(s_chosen: Sequence[float], s_rejected: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 if the chosen response scores better, 1/2 on a tie, 0 otherwise."""
    a, b = np.asarray(s_chosen, dtype=float), np.asarray(s_rejected, dtype=float)
    win = a > b if higher_is_better else a < b
    return np.where(a == b, 0.5, win.astype(float))


def pairwise_report(s_chosen: Sequence[float], s_rejected: Sequence[float], higher_is_better: bool = True, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    return {"n": len(s_chosen), "accuracy": accuracy_ci(pairwise_correct(s_chosen, s_rejected, higher_is_better), n_boot, seed)}
