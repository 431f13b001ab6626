"""`dpo-harmless`: DPO on the cost pairs D_c with chosen = the **safer** response (docs/methods.md §8).

SACPO's naive-merge ingredient uses β = 0.01; the default here is the shared train.beta.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.config import RangeChecked
from methods.base import TrainContext, TrainResult
from methods.dpo_helpful import train_plain_dpo


@dataclass
class DPOHarmlessConfig(RangeChecked):
    beta: float | None = field(default=None, metadata={"range": ">0", "help": "KL coefficient; None = train.beta"})


class DPOHarmless:
    name: ClassVar[str] = "dpo-harmless"
    config_class: ClassVar[type] = DPOHarmlessConfig

    def __init__(self, config: DPOHarmlessConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        return train_plain_dpo(ctx, ctx.cost_pairs, self.config.beta, self.name, "cost")  # chosen = safer
