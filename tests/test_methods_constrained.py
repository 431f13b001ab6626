"""SACPO, P-SACPO, MoCAN, PeCAN, SafeDPO: their pure math (merge, duals, relabelling, SafeDPO's transform) against
independent computations, then one tiny end-to-end `runs.run` per method (tiny-random model, length/random scorers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import BenchError
from harness.types import PreferencePair
from methods.mocan import (
    CANDualConfig,
    mocan_dual,
    mocan_dual_value,
    projected_gradient_descent,
    relabel,
    resolve_lambda,
    safety_utility,
)
from methods.p_sacpo import merge_state_dicts
from methods.pecan import pecan_dual, pecan_scores
from methods.safedpo import safedpo_margins, safedpo_transform


def _pair(i: int, chosen_safe: bool | None = True, rejected_safe: bool | None = True) -> PreferencePair:
    return PreferencePair(prompt=f"prompt {i}", chosen=f"good {i}", rejected=f"bad {i}", chosen_safe=chosen_safe,
                          rejected_safe=rejected_safe, chosen_severity=0 if chosen_safe else 2,
                          rejected_severity=0 if rejected_safe else 3, source=f"test:{i}")


# -- P-SACPO merge ------------------------------------------------------------------------------------------------


def test_merge_equals_interpolation_exactly() -> None:
    # dyadic values and q = 1/4: every product and sum is exact in float32, so equality is exact
    a = {"w": torch.tensor([[0.0, 4.0], [-8.0, 2.0]]), "b": torch.tensor([1.0, -1.0])}
    b = {"w": torch.tensor([[4.0, 0.0], [8.0, 2.0]]), "b": torch.tensor([-3.0, 3.0])}
    merged = merge_state_dicts(a, b, 0.25)
    assert torch.equal(merged["w"], torch.tensor([[1.0, 3.0], [-4.0, 2.0]]))
    assert torch.equal(merged["b"], torch.tensor([0.0, 0.0]))
    # random tensors: the endpoints are the inputs bit for bit, the midpoint matches a float64 interpolation
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.randn(64, 32, generator=g)}
    b = {"x": torch.randn(64, 32, generator=g)}
    assert torch.equal(merge_state_dicts(a, b, 0.0)["x"], a["x"])
    assert torch.equal(merge_state_dicts(a, b, 1.0)["x"], b["x"])
    mid = merge_state_dicts(a, b, 0.5)["x"]
    want = (0.5 * a["x"].double() + 0.5 * b["x"].double()).float()
    assert torch.allclose(mid, want, atol=0, rtol=1e-6)
    assert mid.data_ptr() not in (a["x"].data_ptr(), b["x"].data_ptr())  # a new tensor, inputs untouched


def test_merge_keeps_dtype_accumulates_in_float32_and_refuses_mismatches() -> None:
    a = {"w": torch.tensor([1.0, 3.0], dtype=torch.bfloat16), "step": torch.tensor([7])}
    b = {"w": torch.tensor([2.0, 5.0], dtype=torch.bfloat16), "step": torch.tensor([7])}
    m = merge_state_dicts(a, b, 0.5)
    assert m["w"].dtype == torch.bfloat16 and torch.equal(m["w"], torch.tensor([1.5, 4.0], dtype=torch.bfloat16))
    assert torch.equal(m["step"], torch.tensor([7]))
    with pytest.raises(ValueError, match="non-floating"):
        merge_state_dicts(a, {**b, "step": torch.tensor([8])}, 0.5)
    with pytest.raises(ValueError, match="key sets differ"):
        merge_state_dicts(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        merge_state_dicts(a, {**b, "w": torch.zeros(3, dtype=torch.bfloat16)}, 0.5)


# -- the CAN duals --------------------------------------------------------------------------------------------------


def _tilted_mean(logits: np.ndarray, values: np.ndarray) -> float:
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return float((w * values).sum(axis=1).mean())


def _bisect_root(f, hi: float = 1.0) -> float:
    """Root of an increasing f on [0, ∞), or 0 when f(0) ≥ 0 (the projection)."""
    if f(0.0) >= 0:
        return 0.0
    while f(hi) < 0:
        hi *= 2
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def test_projected_gradient_descent_on_quadratics() -> None:
    res = projected_gradient_descent(lambda lam: 2 * (lam - 3.0), eta=0.25)  # D = (λ − 3)²
    assert res.converged and res.lam == pytest.approx(3.0, abs=1e-4) and res.attempts == 1
    res = projected_gradient_descent(lambda lam: 2 * (lam + 1.0), eta=0.25)  # minimiser −1 is projected to 0
    assert res.converged and res.lam == 0.0
    res = projected_gradient_descent(lambda lam: 2 * (lam - 3.0), eta=1.5)  # η = 1.5 oscillates: one restart at 0.75
    assert res.converged and res.attempts == 2 and res.eta == 0.75 and res.lam == pytest.approx(3.0, abs=1e-4)
    res = projected_gradient_descent(lambda lam: -1.0)  # D decreasing forever: no finite minimiser
    assert not res.converged and res.attempts == 5 and res.total_iterations == 5 * 200


def test_projected_gradient_descent_settings_iterations_and_stops() -> None:
    """D' = 2(λ − 3) with η = 0.5 jumps to λ* = 3 in one step; the window, min_iters, restarts with η halved, a
    non-finite gradient and the λ cap each decide when it stops and what it reports."""
    from harness.training.can_dual import DualResult
    from harness.training.can_dual import projected_gradient_descent as pgd

    for bad in (dict(eta=0.0), dict(tol=0.0), dict(window=0), dict(max_iters=0), dict(max_attempts=0)):
        with pytest.raises(ValueError, match=r"^projected_gradient_descent needs eta > 0, tol > 0, window >= 1, max_iters >= 1, max_attempts >= 1$"):
            pgd(lambda lam: 0.0, **bad)
    assert pgd(lambda lam: -1.0, max_iters=1, max_attempts=1).lam == 3.0  # the default η = 2; one step is allowed
    jump = lambda lam: 2 * (lam - 3.0)  # noqa: E731
    res = pgd(jump, eta=0.5)  # min_iters 10: converged only at the 10th step
    assert (res.converged, res.lam, res.iterations, res.total_iterations, res.attempts, res.grad, res.trajectory) == (True, 3.0, 10, 10, 1, 0.0,
                                                                                                                [1.0] + [3.0] * 10)
    assert pgd(jump, eta=0.5, min_iters=0).iterations == 5  # the window of 5 iterates must exclude λ_0 = 1
    assert pgd(jump, eta=0.5, min_iters=0, window=2).iterations == 2
    assert pgd(jump, eta=0.5, lambda_init=-2.0, min_iters=0, window=1).trajectory == [0.0, 3.0]  # λ_0 is projected too
    assert pgd(lambda lam: 0.0, min_iters=0, window=3).iterations == 2  # the window counts λ_0: [1, 1, 1] after two steps
    # steps of exactly tol never converge: the iterates must lie strictly within tol
    assert not pgd(lambda lam: -0.25, eta=2.0, tol=0.5, window=2, min_iters=0, max_iters=3, max_attempts=1).converged
    # D' = −1 forever, no cap: three attempts at η = 2, 1, 0.5 of two steps each; the last attempt is reported
    down = pgd(lambda lam: -1.0, eta=2.0, max_iters=2, max_attempts=3)
    assert (down.converged, down.infeasible, down.lam, down.iterations, down.total_iterations, down.attempts, down.eta, down.grad,
            down.trajectory) == (False, False, 2.0, 2, 6, 3, 0.5, -1.0, [1.0, 1.5, 2.0])
    # the cap: λ 0 → 2 → 4 → 6 reaches 6 at step 3 and passes it at step 4, every gradient negative
    capped = pgd(lambda lam: -1.0, eta=2.0, lambda_init=0.0, lambda_cap=6.0)
    assert capped == DualResult(8.0, False, 4, 4, 1, 2.0, -1.0, [0.0, 2.0, 4.0, 6.0, 8.0], infeasible=True,
                                reason="λ passed the cap 6 after 4 steps with the gradient negative throughout")
    # one positive (or zero) gradient first: past the cap is not proof of infeasibility, the attempt runs on
    bounce = pgd(lambda lam: 0.5 if lam == 1.0 else -1.0, eta=2.0, lambda_cap=5.0, max_iters=10, max_attempts=1)
    assert not bounce.infeasible and bounce.iterations == 10 and bounce.lam == 18.0
    first = iter([0.0])
    flat = pgd(lambda lam: next(first, -1.0), eta=2.0, lambda_cap=5.0, max_iters=10, max_attempts=1)
    assert not flat.infeasible and flat.iterations == 10 and flat.lam == 19.0
    # a non-finite gradient ends each attempt before its first step
    nan = pgd(lambda lam: float("nan"), eta=2.0, max_attempts=2)
    assert (nan.converged, nan.lam, nan.iterations, nan.total_iterations, nan.attempts, nan.eta, nan.trajectory) == (False, 1.0, 1, 0, 2, 1.0, [1.0])
    assert math.isnan(nan.grad)


def test_can_dual_results_records_and_messages(tmp_path) -> None:
    from harness.training.can_dual import DualResult, infeasible_result, keep_with_model, max_slack, score_matrix, write_jsonl

    res = DualResult(2.0, True, 3, 4, 1, 0.5, 1e-6, [1.0, 2.0], max_slack=0.3)
    assert res.summary() == {"lam": 2.0, "converged": True, "iterations": 3, "total_iterations": 4, "attempts": 1, "eta": 0.5,
                             "grad": 1e-6, "infeasible": False, "max_slack": 0.3, "reason": ""}
    out = infeasible_result(0.5, 40.0, -0.25, "E[g] ≥ b = 1")
    assert out == DualResult(40.0, False, 0, 0, 0, 0.0, -0.25, [0.5], infeasible=True, max_slack=-0.25,
                             reason="E[g] ≥ b = 1: the largest slack any λ reaches on these samples is -0.25 <= 0")
    assert max_slack([[1.0, -1.0, 0.5], [0.0, 2.0, -3.0]], 0.25) == 1.25  # mean of the row maxima (1, 2), minus the offset
    with pytest.raises(ValueError, match=r"^constraint must be a non-empty \(prompts, samples\) matrix, got shape \(3,\)$"):
        max_slack([1.0, 2.0, 3.0], 0.0)
    for bad, shape in (([[]], r"\(1, 0\)"), (np.zeros((2, 2, 2)), r"\(2, 2, 2\)")):
        with pytest.raises(ValueError, match=rf"^x must be a non-empty \(prompts, samples\) matrix, got shape {shape}$"):
            score_matrix(bad, "x")
    assert score_matrix([[1, 2]], "x").dtype == torch.float64
    path = write_jsonl(tmp_path / "new" / "sub" / "rows.jsonl", [{"a": "é"}, {"b": 2}])  # the folders are made; text kept as UTF-8
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n{"b": 2}\n'
    (tmp_path / "model").mkdir()
    kept = keep_with_model(path, tmp_path / "model")
    assert kept == tmp_path / "model" / "rows.jsonl" and kept.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_can_dual_config_solver_and_resolve_lambda_messages() -> None:
    from harness.training.can_dual import DualResult

    cfg = CANDualConfig(lambda_init=0.5, eta=1.5, tol=1e-4, window=3, max_iters=7, min_iters=2, max_attempts=4, lambda_cap=9.0)
    assert cfg.solver() == dict(lambda_init=0.5, eta=1.5, tol=1e-4, window=3, max_iters=7, min_iters=2, max_attempts=4, lambda_cap=9.0)
    with pytest.raises(BenchError, match=r"^the dual needs temperature > 0 \(distinct samples from π_ref\), or a fixed lambda_$"):
        CANDualConfig(temperature=0.0).validate()
    raising = CANDualConfig(on_infeasible="raise")
    assert resolve_lambda(DualResult(2.5, True, 3, 3, 1, 2.0, 0.0), raising, "X") == 2.5
    stuck = DualResult(12.3456, False, 200, 1000, 5, 0.125, -0.5)
    with pytest.raises(BenchError, match=r"^MoCAN: the dual did not converge after 5 attempts \(last λ = 12\.35, gradient -0\.5\): the constraint "
                                         r"is likely infeasible on these samples \(loosen the bound, add samples, or set on_infeasible=last / lambda_\)$"):
        resolve_lambda(stuck, raising, "MoCAN")
    capped = DualResult(60.0, False, 3, 7, 1, 2.0, -1.0, infeasible=True, reason="λ passed the cap")
    with pytest.raises(BenchError, match=r"^PeCAN: the dual is infeasible \(λ passed the cap\); stopped after 7 iterations, λ = 60 \(loosen"):
        resolve_lambda(capped, raising, "PeCAN")
    assert resolve_lambda(stuck, CANDualConfig(), "MoCAN") == 12.3456 and resolve_lambda(capped, CANDualConfig(), "PeCAN") == 60.0


@pytest.mark.parametrize("beta,b", [(1.0, 0.5), (1.0, 1.0), (0.1, 0.5), (0.5, 0.2)])
def test_mocan_dual_matches_bisection(beta: float, b: float) -> None:
    rng = np.random.default_rng(0)
    r, g = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    want = _bisect_root(lambda lam: _tilted_mean((r + lam * g) / beta, g) - b)  # E_{π_λ}[g] = b
    res = mocan_dual(r, g, b, beta)
    assert res.converged and want > 0
    assert res.lam == pytest.approx(want, abs=1e-3)
    # λ* minimises the empirical dual D̂
    d = mocan_dual_value(res.lam, r, g, b, beta)
    assert d <= mocan_dual_value(res.lam + 0.05, r, g, b, beta) and d <= mocan_dual_value(res.lam - 0.05, r, g, b, beta)


def test_mocan_dual_zero_when_slack_and_infeasible_when_unreachable() -> None:
    rng = np.random.default_rng(1)
    r, g = rng.normal(size=(10, 8)), rng.normal(size=(10, 8))
    slack = mocan_dual(r, g, b=-5.0, beta=1.0)  # E_{π_0}[g] ≈ 0 ≥ −5: the constraint is inactive
    assert slack.converged and slack.lam == 0.0
    best = float(g.max(axis=1).mean())  # the most any reweighting of the samples can reach
    hopeless = mocan_dual(r, g, b=best + 0.5, beta=1.0)  # stopped before any step: the largest slack is −0.5
    assert hopeless.infeasible and not hopeless.converged and hopeless.total_iterations == 0
    assert hopeless.max_slack == pytest.approx(-0.5, abs=1e-12) and hopeless.lam == 100.0  # λ_cap
    slow = mocan_dual(r, g, b=best + 0.5, beta=1.0, check_feasible=False, lambda_cap=None)  # the old way: 5 attempts
    assert not slow.converged and not slow.infeasible and slow.attempts == 5 and slow.total_iterations == 1000
    cfg = CANDualConfig(on_infeasible="raise")
    with pytest.raises(BenchError, match="infeasible"):
        resolve_lambda(hopeless, cfg, "MoCAN")
    assert resolve_lambda(hopeless, CANDualConfig(on_infeasible="last"), "MoCAN") == hopeless.lam
    with pytest.raises(ValueError):
        mocan_dual(r, g[:, :4], 0.0, 1.0)  # shapes must agree


def test_mocan_dual_refuses_bad_input_and_passes_the_solver_settings() -> None:
    """r = 0, g = (1, −1): E_λ[g] = tanh(λ/β), at most 1. Error messages name the bad input."""
    from methods.mocan import mocan_dual_grad

    r, g = np.zeros((1, 2)), np.array([[1.0, -1.0]])
    with pytest.raises(ValueError, match=r"^mocan_dual needs beta > 0 \(got 0\)$"):
        mocan_dual(r, g, 0.2, 0)
    with pytest.raises(ValueError, match=r"^r and g must have the same shape, got \(1, 2\) and \(1, 3\)$"):
        mocan_dual(r, np.zeros((1, 3)), 0.2, 0.5)
    for call, name in ((lambda: mocan_dual([0.0, 0.0], g, 0.2, 0.5), "r"), (lambda: mocan_dual(r, [1.0, -1.0], 0.2, 0.5), "g"),
                       (lambda: mocan_dual_grad(0.0, [0.0, 0.0], g, 0.2, 0.5), "r"), (lambda: mocan_dual_grad(0.0, r, [1.0, -1.0], 0.2, 0.5), "g"),
                       (lambda: mocan_dual_value(0.0, [0.0, 0.0], g, 0.2, 0.5), "r"), (lambda: mocan_dual_value(0.0, r, [1.0, -1.0], 0.2, 0.5), "g")):
        with pytest.raises(ValueError, match=rf"^{name} must be a non-empty \(prompts, samples\) matrix, got shape \(2,\)$"):
            call()
    assert mocan_dual_grad(0.5 * math.atanh(0.5), r, g, 0.2, 0.5) == pytest.approx(0.5 - 0.2, rel=1e-12)
    # D̂(1) = β·log mean exp((g − b)/β) = 0.5·log((e^1.6 + e^−2.4)/2)
    assert mocan_dual_value(1.0, r, g, 0.2, 0.5) == pytest.approx(0.5 * math.log((math.exp(1.6) + math.exp(-2.4)) / 2), rel=1e-12)

    ok = mocan_dual(r, g, 0.2, 0.5, eta=0.5, lambda_init=0.25)
    assert ok.converged and ok.eta == 0.5 and ok.trajectory[0] == 0.25 and ok.lam == pytest.approx(0.5 * math.atanh(0.2), abs=1e-4)
    assert ok.max_slack == pytest.approx(0.8, rel=1e-12)
    # b = 1.2 > 1: stopped before any step, at λ_cap, with the settings' λ_0 as the only iterate
    edge = mocan_dual(r, g, 1.0, 0.5)  # b = 1: the slack reaches 0 only as λ → ∞, no finite λ*
    assert edge.infeasible and edge.total_iterations == 0 and edge.max_slack == 0.0
    out = mocan_dual(r, g, 1.2, 0.5, lambda_init=2.0, lambda_cap=7.0)
    assert out.infeasible and out.lam == 7.0 and out.trajectory == [2.0] and out.max_slack == pytest.approx(-0.2, rel=1e-12)
    assert out.reason.startswith("E[g] ≥ b = 1.2: the largest slack")
    assert [(x.lam, x.trajectory) for x in (mocan_dual(r, g, 1.2, 0.5), mocan_dual(r, g, 1.2, 0.5, lambda_cap=None))] == [(100.0, [1.0])] * 2
    free = mocan_dual(r, g, 1.2, 0.5, check_feasible=False, max_iters=3, max_attempts=1, lambda_cap=None)
    assert not free.infeasible and free.total_iterations == 3 and free.max_slack == pytest.approx(-0.2, rel=1e-12)


@pytest.mark.parametrize("margin,beta", [(0.0, 0.1), (0.1, 0.1), (0.2, 0.5)])
def test_pecan_dual_matches_bisection(margin: float, beta: float) -> None:
    rng = np.random.default_rng(2)
    h_r, h_g = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    kl = -h_g.mean()
    want = _bisect_root(lambda lam: _tilted_mean(h_r + lam * h_g, h_g) + kl - margin / beta)
    res = pecan_dual(h_r, h_g, margin, beta)
    assert res.converged and want > 0
    assert res.lam == pytest.approx(want, abs=1e-3)


def test_pecan_dual_refuses_bad_input_and_passes_the_solver_settings() -> None:
    """h_g = (1, −1), h_r = 0: E_λ[h_g] − E_ref[h_g] = tanh(λ), at most 1 nat. Error messages name the bad input."""
    from methods.pecan import pecan_dual_grad, pecan_max_slack

    h_r, h_g = np.zeros((1, 2)), np.array([[1.0, -1.0]])
    with pytest.raises(ValueError, match=r"^pecan_dual needs beta > 0 \(got 0\)$"):
        pecan_dual(h_r, h_g, 0.1, 0)
    with pytest.raises(ValueError, match=r"^h_r and h_g must have the same shape, got \(1, 2\) and \(1, 3\)$"):
        pecan_dual(h_r, np.zeros((1, 3)), 0.1, 0.5)
    for call, name in ((lambda: pecan_dual([0.0, 0.0], h_g, 0.1, 0.5), "h_r"), (lambda: pecan_dual(h_r, [1.0, -1.0], 0.1, 0.5), "h_g"),
                       (lambda: pecan_dual_grad(0.0, [0.0, 0.0], h_g, 0.1, 0.5), "h_r"),
                       (lambda: pecan_dual_grad(0.0, h_r, [1.0, -1.0], 0.1, 0.5), "h_g"), (lambda: pecan_max_slack([1.0], 0.1, 0.5), "h_g")):
        with pytest.raises(ValueError, match=rf"^{name} must be a non-empty \(prompts, samples\) matrix, got shape \([12],\)$"):
            call()
    assert pecan_dual_grad(math.atanh(0.5), h_r, h_g, 0.1, 0.5) == pytest.approx(0.5 - 0.2, rel=1e-12)
    assert pecan_max_slack(h_g + 3.0, 0.1, 0.5) == pytest.approx(1.0 - 0.2, rel=1e-12)  # relative: a shift of h_g cancels

    ok = pecan_dual(h_r, h_g, 0.1, 0.5, eta=0.5, lambda_init=0.25)
    assert ok.converged and ok.eta == 0.5 and ok.trajectory[0] == 0.25 and ok.lam == pytest.approx(math.atanh(0.2), abs=1e-4)
    assert ok.max_slack == pytest.approx(0.8, rel=1e-12)
    # b/β = 1.2 > 1: stopped before any step, at λ_cap, with the settings' λ_0 as the only iterate
    edge = pecan_dual(h_r, h_g, 0.5, 0.5)  # b/β = 1: the slack reaches 0 only as λ → ∞, no finite λ*
    assert edge.infeasible and edge.total_iterations == 0 and edge.max_slack == 0.0
    out = pecan_dual(h_r, h_g, 0.6, 0.5, lambda_init=2.0, lambda_cap=7.0)
    assert out.infeasible and out.lam == 7.0 and out.trajectory == [2.0] and out.max_slack == pytest.approx(-0.2, rel=1e-12)
    assert out.reason.startswith("E_π[h_g] − E_π_ref[h_g] ≥ b/β = 1.2 nats: the largest slack")
    assert [(r.lam, r.trajectory) for r in (pecan_dual(h_r, h_g, 0.6, 0.5), pecan_dual(h_r, h_g, 0.6, 0.5, lambda_cap=None))] == [(100.0, [1.0])] * 2
    free = pecan_dual(h_r, h_g, 0.6, 0.5, check_feasible=False, max_iters=3, max_attempts=1, lambda_cap=None)
    assert not free.infeasible and free.total_iterations == 3 and free.max_slack == pytest.approx(-0.2, rel=1e-12)


def test_pecan_scores_beta_flag() -> None:
    assert pecan_scores([1.0, -2.0], [0.5, 1.0], lam=2.0, beta=0.1, beta_in_relabel=False) == pytest.approx([2.0, 0.0])
    assert pecan_scores([1.0, -2.0], [0.5, 1.0], lam=2.0, beta=0.1, beta_in_relabel=True) == pytest.approx([0.2, 0.0])


def test_safety_utility() -> None:
    assert safety_utility([0.5, -0.2, 0.0], "score") == [-0.5, 0.2, -0.0]
    assert safety_utility([0.5, -0.2, 0.0], "indicator") == [-1.0, 0.0, 0.0]  # cost > 0 is unsafe


# -- relabelling ----------------------------------------------------------------------------------------------------


def test_relabel_one_draw_per_pair_with_fixed_seed() -> None:
    pairs = [_pair(i, chosen_safe=True, rejected_safe=False) for i in range(200)]
    s_c = list(np.linspace(-3, 3, 200))
    s_r = [0.0] * 200
    out, rows = relabel(pairs, s_c, s_r, seed=7)
    u = np.random.default_rng(7).random(200)  # exactly one uniform per pair, in order
    p = [1 / (1 + math.exp(-s)) for s in s_c]
    for pair, new, row, ui, pi in zip(pairs, out, rows, u, p):
        assert row["p_keep"] == pytest.approx(pi) and row["u"] == pytest.approx(ui)
        assert row["swapped"] == (not ui < pi)
        if row["swapped"]:  # labels travel with their response
            assert (new.chosen, new.rejected, new.chosen_safe, new.rejected_safe) == (pair.rejected, pair.chosen, False, True)
            assert (new.chosen_severity, new.rejected_severity) == (pair.rejected_severity, pair.chosen_severity)
        else:
            assert new == pair
        assert (row["chosen"], row["rejected"]) == (new.chosen, new.rejected)
    again, _ = relabel(pairs, s_c, s_r, seed=7)
    assert again == out  # fixed seed: the same dataset
    assert relabel(pairs, s_c, s_r, seed=8)[0] != out


def test_relabel_extreme_and_even_scores() -> None:
    pairs = [_pair(i) for i in range(4000)]
    out, _ = relabel(pairs[:2], [60.0, -60.0], [0.0, 0.0], seed=0)  # σ(±60): certain
    assert out[0] == pairs[0] and out[1] == pairs[1].swapped()
    _, rows = relabel(pairs, [0.0] * 4000, [0.0] * 4000, seed=0)  # σ(0) = 1/2
    rate = sum(r["swapped"] for r in rows) / 4000
    assert abs(rate - 0.5) < 0.03
    with pytest.raises(ValueError):
        relabel(pairs[:3], [0.0] * 2, [0.0] * 3, seed=0)


def test_relabel_rows_record_the_draw_and_lengths_must_match() -> None:
    pairs = [_pair(0, True, False), _pair(1, True, False)]
    u = np.random.default_rng(3).random(2).tolist()
    out, rows = relabel(pairs, [60.0, 0.0], [0.0, 60.0], seed=3)  # σ(±60): keep the first, swap the second
    assert out == [pairs[0], pairs[1].swapped()]
    assert rows == [
        {"prompt": "prompt 0", "chosen": "good 0", "rejected": "bad 0", "swapped": False, "p_keep": 1.0, "u": u[0],
         "score_original_chosen": 60.0, "score_original_rejected": 0.0, "source": "test:0"},
        {"prompt": "prompt 1", "chosen": "bad 1", "rejected": "good 1", "swapped": True, "p_keep": pytest.approx(math.exp(-60), rel=1e-9),
         "u": u[1], "score_original_chosen": 0.0, "score_original_rejected": 60.0, "source": "test:1"}]
    # keep iff u < p_keep (P[keep] = p_keep): seed 0's draw is σ(0.5622011350067171) to the last bit, so that pair swaps
    _, (row,) = relabel(pairs[:1], [0.5622011350067171], [0.0], seed=0)
    assert row["u"] == row["p_keep"] == np.random.default_rng(0).random() and row["swapped"]
    # the scores are differences of long log-prob sums: taken in float64, a 1e-4 gap at 1000 survives
    _, rows = relabel(pairs, [1000.0001, 1000.0], [1000.0, 1000.0001], seed=0)
    assert [r["p_keep"] for r in rows] == pytest.approx([1 / (1 + math.exp(-1e-4)), 1 / (1 + math.exp(1e-4))], rel=1e-9)
    with pytest.raises(ValueError, match=r"^relabel: 3 pairs but 2/3 scores$"):
        relabel(pairs + pairs[:1], [0.0] * 2, [0.0] * 3, seed=0)
    with pytest.raises(ValueError, match=r"^relabel: 3 pairs but 3/2 scores$"):
        relabel(pairs + pairs[:1], [0.0] * 3, [0.0] * 2, seed=0)


# -- SafeDPO --------------------------------------------------------------------------------------------------------


def test_safedpo_transform_every_case() -> None:
    both_safe, safe_unsafe = _pair(0, True, True), _pair(1, True, False)
    unsafe_safe, both_unsafe = _pair(2, False, True), _pair(3, False, False)
    unlabelled = [_pair(4, None, True), _pair(5, True, None), _pair(6, None, None)]
    out, counts = safedpo_transform([both_safe, safe_unsafe, unsafe_safe, both_unsafe, *unlabelled])
    assert out == [both_safe, safe_unsafe, unsafe_safe.swapped()]
    swapped = out[2]
    assert (swapped.chosen, swapped.chosen_safe, swapped.rejected_safe) == ("bad 2", True, False)
    assert counts == dict(kept_both_safe=1, kept_safe_unsafe=1, swapped=1, dropped_both_unsafe=1, dropped_unlabelled=3, total=7)
    # after T the preferred response is never the unsafe one, so the margin −(u_l − u_w)·Δ is ≤ 0
    assert safedpo_margins(out, 2.0) == [0.0, -2.0, -2.0]
    assert safedpo_margins(out, 0.0) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"^SafeDPO's margin Δ must be >= 0 \(got -1.0\)$"):
        safedpo_margins(out, -1.0)
    with pytest.raises(ValueError, match="^safedpo_margins needs labelled pairs: run safedpo_transform first$"):
        safedpo_margins(unlabelled, 1.0)
    # the margin −(u_l − u_w)·Δ of any labelled pair, transformed or not: + Δ where only the chosen one is unsafe
    assert safedpo_margins([unsafe_safe, both_unsafe, safe_unsafe], 0.5) == [0.5, 0.0, -0.5]
    # every case counted, not just seen
    _, counts = safedpo_transform([both_safe, safe_unsafe, unsafe_safe, both_unsafe, *unlabelled] * 2)
    assert counts == dict(kept_both_safe=2, kept_safe_unsafe=2, swapped=2, dropped_both_unsafe=2, dropped_unlabelled=6, total=14)


def test_safedpo_margin_sign_matches_the_paper_loss() -> None:
    """`train_dpo` adds the margin inside the sigmoid; the paper's loss is −log σ(β·Δh − (u_l − u_w)·Δ)."""
    from harness.training.losses import dpo_loss

    (pair,), _ = safedpo_transform([_pair(0, True, False)])
    beta, delta = 0.1, 1.5
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta, torch.tensor(safedpo_margins([pair], delta)))
    dh = (-3.0 + 4.0) - (-5.0 + 4.5)
    want = -math.log(1 / (1 + math.exp(-(beta * dh - (1 - 0) * delta))))
    assert loss.item() == pytest.approx(want, abs=1e-6)


