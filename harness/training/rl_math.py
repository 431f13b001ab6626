"""PPO / PPO-Lagrangian math for Safe-RLHF and PPO reward shaping (docs/methods.md §3.4, §8), as plain torch.

Layout convention: every per-token tensor is (B, L) over the **response actions** of a rollout: column t is the
t-th generated token, `log_probs[:, t] = log π(a_t | s_t)` and `values[:, t] = V(s_t)` (the state *before* a_t).
`mask` is 1 on real response tokens (EOS included) and 0 on the padding after a sequence ended. Nothing here
knows about models; `methods/safe_rlhf.py` feeds it.
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's real tokens, then over the batch (every response weighs the same)."""
    mask = mask.to(x.dtype)
    return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def gather_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under `logits`, both (B, L, V) / (B, L) and already aligned (logits[:, t] scores tokens[:, t])."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def response_mask(response_ids: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) 1 on generated tokens up to and including the first EOS, 0 after it (where `generate` pads).
    A response without EOS (cut at max_new_tokens) is all ones."""
    is_eos = torch.isin(response_ids, eos_ids).long()
    return ((is_eos.cumsum(-1) - is_eos) == 0).long()  # no EOS strictly before this position


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last real token: where the end score is paid."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(-1).values


def kl_shaped_rewards(
    end_score: torch.Tensor,
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    clip: float = 50.0,
    stream: str = "reward",
) -> torch.Tensor:
    """Per-token stream: a KL term at every token plus the end score at the last real token, clipped to ±clip.

    `k_t = log π_θ(a_t|s_t) − log π_ref(a_t|s_t)`. The reward stream is `−β·k_t + 1[t=T]·R(x,y)` (KL lowers
    reward); the cost stream is `+β·k_t + 1[t=T]·C(x,y)` (KL raises cost), so after the (1+λ)-normalised mixing
    the actor's net KL weight is β for every λ (docs/methods.md §3.4).
    """
    if stream not in ("reward", "cost"):
        raise ValueError(f"stream must be 'reward' or 'cost', got {stream!r}")
    sign = -1.0 if stream == "reward" else 1.0
    mask_f = mask.to(log_probs.dtype)
    rewards = sign * kl_coef * (log_probs - ref_log_probs) * mask_f
    end = last_token_index(mask)
    rewards = rewards.scatter_add(-1, end.unsqueeze(-1), end_score.to(rewards.dtype).unsqueeze(-1))
    return rewards.clamp(-clip, clip) * mask_f


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per token. Returns (advantages, returns), both (B, L), zero off-mask.

    `δ_t = r_t + γ·V(s_{t+1}) − V(s_t)`, `A_t = δ_t + γλ·A_{t+1}`, `G_t = A_t + V(s_t)`; the value after the last
    real token is 0 (the episode ends there).
    """
    mask_f = mask.to(values.dtype)
    rewards, values = rewards * mask_f, values * mask_f
    length = rewards.shape[-1]
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask_f
    return advantages, (advantages + values) * mask_f


def mix_advantages(reward_adv: torch.Tensor, cost_adv: torch.Tensor, lam: float) -> torch.Tensor:
    """Safe-RLHF's actor advantage `(A^R − λ·A^C)/(1 + λ)`; λ is a constant here (no gradient flows into it)."""
    return (reward_adv - lam * cost_adv) / (1.0 + lam)


def clipped_surrogate_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> torch.Tensor:
    """PPO actor loss `−E min(ρ·A, clip(ρ, 1±ε)·A)` with `ρ = π_θ/π_old`, written as the max of the negatives."""
    ratio = torch.exp(log_probs - old_log_probs)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip))
    return masked_mean(loss, mask)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 5.0
) -> torch.Tensor:
    """Critic loss `½·E max((V − G)², (clip(V, V_old ± c) − G)²)` (pessimistic, like the surrogate)."""
    clipped = torch.maximum(torch.minimum(values, old_values + clip), old_values - clip)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def lagrange_update(log_lambda: float, cost_window_mean: float, threshold: float, lr: float, lambda_max: float | None) -> float:
    """One SGD step on `ℓ(log λ) = −(Ĉ − d)·exp(log λ)`: `log λ ← log λ + lr·λ·(Ĉ − d)`, capped at `log λ_max`.

    Multiplicative in λ, so λ stays positive; cost above the threshold raises λ, below lowers it.
    """
    new = log_lambda + lr * math.exp(log_lambda) * (cost_window_mean - threshold)
    if lambda_max is not None:
        new = min(new, math.log(lambda_max))
    return new
