"""`sacpo-naive-merge`: SACPO's naive-merging ablation (arXiv 2404.11049; docs/methods.md §4.4), no stepwise alignment.

Instead of aligning the helpfulness model further for safety (SACPO, P-SACPO), two models are aligned
*independently from the SFT model* and their weights are averaged linearly:

    π_H = DPO(π_ref, D_r, β)            reference π_ref               [paper: DPO(H, 0.1)]
    π_S = DPO(π_ref, D_c, β/λ)          reference π_ref, chosen = safer [paper: DPO(S, 0.01) from SFT]
    θ(q) = (1 − q)·θ_{π_H} + q·θ_{π_S}                                   [paper: the naive baseline's rule]

Both trainings are content-addressed (harness/training/artifacts.py): π_H is the same training as SACPO's step 1 (and
`dpo-helpful`'s at the same β), π_S the same as reversed SACPO's step 1, so a suite trains each once.
Provenance: the rule and β/λ = 0.01 follow docs/methods.md §4.4 [paper]; the default q = 0.5 is [ours] (the middle of
P-SACPO's grid q ∈ {0.25, 0.5, 0.75} [code]; the paper does not state the naive baseline's q).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.config import RangeChecked
from harness.errors import BenchError, ConfigValueError
from harness.registry import lazy_function
from methods.base import TrainContext, TrainResult
from methods.sacpo import SACPOConfig

merge_models = lazy_function("harness.training.merging:merge_models")  # torch loads on first use (`bench list methods`)

@dataclass
class NaiveMergeConfig(SACPOConfig, RangeChecked):
    """The SACPO temperatures (β for π_H, β/λ for π_S) plus the merge ratio q; `safety_first` has no meaning here."""

    q: float = field(default=0.5, metadata={"range": "[0,1]", "help": "[ours] merge weight of the safety model: 0 = π_H (DPO helpful), 1 = π_S (DPO safe from SFT)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.safety_first:
            raise ConfigValueError("safety_first", "the naive merge trains both models from the SFT model, so there is no order; leave it false")


class SACPONaiveMerge:
    """Two independent DPO runs from the SFT model, merged with weight q on the safety model."""

    name: ClassVar[str] = "sacpo-naive-merge"
    config_class: ClassVar[type] = NaiveMergeConfig

    def __init__(self, config: NaiveMergeConfig):  # beta, lambda_, beta_over_lambda > 0, q in [0, 1]: their "range" metadata
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.training.dpo import read_train_record, train_dpo

        ctx.require_pairs(self.name, "reward", "cost")
        beta, beta_safe = self.config.temperatures(ctx.cfg.train.beta)
        q = self.config.q
        models: dict[str, Any] = {}
        # 1. π_H and π_S, each from π_ref with π_ref as the frozen reference (ref=None: the init checkpoint)
        for name, pairs, b in (("helpful", ctx.reward_pairs, beta), ("safe", ctx.cost_pairs, beta_safe)):
            path = train_dpo(pairs, init=ctx.policy_path, ref=None, beta=b, out_dir=ctx.work_dir / f"naive_{name}", cfg=ctx.cfg,
                             device=ctx.device, run_name=f"sacpo-{name}" if name == "helpful" else "sacpo-safe-from-sft")
            rec = read_train_record(path)
            ctx.log({"stage": name, "beta": b, "train_loss": rec.get("train_loss"), "steps": rec.get("steps"), "pairs": rec.get("pairs")})
            models[name] = path
        if models["helpful"] == models["safe"]:
            raise BenchError("sacpo-naive-merge: the helpful and safe models are one folder; nothing to merge")
        # 2. θ = (1 − q)·θ_H + q·θ_S
        record = {"merge": {"q": q, "a": str(models["helpful"]), "b": str(models["safe"]), "rule": "(1-q)*a + q*b, float32 accumulation"}}
        out = merge_models(models["helpful"], models["safe"], q, ctx.out_dir, record)
        ctx.log({"stage": "merge", "q": q})
        return TrainResult(model_path=str(out), models_trained=2, networks_held=["policy", "reference"],
                           extra={"variant": "naive-merge", "beta": beta, "beta_over_lambda": beta_safe, "lambda": beta / beta_safe,
                                  "q": q, "merged": {"helpful (weight 1-q)": str(models["helpful"]), "safe (weight q)": str(models["safe"])},
                                  "provenance": "rule and beta/lambda = 0.01 [paper, docs/methods.md §4.4]; q = 0.5 [ours]"})