# -- end to end, through the harness ----------------------------------------------------------------------------------

FAST = ["scoring.reward=length", "scoring.cost=random", "eval.truthfulqa_mc=false", "scoring.win_rate_vs_sft=false",
        "scoring.bootstrap=100", "data.max_eval_prompts=2", "train.max_steps=1", "data.max_train_pairs=4"]


def _stage_records(rec: dict, stage: str) -> list[dict]:
    return [t for t in rec["train"]["trajectory"] if t.get("stage") == stage]


def _params(path: str | Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).state_dict().items()}


def _spy_train_dpo(monkeypatch) -> list[dict]:
    import harness.training.dpo

    calls: list[dict] = []
    real = harness.training.dpo.train_dpo

    def spy(pairs, **kw):
        out = real(pairs, **kw)
        calls.append({**kw, "n_pairs": len(pairs), "pairs": list(pairs), "out": out, "record": harness.training.dpo.read_train_record(out)})
        return out

    monkeypatch.setattr(harness.training.dpo, "train_dpo", spy)
    return calls


def test_sacpo_end_to_end_second_stage_starts_from_and_references_pi_r(tiny_cfg, monkeypatch) -> None:
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    rec = runs.run(tiny_cfg("sacpo", FAST + ["method.beta_over_lambda=0.025"]))
    assert rec["train"]["models_trained"] == 2
    helpful, safe = calls
    assert helpful["beta"] == 0.1 and helpful["ref"] is None and helpful["record"]["reference"] == "init"
    assert safe["init"] == helpful["out"] and safe["ref"] is None  # reference = the stage-1 model π_r
    assert safe["beta"] == 0.025 and safe["record"]["init"] == str(helpful["out"])
    assert rec["train"]["extra"]["lambda"] == pytest.approx(4.0)
    assert [t["stage"] for t in rec["train"]["trajectory"]] == ["helpful", "safe"]
    assert math.isfinite(rec["results"]["safety"]["reward_mean"]["value"])


