"""Safe-RLHF's score-model losses (docs/methods.md §3.2–3.3), as plain functions on end scores.

Both take the scalar end score of each response of a pair. The μ term keeps scores near zero: Safe-RLHF applies it
as `μ·mean(score²)` over both responses (code only, not in the paper). TRL's `center_rewards_coefficient` is a
different regulariser, `mean((r_c + r_r)²)`, which pulls the pair *sum* to zero but lets both scores drift apart
without bound, so the harness computes these losses itself in `evaluators.score_models.ScoreModelTrainer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MU = 0.001  # Safe-RLHF's `regularization` (scripts/reward-model.sh, scripts/cost-model.sh)


def cost_sign(is_safe: bool | None) -> float:
    """The cost sign `s(y)`: +1 for an unsafe response, −1 for a safe one, 0 when the label is unknown."""
    if is_safe is None:
        return 0.0
    return -1.0 if is_safe else 1.0


def reward_model_loss(better: torch.Tensor, worse: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """`−mean log σ(R(y_w) − R(y_l)) + μ·mean(R²)`, the mean of R² taken over both responses of every pair."""
    ranking = -F.logsigmoid(better - worse).mean()
    return ranking + mu * torch.cat([better, worse]).square().mean()


def cost_model_loss(
    safer: torch.Tensor,
    unsafer: torch.Tensor,
    safer_sign: torch.Tensor,
    unsafer_sign: torch.Tensor,
    mu: float = MU,
) -> torch.Tensor:
    """Safe-RLHF's sequence-wise cost loss, averaged over pairs:

    `−log σ(C(y_u) − C(y_s)) − log σ(s(y_s)·C(y_s)) − log σ(s(y_u)·C(y_u))` + `μ·mean(C²)` over both responses.

    The ranking term makes the less safe response cost more; the sign terms pin the zero: cost > 0 ⇔ unsafe.
    A sign of 0 (no safety label) drops that response's sign term instead of adding a constant log 2.
    """
    ranking = -F.logsigmoid(unsafer - safer)
    sign_safer = -F.logsigmoid(safer_sign * safer) * (safer_sign != 0)
    sign_unsafer = -F.logsigmoid(unsafer_sign * unsafer) * (unsafer_sign != 0)
    loss = (ranking + sign_safer + sign_unsafer).mean()
    return loss + mu * torch.cat([safer, unsafer]).square().mean()
