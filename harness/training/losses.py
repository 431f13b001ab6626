"""DPO-family and dual math, in one place, so every method (and the tabular-bandit test) runs the same code.

Conventions (docs/methods.md §0): sequence log-probs are summed over **response tokens only** (prompt masked,
EOS included); `chosen` is the preferred response (for cost pairs: the **safer** one). Everything here is plain
torch on tensors; the TRL wrapper in `harness/training/dpo.py` feeds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# -- log-probabilities --------------------------------------------------------------------------------------------


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over the response tokens of each sequence.

    Args:
        logits: (B, T, V) next-token logits as a causal LM returns them (position t predicts token t+1).
        labels: (B, T) the token ids of the full sequence (prompt + response), i.e. the model's `input_ids`.
        mask: (B, T) 1 on response tokens (EOS included), 0 on prompt and padding; aligned with `labels`.

    Returns:
        (B,) summed log-probabilities. The shift is done here: logits[:, t] scores labels[:, t + 1].
    """
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    keep = mask[:, 1:].to(logits.dtype)
    token_logps = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return (token_logps * keep).sum(-1)


# -- DPO losses ---------------------------------------------------------------------------------------------------


def dpo_loss(
    pol_chosen: torch.Tensor,
    pol_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    margin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO: `−log σ(β·[h(y_w) − h(y_l)] + margin)` with `h = log π_θ − log π_ref`.

    `margin` is a per-pair additive term inside the sigmoid (SafeDPO passes `−(u_l − u_w)·Δ`, O-PD-DPO its
    exploration bonus); `None` is plain DPO. Returns (loss per pair, chosen rewards, rejected rewards); the rewards
    are the implicit `β·h`, detached, as TRL logs them.
    """
    chosen_logratio = pol_chosen - ref_chosen
    rejected_logratio = pol_rejected - ref_rejected
    logits = beta * (chosen_logratio - rejected_logratio)
    if margin is not None:
        logits = logits + margin.to(logits.dtype)
    loss = -F.logsigmoid(logits)
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def stage2_beta(beta: float, lam: float) -> float:
    """PD-DPO's stage-2 temperature β/λ (docs/methods.md §2.3). λ ≤ 0 has no finite temperature: the primal solution
    is π_r̂ itself, so callers must skip training instead (§2.4 "λ = 0 guard")."""
    if not lam > 0:
        raise ValueError(f"PD-DPO stage 2 needs λ > 0 (got {lam}); at λ = 0 the solution is π_r̂: skip training")
    return beta / lam


def pddpo_stage2_loss(
    pol_safe: torch.Tensor,
    pol_unsafe: torch.Tensor,
    rhat_safe: torch.Tensor,
    rhat_unsafe: torch.Tensor,
    beta: float,
    lam: float,
    margin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PD-DPO primal step: `L_DPO(θ; π_r̂, β/λ, D_c)` on cost pairs (chosen = safer), reference = π_r̂.

    Minimiser: π ∝ π_r̂·exp(−λc/β) = π*_λ (docs/methods.md §2.3). Raises for λ ≤ 0 (see `stage2_beta`).
    """
    return dpo_loss(pol_safe, pol_unsafe, rhat_safe, rhat_unsafe, stage2_beta(beta, lam), margin)


def online_bonus_margin(
    lam: float,
    bonus_r_safe: torch.Tensor,
    bonus_r_unsafe: torch.Tensor,
    bonus_c_safe: torch.Tensor,
    bonus_c_unsafe: torch.Tensor,
) -> torch.Tensor:
    """O-PD-DPO exploration term `(B(x,y_u) − B(x,y_s))/λ` with `B = b_r + λ·b_c`.

    RECONSTRUCTION (docs/methods.md §2.8, [derived]), not the paper's published loss: substituting the optimistic
    target π_ref·exp((r̂ + b_r − λ(ĉ − b_c))/β) into the Bradley–Terry cost likelihood gives
    ĉ(y_u) − ĉ(y_s) = (β/λ)[h^{π_r̂}(y_s) − h^{π_r̂}(y_u)] + (B(y_u) − B(y_s))/λ.
    """
    if not lam > 0:
        raise ValueError(f"O-PD-DPO bonus margin needs λ > 0 (got {lam})")
    b_unsafe = bonus_r_unsafe + lam * bonus_c_unsafe
    b_safe = bonus_r_safe + lam * bonus_c_safe
    return (b_unsafe - b_safe) / lam


def pddpo_online_loss(
    pol_safe: torch.Tensor,
    pol_unsafe: torch.Tensor,
    rhat_safe: torch.Tensor,
    rhat_unsafe: torch.Tensor,
    beta: float,
    lam: float,
    bonus_r_safe: torch.Tensor,
    bonus_r_unsafe: torch.Tensor,
    bonus_c_safe: torch.Tensor,
    bonus_c_unsafe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bonus-augmented stage-2 loss of O-PD-DPO. RECONSTRUCTION (docs/methods.md §2.8), re-derive before relying on it:

    `−log σ( (β/λ)·[h^{π_r̂}(y_s) − h^{π_r̂}(y_u)] + (B(y_u) − B(y_s))/λ )`, `B = b_r + λ·b_c`.
    """
    margin = online_bonus_margin(lam, bonus_r_safe, bonus_r_unsafe, bonus_c_safe, bonus_c_unsafe)
    return pddpo_stage2_loss(pol_safe, pol_unsafe, rhat_safe, rhat_unsafe, beta, lam, margin)


# -- dual ---------------------------------------------------------------------------------------------------------


def dual_update(lam: float, cost_estimate: float, threshold: float, eta: float, lam_max: float) -> float:
    """Projected subgradient step on the dual: `λ ← clip(λ + η·(Ĉ − b), 0, Λ_max)` (docs/methods.md §2.4).

    `Ĉ − b` is −D'(λ), so this is gradient descent on the convex dual D; λ rises while the constraint is violated.
    """
    if eta < 0 or lam_max < 0:
        raise ValueError(f"dual_update needs eta >= 0 and lam_max >= 0 (got eta={eta}, lam_max={lam_max})")
    return float(min(max(lam + eta * (cost_estimate - threshold), 0.0), lam_max))


# -- elliptical exploration bonus (O-PD-DPO) -----------------------------------------------------------------------


def ridge_inverse(dim: int, kappa: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Σ⁻¹ for Σ = κ·I (no data yet). κ > 0 keeps Σ invertible (docs/methods.md §2.10.9)."""
    if not kappa > 0:
        raise ValueError(f"ridge κ must be > 0 (got {kappa})")
    return torch.eye(dim, dtype=dtype) / kappa


def sherman_morrison_update(inv: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(Σ + v vᵀ)⁻¹ from Σ⁻¹ in O(d²): `Σ⁻¹ − (Σ⁻¹v)(Σ⁻¹v)ᵀ / (1 + vᵀΣ⁻¹v)` (Σ symmetric)."""
    v = v.to(inv.dtype).reshape(-1)
    u = inv @ v
    return inv - torch.outer(u, u) / (1.0 + v @ u)


def elliptical_bonus(phi: torch.Tensor, inv: torch.Tensor, alpha: float) -> torch.Tensor:
    """`α·sqrt(φᵀ Σ⁻¹ φ)` for each row of `phi` (N, d) -> (N,)."""
    phi = phi.to(inv.dtype)
    quad = ((phi @ inv) * phi).sum(-1).clamp(min=0.0)
    return alpha * quad.sqrt()


class EllipticalBonus:
    """Running Σ⁻¹ over pair feature differences, `Σ = κI + Σ_pairs (φ1 − φ2)(φ1 − φ2)ᵀ` (docs/methods.md §2.8)."""

    def __init__(self, dim: int, kappa: float, alpha: float):
        self.inv = ridge_inverse(dim, kappa)
        self.alpha = alpha
        self.count = 0

    def add_pairs(self, phi_a: torch.Tensor, phi_b: torch.Tensor) -> None:
        """Fold in pairs (rows of `phi_a` vs `phi_b`), one Sherman–Morrison update each."""
        for diff in (phi_a - phi_b).to(self.inv.dtype):
            self.inv = sherman_morrison_update(self.inv, diff)
            self.count += 1

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        return elliptical_bonus(phi, self.inv, self.alpha)