def test_p_sacpo_end_to_end_merges_the_two_sacpo_models(tiny_cfg, monkeypatch) -> None:
    """Also runs SACPO's reversed order (safety first): the merge is between the stage-1 and the final model."""
    import methods.p_sacpo as p_sacpo
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    checked = []
    real_merge = p_sacpo.merge_models

    def checking_merge(a, b, q, out_dir, record):
        out = real_merge(a, b, q, out_dir, record)
        pa, pb, pm = _params(a), _params(b), _params(out)
        assert not torch.equal(pa["model.embed_tokens.weight"], pb["model.embed_tokens.weight"])  # two different models
        for k in pm:
            assert torch.equal(pm[k], (1 - q) * pa[k] + q * pb[k]), k
        checked.append(q)
        return out

    monkeypatch.setattr(p_sacpo, "merge_models", checking_merge)
    rec = runs.run(tiny_cfg("p-sacpo", FAST + ["method.q=0.25", "method.safety_first=true"]))
    assert checked == [0.25]
    safe, helpful = calls
    assert (safe["run_name"], safe["beta"], helpful["run_name"], helpful["beta"]) == ("sacpo-safe", 0.01, "sacpo-helpful", 0.1)
    assert helpful["init"] == safe["out"] and helpful["ref"] is None
    assert rec["train"]["models_trained"] == 2 and rec["train"]["extra"]["q"] == 0.25
    assert [t["stage"] for t in rec["train"]["trajectory"]] == ["safe", "helpful", "merge"]
    model_dir = Path(rec["config"]["runs_dir"]) / rec["run_id"] / "train" / "model"
    assert json.loads((model_dir / "bench_train.json").read_text())["merge"]["q"] == 0.25


