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


# Tokens per LM-head chunk: the transient is ~3 chunk × vocab fp32 tiles in backward (256 × 49,152 × 4 B = 50 MB
# each for SmolLM2), against 8 × 192 × 49,152 × 4 B = 0.3 GB per copy of a batch's full logits.
LOGP_CHUNK_TOKENS = 256


class ChunkedHeadLogps(torch.autograd.Function):
    """log p(target) of `hidden @ weight.T + bias` row by row, `chunk` rows at a time, never holding more than one
    (chunk, V) logits tile; backward recomputes each tile (Liger's fused-linear idea, plain torch for CPU).

    forward(hidden (N, H), weight (V, H), bias (V,) | None, targets (N,), chunk, stats) ->
    (log p (N,), entropy (N,), mean logit (N,), target is the first argmax (N,) bool), all in fp32. The last three
    are computed only with `stats` (else None) and carry no gradient (TRL logs them). Gradients flow to `hidden`,
    `weight` and `bias` only where autograd asks for them (a frozen LoRA head gets none), accumulated in fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, stats):
        ctx.set_materialize_grads(False)
        w = weight.float()  # no copy for an fp32 head
        b = None if bias is None else bias.float()
        n = hidden.shape[0]
        logp, lse = hidden.new_empty(n, dtype=torch.float32), hidden.new_empty(n, dtype=torch.float32)
        entropy = mean_logit = top1 = None
        if stats:
            entropy, mean_logit = torch.empty_like(logp), torch.empty_like(logp)
            top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        for s in range(0, n, chunk):
            z = hidden[s : s + chunk].float() @ w.t()  # (c, V)
            if b is not None:
                z += b
            lse[s : s + chunk] = z.logsumexp(-1)
            logp[s : s + chunk] = z.gather(-1, targets[s : s + chunk].unsqueeze(-1)).squeeze(-1) - lse[s : s + chunk]
            if stats:
                mean_logit[s : s + chunk] = z.mean(-1)
                top1[s : s + chunk] = z.argmax(-1) == targets[s : s + chunk]
                z -= lse[s : s + chunk, None]  # log p, in place
                entropy[s : s + chunk] = -(z.exp() * z).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk = chunk
        if stats:
            ctx.mark_non_differentiable(entropy, mean_logit, top1)
        return logp, entropy, mean_logit, top1

    @staticmethod
    def backward(ctx, grad_logp, *_):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_logp is None or not (need_h or need_w or need_b):
            return None, None, None, None, None, None
        w = weight.float()
        b = None if bias is None else bias.float()
        g = grad_logp.float()
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk].float()
            z = h @ w.t()
            if b is not None:
                z += b
            # d log p(t) / dz = onehot(t) - softmax(z), scaled by the incoming gradient, built in place in the tile
            z.sub_(lse[s : s + ctx.chunk, None]).exp_().mul_(-g[s : s + ctx.chunk, None])
            z.scatter_add_(-1, targets[s : s + ctx.chunk, None], g[s : s + ctx.chunk, None])
            if need_h:
                grad_h[s : s + ctx.chunk] = z @ w
            if need_w:
                grad_w.addmm_(z.t(), h)
            if need_b:
                grad_b += z.sum(0)
        return (None if grad_h is None else grad_h.to(hidden.dtype), None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None)


def chunked_token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                        mask: torch.Tensor, chunk: int = LOGP_CHUNK_TOKENS, stats: bool = False):
    """Per-token log p(targets) under the LM head `(weight, bias)` without building the (B, T, V) logits.

    Args:
        hidden: (B, T, H) final hidden states, already aligned: `hidden[:, t]` predicts `targets[:, t]` (shift first).
        weight, bias: the LM head, (V, H) and (V,) or None.
        targets: (B, T) token ids; only positions with `mask` are read.
        mask: (B, T) bool or 0/1: the positions to score; only those rows reach the head.

    Returns:
        (log p, entropy, mean logit, is_top1), each (B, T) and 0 (False) off the mask; the last three are None
        unless `stats` (and carry no gradient). fp32.
    """
    keep = mask.bool()
    rows, h = keep.nonzero(as_tuple=True), hidden[keep]  # (N, H): the scored positions only
    outs = ChunkedHeadLogps.apply(h, weight, bias, targets[keep], int(chunk), stats)

    def spread(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        # index_put keeps the result connected to `hidden` even when no position is scored
        return x.new_zeros(keep.shape).index_put(rows, x)
    return tuple(spread(x) for x in outs)


def chunked_sequence_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                           mask: torch.Tensor, chunk: int = LOGP_CHUNK_TOKENS) -> torch.Tensor:
    """`sequence_logps(hidden @ weight.T + bias, labels, mask)` computed chunk by chunk (`chunked_token_logps`):
    same conventions (hidden[:, t] scores labels[:, t + 1]; mask on response tokens, aligned with labels), (B,) fp32."""
    return chunked_token_logps(hidden[:, :-1], weight, bias, labels[:, 1:], mask[:, 1:], chunk)[0].sum(-1)


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

