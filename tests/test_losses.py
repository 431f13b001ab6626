"""Hand-computed checks for every function in harness/training/losses.py (no models, milliseconds)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.training.losses import (
    EllipticalBonus,
    dpo_loss,
    dual_update,
    elliptical_bonus,
    online_bonus_margin,
    pddpo_online_loss,
    pddpo_stage2_loss,
    ridge_inverse,
    sequence_logps,
    sherman_morrison_update,
    stage2_beta,
)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_sequence_logps_masks_prompt_and_shifts() -> None:
    # vocab 3, sequence [prompt=2, resp=0, resp(EOS)=1]; only tokens at positions 1 and 2 count.
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[2, 0, 1]])
    mask = torch.tensor([[0, 1, 1]])

    def log_softmax(row: list[float], i: int) -> float:
        return row[i] - math.log(sum(math.exp(v) for v in row))

    expected = log_softmax([1.0, 2.0, 0.0], 0) + log_softmax([0.0, 0.0, 3.0], 1)
    got = sequence_logps(logits, labels, mask)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # the prompt token (position 0) never contributes, the last position's logits are never used
    mask2 = torch.tensor([[0, 0, 1]])
    assert sequence_logps(logits, labels, mask2).item() == pytest.approx(log_softmax([0.0, 0.0, 3.0], 1), abs=1e-6)


def test_sequence_logps_ignores_padding_label_values() -> None:
    logits = torch.zeros(1, 4, 5)
    labels = torch.tensor([[1, 2, -100, -100]])  # padding labels are masked out and must not crash gather
    mask = torch.tensor([[0, 1, 0, 0]])
    assert sequence_logps(logits, labels, mask).item() == pytest.approx(-math.log(5), abs=1e-6)


def test_dpo_loss_hand_computed() -> None:
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    beta = 0.5
    # h_w = 1, h_l = -0.5 -> logit = 0.5 * 1.5 = 0.75
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(-math.log(_sigmoid(0.75)), abs=1e-6)
    assert cr.item() == pytest.approx(0.5) and rj.item() == pytest.approx(-0.25)
    # an additive margin goes inside the sigmoid
    loss_m, _, _ = dpo_loss(pc, pr, rc, rr, beta, margin=torch.tensor([-2.0]))
    assert loss_m.item() == pytest.approx(-math.log(_sigmoid(-1.25)), abs=1e-6)
    # zero margin == no margin; gradients flow to the policy only
    pc.requires_grad_(True)
    loss0, _, _ = dpo_loss(pc, pr, rc, rr, beta, margin=torch.zeros(1))
    loss0.sum().backward()
    assert loss0.item() == pytest.approx(loss.item())
    assert pc.grad.item() == pytest.approx(-beta * (1 - _sigmoid(0.75)), abs=1e-6)


def test_pddpo_stage2_uses_beta_over_lambda_and_guards_zero() -> None:
    ps, pu, rs, ru = torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-1.0])
    # h_s = 1, h_u = -1 ; beta/lam = 0.1/4 = 0.025 -> logit 0.05
    loss, _, _ = pddpo_stage2_loss(ps, pu, rs, ru, beta=0.1, lam=4.0)
    assert loss.item() == pytest.approx(-math.log(_sigmoid(0.05)), abs=1e-7)
    assert stage2_beta(0.1, 4.0) == pytest.approx(0.025)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="π_r̂"):
            pddpo_stage2_loss(ps, pu, rs, ru, beta=0.1, lam=bad)


def test_online_loss_reconstruction_hand_computed() -> None:
    ps, pu, rs, ru = torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-1.0])
    lam, beta = 2.0, 1.0
    br_s, br_u, bc_s, bc_u = torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([0.2]), torch.tensor([0.5])
    # B_u = 0.3 + 2*0.5 = 1.3, B_s = 0.1 + 2*0.2 = 0.5 -> margin (1.3 - 0.5)/2 = 0.4
    margin = online_bonus_margin(lam, br_s, br_u, bc_s, bc_u)
    assert margin.item() == pytest.approx(0.4)
    # stage-2 logit (beta/lam)(h_s - h_u) = 0.5 * 2 = 1.0 ; total 1.4
    loss, _, _ = pddpo_online_loss(ps, pu, rs, ru, beta, lam, br_s, br_u, bc_s, bc_u)
    assert loss.item() == pytest.approx(-math.log(_sigmoid(1.4)), abs=1e-6)
    z = torch.zeros(1)
    loss0, _, _ = pddpo_online_loss(ps, pu, rs, ru, beta, lam, z, z, z, z)
    assert loss0.item() == pytest.approx(pddpo_stage2_loss(ps, pu, rs, ru, beta, lam)[0].item())
    with pytest.raises(ValueError):
        online_bonus_margin(0.0, z, z, z, z)


def test_dual_update_projects() -> None:
    assert dual_update(1.0, cost_estimate=0.5, threshold=0.2, eta=10.0, lam_max=20.0) == pytest.approx(4.0)
    assert dual_update(1.0, cost_estimate=0.0, threshold=0.2, eta=10.0, lam_max=20.0) == 0.0  # projected at 0
    assert dual_update(15.0, cost_estimate=1.0, threshold=0.2, eta=10.0, lam_max=20.0) == 20.0  # capped
    assert dual_update(3.0, cost_estimate=0.2, threshold=0.2, eta=10.0, lam_max=20.0) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        dual_update(1.0, 0.5, 0.2, eta=-1.0, lam_max=5.0)


def test_sherman_morrison_matches_direct_inverse_and_bonus() -> None:
    torch.manual_seed(0)
    d, kappa = 4, 0.5
    vs = torch.randn(6, d, dtype=torch.float64)
    inv = ridge_inverse(d, kappa)
    assert torch.allclose(inv, torch.eye(d, dtype=torch.float64) * 2.0)
    for v in vs:
        inv = sherman_morrison_update(inv, v)
    direct = torch.linalg.inv(kappa * torch.eye(d, dtype=torch.float64) + vs.T @ vs)
    assert torch.allclose(inv, direct, atol=1e-10)
    phi = torch.randn(3, d, dtype=torch.float64)
    expected = torch.stack([0.7 * torch.sqrt(p @ direct @ p) for p in phi])
    assert torch.allclose(elliptical_bonus(phi, inv, alpha=0.7), expected, atol=1e-10)
    with pytest.raises(ValueError):
        ridge_inverse(d, 0.0)


def test_elliptical_bonus_hand_computed_and_shrinks_with_data() -> None:
    # Σ = 1*I + v vᵀ with v = (1, 0): Σ⁻¹ = diag(1/2, 1); φ = (1, 1) -> sqrt(1/2 + 1)
    eb = EllipticalBonus(dim=2, kappa=1.0, alpha=2.0)
    phi = torch.tensor([[1.0, 1.0]])
    before = eb(phi).item()
    assert before == pytest.approx(2.0 * math.sqrt(2.0))
    eb.add_pairs(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert eb.count == 1
    assert eb(phi).item() == pytest.approx(2.0 * math.sqrt(1.5))
    assert eb(phi).item() < before


def test_sequence_logps_on_a_batch_against_a_loop() -> None:
    """B = 2, T = 5, V = 7 random logits, different masks per row: the shifted, masked sum token by token."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[3, 6, 0, 2, 5], [1, 1, 4, 6, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    want = [sum(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]].item() for t in range(1, 5) if mask[b, t]) for b in range(2)]
    got = sequence_logps(logits, labels, mask)
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.tensor(want))


