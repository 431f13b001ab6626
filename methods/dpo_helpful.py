"""`dpo-helpful`: DPO on the reward pairs D_r (chosen = more helpful), reference = the SFT model (docs/methods.md §8).

Upstream: safe-rlhf `scripts/dpo.sh` (β 0.1, lr 1e-6, 2 epochs); the harness runs every method under the run's
one shared `train` regime, so only β is a method option here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.config import RangeChecked
from harness.registry import lazy_function
from methods.base import TrainContext, TrainResult

# torch and trl load on first use: `bench list methods dpo-helpful` imports this module for its config alone
train_dpo = lazy_function("harness.training.dpo:train_dpo")
read_train_record = lazy_function("harness.training.dpo:read_train_record")


@dataclass
class DPOHelpfulConfig(RangeChecked):
    beta: float | None = field(default=None, metadata={"range": ">0", "help": "KL coefficient; None = train.beta (0.1, safe-rlhf's and SACPO's value)"})


def train_plain_dpo(ctx: TrainContext, pairs: list, beta: float | None, label: str, kind: str) -> TrainResult:
    """One DPO run from the SFT policy against itself as the frozen reference; shared by the two plain baselines."""
    ctx.require_pairs(label, kind)
    out = train_dpo(pairs, init=ctx.policy_path, ref=None, beta=beta or ctx.cfg.train.beta, out_dir=ctx.out_dir,
                    cfg=ctx.cfg, device=ctx.device, run_name=label)
    record = read_train_record(out)
    return TrainResult(
        model_path=str(out), models_trained=1,
        networks_held=["policy", "reference = SFT (log-probs precomputed once, released before training)"],
        extra={"beta": record["beta"], "pairs": record["pairs"], "train_loss": record["train_loss"], "steps": record["steps"]},
    )


class DPOHelpful:
    name: ClassVar[str] = "dpo-helpful"
    config_class: ClassVar[type] = DPOHelpfulConfig

    def __init__(self, config: DPOHelpfulConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        return train_plain_dpo(ctx, ctx.reward_pairs, self.config.beta, self.name, "reward")