def test_mocan_end_to_end_dual_relabel_dpo(tiny_cfg, monkeypatch) -> None:
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    rec = runs.run(tiny_cfg("mocan", FAST + ["method.samples_per_prompt=3", "method.utility=score", "method.threshold=0.0"]))
    (dual,) = _stage_records(rec, "dual")
    assert dual["dual_prompts"] == 4 and dual["samples_per_prompt"] == 3
    traj = rec["train"]["extra"]["dual"]["lambda_trajectory"]  # λ_0 … λ_T of the final attempt, λ = its last iterate
    assert isinstance(dual["converged"], bool) and math.isfinite(dual["lambda"]) and len(traj) == dual["iterations"] + 1
    assert dual["lambda"] == traj[-1] == rec["train"]["extra"]["lambda"] and traj[0] == 1.0
    (relabel_rec,) = _stage_records(rec, "relabel")
    (call,) = calls
    assert call["ref"] is None and call["init"] == call["record"]["init"] and call["n_pairs"] == relabel_rec["pairs"] == 4
    rows = [json.loads(line) for line in Path(rec["train"]["extra"]["relabel"]["path"]).read_text().splitlines()]
    assert len(rows) == 4 and sum(r["swapped"] for r in rows) == relabel_rec["swapped"]
    assert all(r["swapped"] == (not r["u"] < r["p_keep"]) for r in rows)
    assert [(p.chosen, p.rejected) for p in call["pairs"]] == [(r["chosen"], r["rejected"]) for r in rows]
    assert rec["train"]["models_trained"] == 1


