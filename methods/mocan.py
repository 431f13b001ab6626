"""MoCAN (arXiv 2405.19544, NeurIPS 2024; docs/methods.md §5.1): model-based constrained alignment in one DPO run.

The dual of the KL-regularised constrained problem (docs/methods.md §1) is convex and smooth in λ, so MoCAN solves it
*offline*, on responses sampled once from the SFT policy π_ref and scored by the reward and cost annotators, and
then runs a single DPO toward `π*_{λ*} ∝ π_ref·exp((r + λ*·g)/β)`, `g = −cost`:

1. **Dual.** K responses for each of N held-out prompts; λ* = argmin_{λ≥0} D̂(λ) by projected gradient descent,
   `D̂(λ) = β·mean_i log mean_k exp((r_ik + λ(g_ik − b))/β)` (upstream `safe_rlhf/trainers/model_based.py`).
2. **Primal.** Every training pair (x, y_a, y_b) is relabelled by one Bernoulli draw with
   `P(y_a chosen) = σ(s_a − s_b)`, `s = r + λ*·g` (upstream `safe_rlhf/algorithms/cdpo/dpo.py`), then DPO with β
   against π_ref. The relabelled pairs (with their probabilities and draws) are written as JSONL to `work_dir`
   and copied into the saved model folder, which outlives the run's scratch space.

The harness uses one annotator pair for the dual and the relabelling (upstream: Beaver v1.0 vs v3.0 [verify]).
The dual solver, the reference sampler and the relabelling are shared with PeCAN: `harness/training/can_dual.py`.
Upstream reference (read, not vendored): `shuoli90/CAN@68a922c`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from harness.registry import lazy_module
from harness.training.can_dual import (  # noqa: F401  (DualResult ... write_jsonl: re-exported, their old home)
    CANDualConfig,
    DualResult,
    infeasible_result,
    keep_with_model,
    max_slack,
    projected_gradient_descent,
    relabel,
    resolve_lambda,
    sample_reference,
    score_matrix,
    write_jsonl,
)
from methods.base import TrainContext, TrainResult

torch = lazy_module("torch")  # loads on first use: `bench list methods mocan` imports this file for its config alone

log = logging.getLogger("bench")


# -- MoCAN's dual (the solver, relabelling and sampler are harness/training/can_dual.py) ------------------------------------


def mocan_dual_value(lam: float, r: Any, g: Any, b: float, beta: float) -> float:
    """`D̂(λ) = β·mean_i log mean_k exp((r_ik + λ(g_ik − b))/β)`: the empirical dual for the constraint E[g] ≥ b."""
    r, g = score_matrix(r, "r"), score_matrix(g, "g")
    z = (r + lam * (g - b)) / beta
    return float(beta * (torch.logsumexp(z, dim=1) - math.log(z.shape[1])).mean())


def mocan_dual_grad(lam: float, r: Any, g: Any, b: float, beta: float) -> float:
    """`∇D̂(λ) = mean_i Σ_k softmax_k((r_ik + λ·g_ik)/β)·(g_ik − b)` = E_{π_λ}[g] − b on the samples."""
    r, g = score_matrix(r, "r"), score_matrix(g, "g")
    w = torch.softmax((r + lam * g) / beta, dim=1)
    return float((w * (g - b)).sum(dim=1).mean())


def mocan_dual(r: Any, g: Any, b: float, beta: float, check_feasible: bool = True, **solver: Any) -> DualResult:
    """λ* for `max E[r] − β·KL  s.t.  E[g] ≥ b`, from scores of K reference samples for each of N prompts.

    Args:
        r, g: (N, K) reward and safety utility (`g = −cost`) of the samples.
        b: the bound on E[g] (a cost bound `E[c] ≤ b_c` is `b = −b_c`).
        beta: the KL coefficient β.
        check_feasible: stop before any step when no λ reaches the bound on these samples (`mean_i max_k g_ik <= b`).
        **solver: `projected_gradient_descent` settings (η = 2, λ_0 = 1, tol 1e-5 over 5 iterates by default).
    """
    if not beta > 0:
        raise ValueError(f"mocan_dual needs beta > 0 (got {beta})")
    r, g = score_matrix(r, "r"), score_matrix(g, "g")
    if r.shape != g.shape:
        raise ValueError(f"r and g must have the same shape, got {tuple(r.shape)} and {tuple(g.shape)}")
    slack = max_slack(g, b)
    if check_feasible and slack <= 0:
        return infeasible_result(solver.get("lambda_init", 1.0), solver.get("lambda_cap") or 100.0, slack, f"E[g] ≥ b = {b:.4g}")
    result = projected_gradient_descent(lambda lam: mocan_dual_grad(lam, r, g, b, beta), **solver)
    result.max_slack = slack
    return result


# -- MoCAN ------------------------------------------------------------------------------------------------------------


@dataclass
class MoCANConfig(CANDualConfig):
    """MoCAN: offline dual on annotator scores of π_ref samples, then one DPO on relabelled pairs."""

    beta: float | None = field(default=None, metadata={"range": ">0", "help": "KL coefficient β of the dual and the DPO step; None = train.beta [paper/code 0.1 (or 0.025)]"})
    threshold: float | None = field(default=None, metadata={"help": "cost bound b_c in the utility's units (E[c] ≤ b_c); None = scoring.threshold [ours]"})
    utility: str = field(default="auto", metadata={"range": "in:score|indicator|auto", "help": "safety utility g: \"score\" (g = −cost, upstream) | \"indicator\" (g = −1[cost > 0], b_c is an unsafe rate) | \"auto\" (indicator when scoring.threshold_units is unsafe_rate) [ours]"})

    def validate(self) -> None:
        super().validate()  # utility and beta: their declared ranges are checked on construction (RangeChecked)


def safety_utility(costs: Sequence[float], utility: str) -> list[float]:
    """g from annotator costs (cost > 0 = unsafe): `−cost`, or `−1[cost > 0]` so that E[g] ≥ −b is an unsafe-rate bound."""
    if utility == "indicator":
        return [-1.0 if c > 0 else 0.0 for c in costs]
    return [-float(c) for c in costs]


class MoCAN:
    """Model-based CAN: λ* from an offline dual on annotator scores, then one DPO toward π*_{λ*}."""

    name: ClassVar[str] = "mocan"
    config_class: ClassVar[type] = MoCANConfig

    def __init__(self, config: MoCANConfig):
        config.validate()
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.training.dpo import read_train_record, train_dpo

        c, cfg = self.config, ctx.cfg
        beta = c.beta if c.beta is not None else cfg.train.beta
        utility = c.utility if c.utility != "auto" else ("indicator" if cfg.scoring.threshold_units == "unsafe_rate" else "score")
        bound = c.threshold if c.threshold is not None else cfg.scoring.threshold
        reward, cost = ctx.reward_annotator(), ctx.cost_annotator()
        extra: dict[str, Any] = {"beta": beta, "utility": utility, "cost_bound": bound}

        # 1. dual: λ* on K samples per held-out prompt from π_ref
        if c.lambda_ is not None:
            lam = float(c.lambda_)
            ctx.log({"stage": "dual", "lambda": lam, "fixed_lambda": True})
        else:
            prompts, samples = sample_reference(ctx, c.num_prompts, c.samples_per_prompt, c.temperature, c.top_p)
            flat_p = [p for p, ys in zip(prompts, samples) for _ in ys]
            flat_y = [y for ys in samples for y in ys]
            shape = (len(prompts), c.samples_per_prompt)
            r = np.asarray(reward.score(flat_p, flat_y), dtype=np.float64).reshape(shape)
            g = np.asarray(safety_utility(cost.score(flat_p, flat_y), utility), dtype=np.float64).reshape(shape)
            result = mocan_dual(r, g, -bound, beta, c.check_feasible, **c.solver())
            lam = resolve_lambda(result, c, "MoCAN")
            ref_stats = {"ref_reward_mean": float(r.mean()), "ref_utility_mean": float(g.mean()), "dual_prompts": shape[0],
                         "samples_per_prompt": shape[1]}
            ctx.log({"stage": "dual", "lambda": lam, **result.summary(), **ref_stats})
            extra["dual"] = {**result.summary(), **ref_stats, "lambda_trajectory": result.trajectory}

        # 2. primal: relabel the training pairs by σ(s_a − s_b), s = r + λ·g, with one draw each
        ctx.require_pairs(self.name, "reward")
        pairs = ctx.reward_pairs
        prompts2 = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        r2 = reward.score(prompts2, responses)
        g2 = safety_utility(cost.score(prompts2, responses), utility)
        s = [ri + lam * gi for ri, gi in zip(r2, g2)]
        n = len(pairs)
        seed = c.relabel_seed if c.relabel_seed is not None else ctx.seed
        relabelled, rows = relabel(pairs, s[:n], s[n:], seed)
        path = write_jsonl(ctx.work_dir / "mocan_relabelled.jsonl", rows)
        swapped = sum(row["swapped"] for row in rows)
        ctx.log({"stage": "relabel", "lambda": lam, "pairs": n, "swapped": swapped, "swap_rate": swapped / n})
        extra["relabel"] = {"pairs": n, "swapped": swapped, "seed": seed, "path": str(path)}

        # 3. one DPO against π_ref on the relabelled pairs
        out = train_dpo(relabelled, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.out_dir, cfg=cfg, device=ctx.device,
                        run_name="mocan")
        extra["relabel"]["path"] = str(keep_with_model(path, out))
        rec = read_train_record(out)
        ctx.log({"stage": "dpo", "lambda": lam, "train_loss": rec.get("train_loss"), "steps": rec.get("steps")})
        extra["lambda"] = lam
        return TrainResult(model_path=str(out), models_trained=1, networks_held=["policy", "reference"], extra=extra)