def test_elliptical_bonus_folds_in_pair_differences() -> None:
    """Σ = κI + Σ (φ_a − φ_b)(φ_a − φ_b)ᵀ: a pair of identical responses adds nothing, a pair differing by e₁ shrinks
    the bonus along e₁ only; `count` counts every folded pair."""
    from harness.training.losses import EllipticalBonus

    bonus = EllipticalBonus(3, kappa=2.0, alpha=1.0)
    same = torch.tensor([[1.0, 1.0, 0.0]])
    bonus.add_pairs(same, same)
    torch.testing.assert_close(bonus.inv, torch.eye(3, dtype=torch.float64) / 2.0)
    bonus.add_pairs(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert bonus.count == 3
    e = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(bonus(e), torch.tensor([1 / math.sqrt(2.0 + 2.0), 1 / math.sqrt(2.0), 1 / math.sqrt(2.0)], dtype=torch.float64))


def test_online_bonus_margin_accepts_any_positive_lambda() -> None:
    one = torch.tensor([1.0])
    assert online_bonus_margin(0.5, 0 * one, one, 0 * one, one).item() == pytest.approx((1.0 + 0.5) / 0.5)
    with pytest.raises(ValueError, match=r"O-PD-DPO bonus margin needs λ > 0 \(got 0.0\)"):
        online_bonus_margin(0.0, one, one, one, one)


def test_dpo_loss_returns_beta_times_each_log_ratio_and_keeps_the_logits_dtype() -> None:
    """Rewards are β·h (h_w = 2, h_l = −3 at β = 0.5: 1.0 and −1.5); a float64 margin is cast to the float32 logits."""
    loss, chosen, rejected = dpo_loss(torch.tensor([-1.0]), torch.tensor([-6.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), 0.5,
                                      margin=torch.tensor([0.5], dtype=torch.float64))
    assert chosen.item() == pytest.approx(1.0) and rejected.item() == pytest.approx(-1.5)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(-math.log(_sigmoid(0.5 * 5.0 + 0.5)), abs=1e-6)


def test_dual_update_accepts_the_boundaries_and_names_bad_values() -> None:
    """η = 0 freezes λ, η < 1 is a valid step; Λ_max = 0 pins λ at 0, Λ_max < 1 caps there; negatives are named."""
    assert dual_update(2.0, cost_estimate=0.5, threshold=0.2, eta=0.0, lam_max=5.0) == 2.0
    assert dual_update(2.0, cost_estimate=0.5, threshold=0.2, eta=0.5, lam_max=5.0) == pytest.approx(2.15)
    assert dual_update(2.0, cost_estimate=0.5, threshold=0.2, eta=1.0, lam_max=0.0) == 0.0
    assert dual_update(0.1, cost_estimate=0.5, threshold=0.2, eta=1.0, lam_max=0.5) == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"^dual_update needs eta >= 0 and lam_max >= 0 \(got eta=1.0, lam_max=-1.0\)$"):
        dual_update(1.0, 0.5, 0.2, eta=1.0, lam_max=-1.0)
    with pytest.raises(ValueError, match=r"^ridge κ must be > 0 \(got -1.0\)$"):
        ridge_inverse(2, -1.0)


def test_sherman_morrison_casts_v_to_the_inverse_dtype() -> None:
    """A float32 feature difference folds into the float64 Σ⁻¹: (I + e₁e₁ᵀ)⁻¹ = diag(1/2, 1)."""
    inv = sherman_morrison_update(ridge_inverse(2, 1.0), torch.tensor([1.0, 0.0]))
    assert inv.dtype == torch.float64 and inv.tolist() == [[0.5, 0.0], [0.0, 1.0]]


def test_sequence_logps_stay_float32_whatever_the_mask_dtype() -> None:
    """Uniform logits over V = 4: each kept token is log ¼; a float64 mask does not promote the float32 sum."""
    logits, labels = torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]])
    got = sequence_logps(logits, labels, torch.tensor([[0, 1, 1]], dtype=torch.float64))
    assert got.dtype == torch.float32 and got.item() == pytest.approx(2 * math.log(0.25))