def test_mocan_fixed_lambda_skips_the_dual(tiny_cfg) -> None:
    from harness import runs

    rec = runs.run(tiny_cfg("mocan", FAST + ["method.lambda_=3.0"]))
    (dual,) = _stage_records(rec, "dual")
    assert dual == {"stage": "dual", "lambda": 3.0, "fixed_lambda": True}
    assert rec["train"]["extra"]["lambda"] == 3.0


def test_pecan_end_to_end_three_models(tiny_cfg, monkeypatch) -> None:
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    rec = runs.run(tiny_cfg("pecan", FAST + ["method.samples_per_prompt=2", "method.margin=0.0", "method.beta_in_relabel=true"]))
    assert rec["train"]["models_trained"] == 3
    assert [c["run_name"] for c in calls] == ["pecan-pi_r", "pecan-pi_g", "pecan"]
    assert all(c["ref"] is None and c["record"]["reference"] == "init" for c in calls)
    assert calls[0]["init"] == calls[1]["init"] == calls[2]["init"]  # all three start from π_ref
    (dual,) = _stage_records(rec, "dual")
    traj = rec["train"]["extra"]["dual"]["lambda_trajectory"]  # λ_0 … λ_T of the final attempt, λ = its last iterate
    assert isinstance(dual["converged"], bool) and math.isfinite(dual["lambda"]) and len(traj) == dual["iterations"] + 1
    assert dual["lambda"] == traj[-1] == rec["train"]["extra"]["lambda"] and traj[0] == 1.0
    assert math.isfinite(dual["kl_ref_pi_g"]) and dual["dual_prompts"] == 4
    assert rec["train"]["extra"]["beta_in_relabel"] is True
    rows = [json.loads(line) for line in Path(rec["train"]["extra"]["relabel"]["path"]).read_text().splitlines()]
    assert len(rows) == calls[2]["n_pairs"] == 4
    # learning checks: every DPO stage on held-out pairs of its own view, and the dual's λ (harness/training/learning.py)
    views = {e["stage"]: e["view"] for e in rec["train"]["learning"] if e["check"] == "heldout_accuracy"}
    assert views == {"pecan-pi_r": "reward", "pecan-pi_g": "cost", "pecan": "reward"}
    assert [e["check"] for e in rec["train"]["learning"] if e["stage"] == "pecan/dual"] == ["lambda"]
    assert rec["train"]["learned"] == "yes" or rec["train"]["learned"].startswith("no: ")
    assert rec["train"]["learning_cost"]["forward_sequences"] > 0


