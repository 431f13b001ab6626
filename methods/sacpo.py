"""SACPO (arXiv 2404.11049, NeurIPS 2024; methods.md §4): stepwise alignment for constrained preference optimisation.

With `π*_r ∝ π_ref·exp(r/β)`, the Lagrangian optimum for a fixed λ factorises (methods.md §1, stepwise identity):

    π*_λ ∝ π*_r·exp(g/(β/λ))

so two ordinary DPO runs reach it: DPO on helpfulness pairs with β from π_ref (-> π_r), then DPO on safety pairs
(chosen = safer) from π_r **with π_r as the frozen reference** and temperature β/λ. λ is not optimised: upstream
sweeps β/λ ∈ {0.1, 0.05, 0.025, 0.01} with β = 0.1 [code `script/train/*.sh`]. The order can be reversed (safety
first with β/λ from π_ref, then helpfulness with β against the safety model) [code].
Upstream reference (read, not vendored): `line/sacpo@b489ae5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import BenchError
from methods.base import TrainContext, TrainResult


@dataclass
class SACPOConfig:
    """SACPO: DPO(helpful, β) then DPO(safe, β/λ) against the step-1 model. Sweep `beta_over_lambda` (or `lambda_`)."""

    beta: float | None = field(default=None, metadata={"help": "β of the helpfulness step; None = train.beta [code 0.1]"})
    beta_over_lambda: float = field(default=0.01, metadata={"help": "temperature β/λ of the safety step [code grid {0.1, 0.05, 0.025, 0.01}; 0.01 = P-SACPO's]"})
    lambda_: float | None = field(default=None, metadata={"help": "if set, the safety temperature is beta / lambda_ (overrides beta_over_lambda) [ours]"})
    safety_first: bool = field(default=False, metadata={"help": "reversed order: DPO(safe, β/λ) from π_ref, then DPO(helpful, β) against it [code]"})

    def temperatures(self, default_beta: float) -> tuple[float, float]:
        """(β of the helpfulness step, β/λ of the safety step)."""
        beta = self.beta if self.beta is not None else default_beta
        if not beta > 0:
            raise BenchError(f"SACPO: beta must be > 0 (got {beta})")
        if self.lambda_ is not None:
            if not self.lambda_ > 0:
                raise BenchError(f"SACPO: lambda_ must be > 0 (got {self.lambda_}); λ = 0 is plain DPO on helpfulness")
            return beta, beta / self.lambda_
        if not self.beta_over_lambda > 0:
            raise BenchError(f"SACPO: beta_over_lambda must be > 0 (got {self.beta_over_lambda})")
        return beta, self.beta_over_lambda


class SACPO:
    """Two DPO runs; the second uses the first's output as both initialisation and frozen reference."""

    name: ClassVar[str] = "sacpo"
    config_class: ClassVar[type] = SACPOConfig

    def __init__(self, config: SACPOConfig):
        config.temperatures(0.1)  # validate early (the run's β is only known at train time)
        self.config = config

    def run_stages(self, ctx: TrainContext, final_dir: Path) -> tuple[Path, Path, dict[str, Any]]:
        """Train both stages; return (stage-1 model, final model, info). P-SACPO merges the two."""
        from harness.dpo import read_train_record, train_dpo

        beta, beta_safe = self.config.temperatures(ctx.cfg.train.beta)
        helpful = ("helpful", ctx.reward_pairs, beta)
        safe = ("safe", ctx.cost_pairs, beta_safe)
        stages = (safe, helpful) if self.config.safety_first else (helpful, safe)
        ctx.require_pairs("SACPO", "reward", "cost")

        (name1, pairs1, beta1), (name2, pairs2, beta2) = stages
        first = train_dpo(pairs1, init=ctx.policy_path, ref=None, beta=beta1, out_dir=ctx.work_dir / f"sacpo_{name1}", cfg=ctx.cfg,
                          device=ctx.device, run_name=f"sacpo-{name1}")
        # ref=None: the frozen reference of stage 2 is its starting checkpoint, the stage-1 model (methods.md §4.2)
        final = train_dpo(pairs2, init=first, ref=None, beta=beta2, out_dir=final_dir, cfg=ctx.cfg, device=ctx.device,
                          run_name=f"sacpo-{name2}")
        info: dict[str, Any] = {"beta": beta, "beta_over_lambda": beta_safe, "lambda": beta / beta_safe, "order": f"{name1}->{name2}"}
        for step, (name, path, b) in enumerate(((name1, first, beta1), (name2, final, beta2)), start=1):
            rec = read_train_record(path)
            record = {"stage": name, "step": step, "beta": b, "train_loss": rec.get("train_loss"), "steps": rec.get("steps"),
                      "pairs": rec.get("pairs")}
            ctx.log(record)
            info[f"stage{step}"] = record
        return first, final, info

    def train(self, ctx: TrainContext) -> TrainResult:
        _, final, info = self.run_stages(ctx, ctx.out_dir)
        return TrainResult(model_path=str(final), models_trained=2, networks_held=["policy", "reference"], extra=info)
