"""PPO-Lagrangian math against hand-computed values (docs/methods.md §3.4)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.training.rl_math import (
    clipped_surrogate_loss,
    clipped_value_loss,
    gae,
    kl_shaped_rewards,
    lagrange_update,
    last_token_index,
    masked_mean,
    mix_advantages,
    response_mask,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_three_steps_by_hand():
    # γ = 1, λ_GAE = 0.5, end reward 1 at the last token.
    # t=2: δ = 1 − 0.4 = 0.6                       A = 0.6
    # t=1: δ = 0 + 0.4 − 0.2 = 0.2                  A = 0.2 + 0.5·0.6 = 0.5
    # t=0: δ = 0 + 0.2 − 0.5 = −0.3                 A = −0.3 + 0.5·0.5 = −0.05
    adv, ret = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.2, 0.4]), t([1, 1, 1]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([-0.05, 0.5, 0.6]), atol=1e-6)
    assert torch.allclose(ret, t([0.45, 0.7, 1.0]), atol=1e-6)


def test_gae_four_steps_default_lambda_and_padding():
    # γ = 1, λ_GAE = 0.95 (the upstream defaults); row 2 is row 1 followed by padding that must be ignored.
    # δ3 = 2 − 1.5 = 0.5; δ2 = 0 + 1.5 − 0.3 = 1.2; δ1 = −0.2 + 0.3 − 0.5 = −0.4; δ0 = 0.1 + 0.5 − 1 = −0.4
    # A3 = 0.5; A2 = 1.2 + 0.95·0.5 = 1.675; A1 = −0.4 + 0.95·1.675 = 1.19125; A0 = −0.4 + 0.95·1.19125 = 0.7316875
    rewards = t([0.1, -0.2, 0.0, 2.0, 0.0, 0.0], [0.1, -0.2, 0.0, 2.0, 9.0, -9.0])
    values = t([1.0, 0.5, 0.3, 1.5, 0.0, 0.0], [1.0, 0.5, 0.3, 1.5, 4.0, 4.0])
    mask = t([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0])
    adv, ret = gae(rewards, values, mask)
    expected = t([0.7316875, 1.19125, 1.675, 0.5, 0.0, 0.0])
    assert torch.allclose(adv[0], expected[0], atol=1e-6)
    assert torch.allclose(adv[1], expected[0], atol=1e-6), "padding after the last token leaked into GAE"
    assert torch.allclose(ret[0, :4], expected[0, :4] + values[0, :4], atol=1e-6)
    assert ret[1, 4:].abs().sum() == 0


def test_gae_gamma_discounts_future():
    # one step of discounting: A0 = r0 + γV1 − V0 + γλ(r1 − V1) with γ = 0.5, λ = 1
    adv, _ = gae(t([0.0, 1.0]), t([0.0, 0.0]), t([1, 1]), gamma=0.5, lam=1.0)
    assert torch.allclose(adv, t([0.5, 1.0]))


def test_kl_shaped_streams_by_hand():
    log_probs = t([-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0])
    ref = t([-1.5, -2.0, -2.0], [-1.5, -2.0, -2.0])  # k = [0.5, 0, −1]
    mask = t([1, 1, 1], [1, 1, 0])  # row 2 ends at index 1
    end = torch.tensor([3.0, 2.0])
    r = kl_shaped_rewards(end, log_probs, ref, mask, kl_coef=0.1)
    assert torch.allclose(r, t([-0.05, 0.0, 0.1 + 3.0], [-0.05, 2.0, 0.0]), atol=1e-6)
    c = kl_shaped_rewards(end, log_probs, ref, mask, kl_coef=0.1, stream="cost")
    assert torch.allclose(c, t([0.05, 0.0, -0.1 + 3.0], [0.05, 2.0, 0.0]), atol=1e-6)
    # the KL terms cancel in (r + c): the net KL weight is carried by the mixing, not double counted
    assert torch.allclose((r + c)[0], t([0.0, 0.0, 6.0])[0], atol=1e-6)
    clipped = kl_shaped_rewards(torch.tensor([100.0, -100.0]), log_probs, ref, mask, kl_coef=0.1, clip=50.0)
    assert clipped[0, 2] == 50.0 and clipped[1, 1] == -50.0
    with pytest.raises(ValueError):
        kl_shaped_rewards(end, log_probs, ref, mask, 0.1, stream="penalty")


def test_response_mask_stops_after_first_eos():
    eos = torch.tensor([2, 7])
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 7, 9, 2, 4], [5, 6, 8, 9, 4], [2, 0, 0, 0, 0]])
    assert response_mask(ids, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_last_token_index():
    assert last_token_index(t([1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0])).tolist() == [1, 3, 0]


def test_mix_advantages_by_hand():
    a_r, a_c = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    # λ = 1: (1 − 0.5)/2 = 0.25, (2 + 1)/2 = 1.5;  λ = 4: (1 − 2)/5 = −0.2, (2 + 4)/5 = 1.2;  λ = 0: A^R
    assert torch.allclose(mix_advantages(a_r, a_c, 1.0), torch.tensor([0.25, 1.5]))
    assert torch.allclose(mix_advantages(a_r, a_c, 4.0), torch.tensor([-0.2, 1.2]))
    assert torch.allclose(mix_advantages(a_r, a_c, 0.0), a_r)


def test_clipped_surrogate_loss_by_hand():
    # tokens: (ρ, A) = (1.5, 1), (1.5, −1), (0.5, 1), (0.5, −1), and a masked token with absurd values
    # per-token loss = max(−ρA, −clip(ρ, 0.8, 1.2)·A) = −1.2, 1.5, −0.5, 0.8  -> mean 0.15
    old = torch.zeros(1, 5)
    new = torch.log(t([1.5, 1.5, 0.5, 0.5, 100.0]))
    adv = t([1.0, -1.0, 1.0, -1.0, 1e6])
    mask = t([1, 1, 1, 1, 0])
    new.requires_grad_(True)
    loss = clipped_surrogate_loss(new, old, adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    loss.backward()
    # clipped tokens (ρ outside the trust region on the side the advantage favours) get no gradient
    assert new.grad[0, 0] == 0 and new.grad[0, 3] == 0
    assert new.grad[0, 1] != 0 and new.grad[0, 2] != 0 and new.grad[0, 4] == 0


def test_clipped_value_loss_by_hand():
    # V = 10, V_old = 0, G = 10: (V − G)² = 0 but clip(V) = 5 -> 25 (pessimistic max); V = 1, V_old = 0, G = 0: 1
    values = t([10.0, 1.0, 123.0])
    old = t([0.0, 0.0, 0.0])
    returns = t([10.0, 0.0, 0.0])
    loss = clipped_value_loss(values, old, returns, t([1, 1, 0]), clip=5.0)
    assert loss.item() == pytest.approx(0.5 * (25.0 + 1.0) / 2)


def test_masked_mean_weighs_sequences_equally():
    x = t([1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0])
    mask = t([1, 1, 1, 1], [1, 0, 0, 0])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)


def test_lagrange_update_direction_and_cap():
    # log λ = 0 (λ = 1), lr 0.1: cost above the threshold raises λ, below lowers it, by lr·λ·(Ĉ − d)
    up = lagrange_update(0.0, cost_window_mean=1.0, threshold=0.0, lr=0.1, lambda_max=5.0)
    down = lagrange_update(0.0, cost_window_mean=-1.0, threshold=0.0, lr=0.1, lambda_max=5.0)
    assert up == pytest.approx(0.1) and down == pytest.approx(-0.1)
    assert lagrange_update(0.0, 0.5, threshold=1.0, lr=0.1, lambda_max=5.0) < 0.0  # threshold d is subtracted
    # multiplicative: the same violation moves log λ by lr·λ·(Ĉ − d), larger when λ is larger
    assert lagrange_update(math.log(2.0), 1.0, 0.0, 0.1, None) == pytest.approx(math.log(2.0) + 0.2)
    # cap at λ_max
    capped = lagrange_update(math.log(5.0) - 0.01, cost_window_mean=10.0, threshold=0.0, lr=0.1, lambda_max=5.0)
    assert capped == pytest.approx(math.log(5.0))
    assert lagrange_update(math.log(5.0) - 0.01, 10.0, 0.0, 0.1, None) > math.log(5.0)


def test_gather_log_probs_on_a_batch_against_a_loop():
    """(B, L, V) = (2, 3, 5) random logits: every entry is log_softmax(logits[b, t])[tokens[b, t]]."""
    from harness.training.rl_math import gather_log_probs

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g)
    tokens = torch.tensor([[4, 0, 2], [1, 3, 3]])
    got = gather_log_probs(logits, tokens)
    want = torch.tensor([[torch.log_softmax(logits[b, i], -1)[tokens[b, i]].item() for i in range(3)] for b in range(2)])
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want)


def test_clipped_value_loss_default_clip_and_square():
    """Default clip 5: V moved 6 from V_old toward G is clipped back to 5 (the pessimistic max keeps the larger
    squared error); without clipping the loss is ½·(V − G)², a square, not a cube."""
    values, old, returns = t([[6.0]]), t([[0.0]]), t([[8.0]])
    assert clipped_value_loss(values, old, returns, t([[1]])).item() == pytest.approx(0.5 * 3.0**2)  # max((6−8)², (5−8)²)
    assert clipped_value_loss(t([[1.0]]), t([[0.0]]), t([[3.0]]), t([[1]])).item() == pytest.approx(0.5 * 2.0**2)


def test_clipped_surrogate_default_clip_is_0_2():
    """ρ = e^0.5 ≈ 1.65 with A = +1: the pessimistic loss uses the clipped ratio 1.2 (default ε = 0.2)."""
    loss = clipped_surrogate_loss(t([[0.5]]), t([[0.0]]), t([[1.0]]), t([[1]]))
    assert loss.item() == pytest.approx(-1.2)


def test_kl_shaped_rewards_padding_default_clip_and_score_dtype():
    """Padding after a sequence ended is exactly 0 (never NaN or inf), the default clip is ±50, an end score or
    a mask in another dtype (float64) leaves the stream in the log-probs' dtype, and a bad stream name is named."""
    log_probs, ref = t([-1.0, -2.0, -3.0]), t([-1.5, -1.0, -3.0])  # k = [0.5, −1, 0]: padding often has k = 0
    mask = t([1, 1, 0])
    r = kl_shaped_rewards(torch.tensor([60.0]), log_probs, ref, mask, kl_coef=0.2)
    assert r[0].tolist() == pytest.approx([-0.1, 50.0, 0.0])  # 0.2·1 + 60 clipped to 50; position 2 is padding
    assert r[0, 2].item() == 0.0  # not 0/0
    r64 = kl_shaped_rewards(torch.tensor([2.0], dtype=torch.float64), log_probs, ref, mask, kl_coef=0.2)
    assert r64.dtype == torch.float32 and r64[0].tolist() == pytest.approx([-0.1, 2.2, 0.0])
    assert kl_shaped_rewards(torch.tensor([2.0]), log_probs, ref, mask.double(), kl_coef=0.2).dtype == torch.float32
    with pytest.raises(ValueError, match="^stream must be 'reward' or 'cost', got 'penalty'$"):
        kl_shaped_rewards(torch.tensor([1.0]), log_probs, ref, mask, 0.2, stream="penalty")


def test_clipped_value_loss_overshoot_above_the_return():
    """V = 3 above G = 0 by 3 (V_old = 3, so clipping changes nothing): ½·(V − G)² = 4.5, a square for either sign."""
    assert clipped_value_loss(t([[3.0]]), t([[3.0]]), t([[0.0]]), t([[1]])).item() == pytest.approx(0.5 * 9.0)


def test_last_token_index_on_the_masks_device():
    """The index is built on the mask's own device (here the meta device: no GPU needed to check it)."""
    mask = t([1, 1, 0], [1, 0, 0]).to("meta")
    out = last_token_index(mask)
    assert out.device.type == "meta" and out.shape == (2,)


def test_masked_mean_keeps_the_values_dtype():
    """A float64 (or bool) mask weighs float32 values without promoting the loss: the mean stays float32."""
    x, mask = t([1.0, 2.0, 4.0]), t([1, 1, 0])
    for m in (mask.double(), mask.bool()):
        out = masked_mean(x, m)
        assert out.dtype == torch.float32 and out.item() == pytest.approx(1.5)