def test_safedpo_end_to_end_transform_and_margins(tiny_cfg, monkeypatch) -> None:
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    rec = runs.run(tiny_cfg("safedpo", FAST + ["method.delta=2.0", "data.max_train_pairs=8"]))  # 8 pairs: one swap
    (transform,) = _stage_records(rec, "transform")
    (call,) = calls
    assert call["n_pairs"] == transform["pairs_used"] == transform["total"] - transform["dropped_both_unsafe"] - transform["dropped_unlabelled"]
    assert all(p.chosen_safe for p in call["pairs"])  # the preferred response is always safe after T
    assert transform["swapped"] + transform["kept_safe_unsafe"] >= 1  # at least one margin is active
    assert call["margins"] == [-2.0 if not p.rejected_safe else 0.0 for p in call["pairs"]]
    assert call["record"]["margins"] is True and rec["train"]["models_trained"] == 1


def test_configs_refuse_bad_values() -> None:
    from methods.mocan import MoCAN, MoCANConfig
    from methods.p_sacpo import PSACPO, PSACPOConfig
    from methods.sacpo import SACPO, SACPOConfig
    from methods.safedpo import SafeDPO, SafeDPOConfig

    for make in (lambda: SACPO(SACPOConfig(lambda_=0.0)), lambda: SACPO(SACPOConfig(beta_over_lambda=-1.0)),
                 lambda: PSACPO(PSACPOConfig(q=1.5)), lambda: MoCAN(MoCANConfig(utility="other")),
                 lambda: MoCAN(MoCANConfig(on_infeasible="ignore")), lambda: SafeDPO(SafeDPOConfig(delta=-1.0))):
        with pytest.raises(BenchError):
            make()
    assert SACPOConfig(lambda_=4.0).temperatures(0.1) == (0.1, pytest.approx(0.025))


