"""DPO-Mix: one DPO run on the union of the reward pairs (chosen = more helpful) and the cost pairs (chosen = safer).

The naive "just mix the data" baseline for constrained alignment: no λ, no second model, no threshold. Where the
two views agree on a prompt's response pair, the pair appears once; where they disagree (the more helpful
response is the less safe one) the union holds both orders, which pull in opposite directions. By default such
conflicting pairs are dropped, so the policy trains only on preferences that helpfulness and safety share.
Compare it with PD-DPO on the leaderboard to see what the constraint machinery buys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from methods.base import TrainContext, TrainResult

if TYPE_CHECKING:
    from harness.types import PreferencePair


@dataclass
class DPOMixConfig:
    """Settings under `methods.dpo-mix` in a profile, or `--set method.<field>=...`."""

    beta: float | None = field(default=None, metadata={"help": "DPO KL coefficient; None = the run's train.beta"})
    drop_conflicts: bool = field(default=True, metadata={
        "help": "drop both orders of a response pair when the reward and cost views prefer opposite responses"})


def mix_pairs(reward_pairs: list["PreferencePair"], cost_pairs: list["PreferencePair"],
              drop_conflicts: bool = True) -> tuple[list["PreferencePair"], int]:
    """The union of both views without duplicates; returns (pairs, number of conflicting pairs dropped)."""
    key = lambda p: (p.prompt, p.chosen, p.rejected)  # noqa: E731
    union: dict[tuple[str, str, str], "PreferencePair"] = {}
    for pair in [*reward_pairs, *cost_pairs]:
        union.setdefault(key(pair), pair)
    if not drop_conflicts:
        return list(union.values()), 0
    kept = [p for k, p in union.items() if (k[0], k[2], k[1]) not in union]
    return kept, len(union) - len(kept)


class DPOMix:
    name = "dpo-mix"
    config_class = DPOMixConfig

    def __init__(self, config: DPOMixConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.training.dpo import train_dpo  # the harness's shared DPO trainer (TRL underneath)

        pairs, dropped = mix_pairs(ctx.reward_pairs, ctx.cost_pairs, self.config.drop_conflicts)
        beta = self.config.beta if self.config.beta is not None else ctx.cfg.train.beta
        model_path = train_dpo(pairs, init=ctx.policy_path, ref=ctx.policy_path, beta=beta, out_dir=ctx.out_dir,
                               cfg=ctx.cfg, device=ctx.device, run_name=self.name)
        return TrainResult(
            model_path=str(model_path),
            models_trained=1,
            networks_held=["policy", "reference (SFT) log-probs"],
            extra={"n_pairs": len(pairs), "conflicting_pairs_dropped": dropped, "beta": beta},
        )
