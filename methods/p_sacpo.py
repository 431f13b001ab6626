"""P-SACPO (arXiv 2404.11049 §6; docs/methods.md §4.4): SACPO plus a linear weight merge, no extra training.

    θ(q) = (1 − q)·θ_{π_r} + q·θ_{SACPO}

Interpolating between the helpfulness model π_r and the SACPO model (β/λ = 0.01) approximates the policies of
intermediate λ without training one model per λ (an empirical shortcut; upstream merges with mergekit in bf16,
q ∈ {0.25, 0.5, 0.75} [code `config/merge/*.yaml`]). We merge tensor by tensor with float32 accumulation.
With `safety_first` the stage-1 model is the safety model, and the merge runs between it and the final model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.registry import lazy_function

# torch loads on first use: `bench list methods p-sacpo` imports this module for its config alone
merge_models = lazy_function("harness.training.merging:merge_models")
merge_state_dicts = lazy_function("harness.training.merging:merge_state_dicts")  # re-exported: old import path
from methods.base import TrainContext, TrainResult
from methods.sacpo import SACPO, SACPOConfig


@dataclass
class PSACPOConfig(SACPOConfig):
    """P-SACPO: the SACPO settings (defaults β/λ = 0.01, as the paper's merges) plus the merge ratio q."""

    q: float = field(default=0.5, metadata={"range": "[0,1]", "help": "merge ratio: 0 = π_r, 1 = the SACPO model [code q ∈ {0.25, 0.5, 0.75}]"})


class PSACPO:
    """Runs SACPO, then merges π_r and the SACPO model with ratio q."""

    name: ClassVar[str] = "p-sacpo"
    config_class: ClassVar[type] = PSACPOConfig

    def __init__(self, config: PSACPOConfig):  # q in [0, 1]: its "range" metadata
        self.sacpo = SACPO(config)
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        first, final, info = self.sacpo.run_stages(ctx, ctx.work_dir / "sacpo_final")
        q = self.config.q
        record = {"merge": {"q": q, "a": str(first), "b": str(final), "rule": "(1-q)*a + q*b, float32 accumulation"}}
        out = merge_models(first, final, q, ctx.out_dir, record)
        ctx.log({"stage": "merge", "q": q})
        return TrainResult(model_path=str(out), models_trained=2, networks_held=["policy", "reference"], extra={**info, "q": q})
