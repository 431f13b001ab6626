"""LLM-free correctness test of PD-DPO's math on a tabular constrained bandit (docs/methods.md §1, §2.3-2.5).

3 prompts × 4 responses with known reward r and cost c, a fixed reference table π_ref, and a softmax-table
policy. Preference data is every response pair with its *exact* Bradley–Terry probability (σ(r_i − r_j) for
reward pairs, σ(c_j − c_i) for "i safer than j"), so the expected DPO losses have the closed-form minimisers of
§1. The losses and the dual step are the same `harness.training.losses` functions the methods use.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.training.losses import dpo_loss, dual_update, pddpo_stage2_loss

BETA = 0.5
R = torch.tensor([[1.0, 0.8, 0.2, 0.0], [0.9, 0.5, 0.4, 0.1], [1.2, 0.3, 0.6, 0.0]], dtype=torch.float64)
C = torch.tensor([[1.0, 0.6, 0.1, 0.0], [0.8, 0.9, 0.0, 0.2], [1.0, 0.2, 0.5, 0.1]], dtype=torch.float64)
REF = torch.log_softmax(torch.tensor([[0.2, 0.0, -0.3, 0.1], [0.0, 0.4, 0.0, -0.2], [-0.1, 0.1, 0.3, 0.0]], dtype=torch.float64), -1)
B = 0.3  # constraint E[c] <= b; E_{π*_0}[c] ≈ 0.71 > b, so λ* > 0
I, J = map(list, zip(*itertools.combinations(range(R.shape[1]), 2)))


def closed_form(lam: float) -> torch.Tensor:
    """π*_λ ∝ π_ref·exp((r − λc)/β) (docs/methods.md §1)."""
    return torch.softmax(REF + (R - lam * C) / BETA, dim=-1)


def expected(pi: torch.Tensor, values: torch.Tensor) -> float:
    return float((pi * values).sum(-1).mean())  # prompts uniform


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p - q).abs().sum(-1).max())  # worst prompt


def bt_loss(loss_fn, logp: torch.Tensor, ref: torch.Tensor, prob_i_wins: torch.Tensor) -> torch.Tensor:
    """Expected pairwise loss: each unordered pair appears as (i ≻ j) with its BT probability, else (j ≻ i)."""
    fwd = loss_fn(logp[:, I], logp[:, J], ref[:, I], ref[:, J])[0]
    bwd = loss_fn(logp[:, J], logp[:, I], ref[:, J], ref[:, I])[0]
    return (prob_i_wins * fwd + (1 - prob_i_wins) * bwd).mean()


def solve(loss_fn, ref: torch.Tensor, prob_i_wins: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """Minimise the (convex in the logits) expected loss over a softmax table; returns log π."""
    theta = init.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bt_loss(loss_fn, torch.log_softmax(theta, -1), ref, prob_i_wins)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), -1)


def stage1() -> torch.Tensor:
    """π_r̂ = argmin L_DPO(θ; π_ref, β, D_r): reward pairs, chosen = higher reward."""
    p_reward = torch.sigmoid(R[:, I] - R[:, J])
    return solve(lambda *a: dpo_loss(*a, beta=BETA), REF, p_reward, REF.clone())


def stage2(rhat: torch.Tensor, lam: float, init: torch.Tensor) -> torch.Tensor:
    """π_λ = argmin L_DPO(θ; π_r̂, β/λ, D_c): cost pairs, chosen = safer. λ = 0 -> π_r̂ (no training)."""
    if lam <= 0:
        return rhat.clone()
    p_safer = torch.sigmoid(C[:, J] - C[:, I])  # P(i safer than j) = σ(c_j − c_i)
    return solve(lambda *a: pddpo_stage2_loss(*a, beta=BETA, lam=lam), rhat, p_safer, init)


def lambda_star(b: float) -> float:
    """argmin_{λ≥0} D(λ): bisection on D'(λ) = b − E_{π*_λ}[c] (monotone increasing in λ)."""
    if expected(closed_form(0.0), C) <= b:
        return 0.0
    lo, hi = 0.0, 1.0
    while expected(closed_form(hi), C) > b:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected(closed_form(mid), C) > b else (lo, mid)
    return 0.5 * (lo + hi)


def dual_loop(b: float, lam: float, eta: float, iters: int) -> tuple[float, torch.Tensor, list[float]]:
    rhat = stage1()
    logp, lams = rhat.clone(), []
    for _ in range(iters):
        logp = stage2(rhat, lam, init=logp)  # warm start from π_{k−1}; reference stays π_r̂
        lams.append(lam)
        lam = dual_update(lam, expected(logp.exp(), C), b, eta, lam_max=20.0)  # exact expected cost of π_k
    return lam, logp, lams


# Tolerances: LBFGS on these convex tables reaches TV ~1e-7 and λ within ~1e-6 (relative) of the closed form; the
# bounds below leave ~100x headroom and still fail on any real bias (a wrong β/λ, reference or pair orientation).
TV_TOL = 1e-5
LAMBDA_RTOL = 1e-4


def test_stage1_recovers_reward_optimum() -> None:
    assert tv(stage1().exp(), closed_form(0.0)) < TV_TOL


@pytest.mark.parametrize("lam", [0.5, 2.0, 5.0])
def test_stage2_at_fixed_lambda_matches_closed_form(lam: float) -> None:
    rhat = stage1()
    pi = stage2(rhat, lam, init=rhat).exp()
    assert tv(pi, closed_form(lam)) < TV_TOL
    # and it is not trivially π_r̂: the cost term moved it
    assert tv(pi, rhat.exp()) > 0.05


def test_dual_loop_finds_lambda_star() -> None:
    lam_star = lambda_star(B)
    assert lam_star > 0.5  # the constraint binds
    lam, logp, lams = dual_loop(B, lam=0.2, eta=3.0, iters=30)
    pi, opt = logp.exp(), closed_form(lam_star)
    assert abs(lam - lam_star) <= LAMBDA_RTOL * lam_star, (lam, lam_star, lams)
    assert tv(pi, opt) < TV_TOL
    assert abs(expected(pi, C) - B) < 1e-5  # the constraint is active at λ* > 0: E[c] = b
    assert abs(expected(pi, R) - expected(opt, R)) < 1e-5
    assert lams[1] > lams[0]  # constraint violated at the start: λ rises


def test_dual_loop_projects_to_zero_when_slack() -> None:
    slack = expected(closed_form(0.0), C) + 0.05
    assert lambda_star(slack) == 0.0
    lam, logp, _ = dual_loop(slack, lam=1.0, eta=3.0, iters=10)
    assert lam == 0.0
    assert tv(logp.exp(), closed_form(0.0)) < TV_TOL  # λ = 0 -> π_k = π_r̂ without training