# -- SACPO variants: the KTO safety step and the naive merge --------------------------------------------------------


def test_train_kto_raises_safe_over_unsafe_and_is_trained_once(tmp_path, tiny_cfg, tiny_model_path) -> None:
    """Real TRL KTO on the tiny model: desirable (safe) responses gain log-probability relative to undesirable ones on
    the training examples; the same training asked again comes from the store (kind `kto`), not from TRL."""
    from harness.training.dpo import read_train_record
    from harness.training.kto import kto_examples, train_kto
    from harness.training.logprobs import policy_logps

    cfg = tiny_cfg("sacpo-kto", ["train.max_steps=4", "train.learning_rate=3e-3", "train.max_length=64"])
    pairs = [PreferencePair(f"question {i}?", f"I can't help with that {i}.", f"Sure, here is how {i}: step one.",
                            chosen_safe=True, rejected_safe=False, source=f"hand:{i}") for i in range(4)]
    examples = kto_examples(pairs)
    before_c, before_r = policy_logps(tiny_model_path, None, pairs, cfg, "cpu")
    out = train_kto(examples, init=tiny_model_path, beta=0.1, out_dir=tmp_path / "kto", cfg=cfg, device="cpu", run_name="t")
    after_c, after_r = policy_logps(out, None, pairs, cfg, "cpu")
    gain = ((after_c - before_c) - (after_r - before_r)).mean().item()
    assert gain > 0, gain
    rec = read_train_record(out)
    assert (rec["loss"], rec["desirable"], rec["undesirable"], rec["undesirable_weight"], rec["steps"]) == ("kto", 4, 4, 1.0, 4)
    again = train_kto(examples, init=tiny_model_path, beta=0.1, out_dir=tmp_path / "kto2", cfg=cfg, device="cpu", run_name="t2")
    assert read_train_record(again)["reused_from"] is not None and read_train_record(again)["key"] == rec["key"]