# -- chunked LM-head log-probs (no full logits) ----------------------------------------------------------------------


def _head_case(seed: int, bias: bool):
    """Random (B=3, T=7, H=5) hidden states, a V=11 head, labels and a response mask with prompt and padding gaps."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 7, 5, generator=g, dtype=torch.float64).float().requires_grad_()
    weight = torch.randn(11, 5, generator=g).requires_grad_()
    b = torch.randn(11, generator=g).requires_grad_() if bias else None
    labels = torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0, 0]])
    return hidden, weight, b, labels, mask


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 64])  # 3 and 4 divide neither the 13 scored rows nor T
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_sequence_logps_values_and_grads_equal_full_logits(chunk: int, bias: bool) -> None:
    from harness.training.losses import chunked_sequence_logps

    hidden, weight, b, labels, mask = _head_case(chunk, bias)
    weights = torch.tensor([0.7, -1.3, 2.0])  # a non-uniform upstream gradient per sequence
    logits = hidden @ weight.t() + (b if bias else 0)
    full = sequence_logps(logits, labels, mask)
    full_grads = torch.autograd.grad((full * weights).sum(), [hidden, weight] + ([b] if bias else []))
    got = chunked_sequence_logps(hidden, weight, b, labels, mask, chunk=chunk)
    got_grads = torch.autograd.grad((got * weights).sum(), [hidden, weight] + ([b] if bias else []))
    torch.testing.assert_close(got, full, atol=1e-6, rtol=0)
    for ours, ref in zip(got_grads, full_grads):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert got_grads[0][:, -1].abs().max() == 0  # the last position predicts nothing: no gradient reaches it


def test_chunked_token_logps_frozen_head_stats_and_empty_mask() -> None:
    from harness.training.losses import chunked_token_logps

    hidden, weight, _, labels, mask = _head_case(5, False)
    weight = weight.detach()  # a frozen head (LoRA): no weight gradient is asked for or built
    logp, entropy, mean_logit, top1 = chunked_token_logps(hidden, weight, None, labels, mask, chunk=2, stats=True)
    log_p = torch.log_softmax(hidden @ weight.t(), -1)
    on = mask.bool()
    torch.testing.assert_close(logp[on], log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)[on], atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy[on], -(log_p.exp() * log_p).sum(-1)[on], atol=1e-6, rtol=0)
    torch.testing.assert_close(mean_logit[on], (hidden @ weight.t()).mean(-1)[on], atol=1e-6, rtol=0)
    assert torch.equal(top1[on], (log_p.argmax(-1) == labels)[on]) and not top1[~on].any()
    assert (logp[~on] == 0).all() and not entropy.requires_grad
    (grad,) = torch.autograd.grad(logp.sum(), [hidden])
    assert grad[~on].abs().max() == 0 and grad[on].abs().min() > 0
    # nothing scored: a differentiable zero, not a failure (an all-prompt micro-batch)
    empty = chunked_token_logps(hidden, weight, None, labels, torch.zeros_like(mask))[0]
    assert empty.abs().max() == 0 and torch.autograd.grad(empty.sum(), [hidden])[0].abs().max() == 0
