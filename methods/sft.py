"""`sft`: the SFT policy itself, untrained — the reference point and the win-rate anchor (docs/methods.md §8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.base import TrainContext, TrainResult


@dataclass
class SFTConfig:
    """No options: the SFT model is evaluated as it is."""


class SFT:
    name: ClassVar[str] = "sft"
    config_class: ClassVar[type] = SFTConfig

    def __init__(self, config: SFTConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        return TrainResult(model_path=None, models_trained=0, networks_held=["policy"])