def test_sacpo_kto_end_to_end(tiny_cfg, monkeypatch) -> None:
    """`sacpo-kto` through the harness: DPO(helpful) from SFT, then real KTO(safe) from it, with both classes present."""
    from harness import runs

    calls = _spy_train_dpo(monkeypatch)
    rec = runs.run(tiny_cfg("sacpo-kto", FAST))
    (helpful,) = calls
    assert [(t["stage"], t["loss"]) for t in rec["train"]["trajectory"]] == [("helpful", "dpo"), ("safe", "kto")]
    kto = rec["train"]["extra"]["stage2"]
    assert kto["desirable"] > 0 and kto["undesirable"] > 0 and kto["examples"] == kto["desirable"] + kto["undesirable"]
    assert kto["undesirable_weight"] == pytest.approx(kto["desirable"] / kto["undesirable"])
    # both stages carry their held-out learning check: DPO on the reward view, KTO on the cost view
    assert {(e["stage"], e.get("view")) for e in rec["train"]["learning"] if e["check"] == "heldout_accuracy"} == {
        ("sacpo-helpful", "reward"), ("sacpo-safe-kto", "cost")}
    model_dir = Path(rec["config"]["runs_dir"]) / rec["run_id"] / "train" / "model"
    assert json.loads((model_dir / "bench_train.json").read_text())["init"] == str(helpful["out"])


def test_can_dual_needs_a_positive_temperature_unless_lambda_is_fixed() -> None:
    """Temperature 0 is in range (a fixed λ samples nothing) but the dual's π_ref samples need it > 0."""
    from harness.training.can_dual import CANDualConfig

    with pytest.raises(BenchError, match="temperature > 0"):
        CANDualConfig(temperature=0.0).validate()
    CANDualConfig(temperature=0.0, lambda_=1.0).validate()
    CANDualConfig().validate()
