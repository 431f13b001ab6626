"""SACPO (arXiv 2404.11049, NeurIPS 2024; docs/methods.md §4): stepwise alignment for constrained preference optimisation.

With `π*_r ∝ π_ref·exp(r/β)`, the Lagrangian optimum for a fixed λ factorises (docs/methods.md §1, stepwise identity):

    π*_λ ∝ π*_r·exp(g/(β/λ))

so two ordinary DPO runs reach it: DPO on helpfulness pairs with β from π_ref (-> π_r), then DPO on safety pairs
(chosen = safer) from π_r **with π_r as the frozen reference** and temperature β/λ. λ is not optimised: upstream
sweeps β/λ ∈ {0.1, 0.05, 0.025, 0.01} with β = 0.1 [code `script/train/*.sh`]. The order can be reversed (safety
first with β/λ from π_ref, then helpfulness with β against the safety model) [code].

Variants, each a registered method so the leaderboard lists it under its own name:
- `sacpo`      DPO(helpful, β) -> DPO(safe, β/λ)                       [paper, code]
- `sacpo-kto`  DPO(helpful, β) -> KTO(safe, β/λ): the safety step learns from unpaired responses, desirable ⇔ the
               source labels the response safe (`harness.training.kto`), w_D = 1, w_U = n_D/n_U   [code `src/train/safety_kto.py`]
- `p-sacpo` and `sacpo-naive-merge` (linear merges) live in their own files.
Upstream reference (read, not vendored): `line/sacpo@b489ae5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.config import RangeChecked
from methods.base import TrainContext, TrainResult


@dataclass
class SACPOConfig(RangeChecked):
    """SACPO: DPO(helpful, β) then DPO(safe, β/λ) against the step-1 model. Sweep `beta_over_lambda` (or `lambda_`)."""

    beta: float | None = field(default=None, metadata={"range": ">0", "help": "β of the helpfulness step; None = train.beta [code 0.1]"})
    beta_over_lambda: float = field(default=0.01, metadata={"range": ">0", "help": "temperature β/λ of the safety step [code grid {0.1, 0.05, 0.025, 0.01}; 0.01 = P-SACPO's]"})
    lambda_: float | None = field(default=None, metadata={"range": ">0", "help": "if set, the safety temperature is beta / lambda_ (overrides beta_over_lambda) [ours]"})
    safety_first: bool = field(default=False, metadata={"help": "reversed order: DPO(safe, β/λ) from π_ref, then DPO(helpful, β) against it [code]"})

    def temperatures(self, default_beta: float) -> tuple[float, float]:
        """(β of the helpfulness step, β/λ of the safety step)."""
        beta = self.beta if self.beta is not None else default_beta  # > 0: its range, and train.beta's
        if self.lambda_ is not None:  # lambda_ > 0 and beta_over_lambda > 0: their declared ranges
            return beta, beta / self.lambda_
        return beta, self.beta_over_lambda


class SACPO:
    """Two DPO runs; the second uses the first's output as both initialisation and frozen reference."""

    name: ClassVar[str] = "sacpo"
    config_class: ClassVar[type] = SACPOConfig

    def __init__(self, config: SACPOConfig):  # beta, lambda_, beta_over_lambda > 0: their "range" metadata
        self.config = config

    safety_loss: ClassVar[str] = "dpo"  # the safety step's alignment loss L_align: dpo | kto (docs/methods.md §4.1)

    def align(self, ctx: TrainContext, name: str, pairs: list, init: str | Path, beta: float, out_dir: Path) -> Path:
        """One alignment step from `init`, with `init` as the frozen reference: DPO on the pairs, or, for the safety step
        of `sacpo-kto`, KTO on the pairs' responses labelled by their own safety labels."""
        if name == "safe" and self.safety_loss == "kto":
            from harness.training.kto import kto_examples, train_kto

            c = self.config
            return train_kto(kto_examples(pairs), init=init, beta=beta, out_dir=out_dir, cfg=ctx.cfg, device=ctx.device,
                             run_name=f"sacpo-{name}-kto", desirable_weight=getattr(c, "desirable_weight", None),
                             undesirable_weight=getattr(c, "undesirable_weight", None), pairs=pairs)
        from harness.training.dpo import train_dpo

        return train_dpo(pairs, init=init, ref=None, beta=beta, out_dir=out_dir, cfg=ctx.cfg, device=ctx.device, run_name=f"sacpo-{name}")

    def run_stages(self, ctx: TrainContext, final_dir: Path) -> tuple[Path, Path, dict[str, Any]]:
        """Train both stages; return (stage-1 model, final model, info). P-SACPO merges the two."""
        from harness.training.dpo import read_train_record

        beta, beta_safe = self.config.temperatures(ctx.cfg.train.beta)
        helpful = ("helpful", ctx.reward_pairs, beta)
        safe = ("safe", ctx.cost_pairs, beta_safe)
        stages = (safe, helpful) if self.config.safety_first else (helpful, safe)
        ctx.require_pairs("SACPO", "reward", "cost")

        (name1, pairs1, beta1), (name2, pairs2, beta2) = stages
        first = self.align(ctx, name1, pairs1, ctx.policy_path, beta1, ctx.work_dir / f"sacpo_{name1}")
        # the frozen reference of stage 2 is its starting checkpoint, the stage-1 model (docs/methods.md §4.2)
        final = self.align(ctx, name2, pairs2, first, beta2, final_dir)
        info: dict[str, Any] = {"beta": beta, "beta_over_lambda": beta_safe, "lambda": beta / beta_safe, "order": f"{name1}->{name2}",
                                "safety_loss": self.safety_loss}
        for step, (name, path, b) in enumerate(((name1, first, beta1), (name2, final, beta2)), start=1):
            rec = read_train_record(path)
            loss = self.safety_loss if name == "safe" else "dpo"
            record = {"stage": name, "step": step, "loss": loss, "beta": b, "train_loss": rec.get("train_loss"),
                      "steps": rec.get("steps"), "pairs": rec.get("pairs")}
            if loss == "kto":
                record.update({k: rec.get(k) for k in ("examples", "desirable", "undesirable", "desirable_weight", "undesirable_weight")})
            ctx.log(record)
            info[f"stage{step}"] = record
        return first, final, info

    def train(self, ctx: TrainContext) -> TrainResult:
        _, final, info = self.run_stages(ctx, ctx.out_dir)
        return TrainResult(model_path=str(final), models_trained=2, networks_held=["policy", "reference"], extra=info)


@dataclass
class SACPOKTOConfig(SACPOConfig, RangeChecked):
    """`sacpo-kto`: the SACPO settings; the safety step is KTO at β/λ, with its class weights."""

    desirable_weight: float | None = field(default=None, metadata={"range": ">0", "help": "KTO weight w_D of safe (desirable) responses; None = 1 [code]"})
    undesirable_weight: float | None = field(default=None, metadata={"range": ">0", "help": "KTO weight w_U of unsafe responses; None = n_safe / n_unsafe of the labelled responses [code]"})


class SACPOKTO(SACPO):
    """SACPO with a KTO safety step (the paper's DPO(H) -> KTO(S) grid): KTO needs only per-response safety labels."""

    name: ClassVar[str] = "sacpo-kto"
    config_class: ClassVar[type] = SACPOKTOConfig
    safety_loss: ClassVar[str] = "kto"
