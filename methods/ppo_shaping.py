"""`ppo-shaping`: PPO on the shaped score `R − ν·C` with a **fixed** ν and one critic (docs/methods.md §8).

The Safe-RLHF baseline that shows what the learned λ buys: the same R and C (trained on this method's own train
split), the same KL shaping, GAE and clipped PPO losses, but the cost enters the reward with a constant weight and
there is no cost critic. So this is `methods/safe_rlhf.py`'s loop with three hooks changed:

- one critic stream, `reward`, paid `R(x,y) − ν·C(x,y)` at the last token (KL shaping −β_KL·k_t as usual);
- the actor's advantage is that stream's GAE advantage (no λ-mixing);
- the penalty is ν every step (no Lagrangian update; the windowed episode cost is still logged for comparison).

Networks held: actor, reference, R, C, one critic (init from R). Trained: R, C, actor, critic (4).
Upstream (read, not copied): PKU-Alignment/safe-rlhf@82743cc `safe_rlhf/algorithms/ppo_reward_shaping/trainer.py`,
`scripts/ppo-reward-shaping.sh` (ν = 1, β_KL 0.02, learning rates as PPO-Lag).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig

if TYPE_CHECKING:  # annotations only: this file imports for its config alone
    import torch


@dataclass
class PPOShapingConfig(SafeRLHFConfig):
    """Every PPO field of `SafeRLHFConfig` applies; the Lagrangian ones (threshold, lambda_*) are unused here."""

    cost_coef: float = field(default=1.0, metadata={"range": ">=0", "help": "ν: the fixed weight of the cost in R − ν·C (upstream lambda_init 1)"})
    kl_coef: float = field(default=0.02, metadata={"range": ">=0", "help": "β_KL of the per-token KL shaping (scripts/ppo-reward-shaping.sh)"})


class PPOShaping(SafeRLHF):
    name: ClassVar[str] = "ppo-shaping"
    config_class: ClassVar[type] = PPOShapingConfig
    critic_streams: ClassVar[tuple[str, ...]] = ("reward",)

    def stream_scores(self, rewards: torch.Tensor, costs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reward": rewards - self.config.cost_coef * costs}

    def update_penalty(self, step: int, cost_window_mean: float) -> float:
        return self.config.cost_coef

    def actor_advantage(self, advantages: dict[str, torch.Tensor], penalty: float) -> torch.Tensor:
        return advantages["reward"]
