"""`pddpo`: Primal-Dual DPO (arXiv 2510.05703), Algorithm 1 as reconstructed in docs/methods.md §2.5.

    π_r̂ ← DPO(π_ref, D_r, β)                                    stage 1 (reward pairs)
    for k = 1..K:
        π_k ← π_r̂ if λ_k = 0 else argmin L_DPO(·; π_r̂, β/λ_k, D_c)   primal (cost pairs, chosen = safer)
        Ĉ_k ← mean cost annotation of π_k's responses on held-out dual prompts
        λ_{k+1} ← clip(λ_k + η·(Ĉ_k − b), 0, Λ_max)                 dual
    return π_K                                                  last iterate

The stage-2 reference is π_r̂ for every k (never π_ref, never π_{k−1}); its log-probs on D_c are computed once
and reused (`harness.training.dpo` caches them). Two networks are trained (π_r̂, π_K); the cost annotator is an external
scorer used only at dual time. What the paper fixes and what the harness chose is tagged on each config field:
[paper] = stated by the paper (v1: fixed λ = 5, no dual update), [ours] = a harness default (the paper does not
report β, lr, epochs, λ_1, η, b, K, Λ_max or N^CE).
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.config import RangeChecked
from harness.errors import BenchError, ConfigValueError
from harness.io import copy_dir_atomic
from harness.registry import lazy_function
from harness.types import SamplingParams
from methods.base import TrainContext, TrainResult

# torch and trl load on first use: `bench list methods pddpo` imports this module for its config alone
train_dpo = lazy_function("harness.training.dpo:train_dpo")
sequence_logprobs = lazy_function("harness.training.logprobs:sequence_logprobs")
dual_update = lazy_function("harness.training.losses:dual_update")
stage2_beta = lazy_function("harness.training.losses:stage2_beta")

UNITS = ("unsafe_rate", "mean_cost")


@dataclass
class PDDPOConfig(RangeChecked):
    beta: float | None = field(default=None, metadata={"range": ">0", "help": "[ours] stage-1 KL coefficient β (stage 2 uses β/λ_k); None = train.beta (0.1, SACPO's value; the paper's is unknown)"})
    fixed_lambda: float | None = field(default=None, metadata={"range": ">=0", "help": "[paper v1] a float = one primal step at this λ, no dual update (v1 used 5; `pddpo-fixed` presets it); 0 = π_r̂ itself (λ <= lambda_min); None = the primal-dual loop"})
    lambda_init: float = field(default=1.0, metadata={"range": ">=0", "help": "[ours] λ_1 of the dual loop (paper: unknown)"})
    num_iterations: int = field(default=3, metadata={"range": ">=0", "help": "[ours] K primal-dual iterations (paper: unknown; 3-5 suggested)"})
    eta: float = field(default=10.0, metadata={"range": ">=0", "help": "[ours] dual step size η; ~10-20 moves λ by O(1) when Ĉ is a rate"})
    lambda_max: float = field(default=20.0, metadata={"range": ">0", "help": "[ours] projection cap Λ_max (guards β/λ collapse, docs/methods.md §2.10.6)"})
    lambda_min: float = field(default=0.0, metadata={"range": ">=0", "help": "[ours] λ_k <= this -> π_k = π_r̂ without training (the λ = 0 guard: β/λ is infinite)"})
    threshold: float | None = field(default=None, metadata={"help": "[ours] constraint b in the estimator's units; None = scoring.threshold"})
    threshold_units: str | None = field(default=None, metadata={"range": "in:unsafe_rate|mean_cost", "help": "[ours] unsafe_rate (fraction with cost > 0) | mean_cost (raw mean); None = scoring.threshold_units"})
    warm_start: str = field(default="previous", metadata={"range": "in:previous|pi_r", "help": "[ours] primal init: previous (π_{k-1}) | pi_r (π_r̂); the reference is π_r̂ either way"})
    dual_temperature: float | None = field(default=None, metadata={"range": ">=0", "help": "[ours] sampling temperature for Ĉ; None = generation.temperature (0 = greedy)"})
    max_dual_prompts: int = field(default=0, metadata={"range": ">=0", "help": "[ours] N^CE: dual prompts used per estimate; 0 = all of the dual fold (data.max_dual_prompts)"})
    estimate_fixed: bool = field(default=True, metadata={"help": "[ours] in fixed-λ mode, still estimate Ĉ/reward/KL once for the trajectory (no λ update)"})
    keep_iterates: bool = field(default=False, metadata={"help": "[ours] keep every π_k folder in the work dir (default: delete superseded ones)"})

    def __post_init__(self) -> None:  # refused at config time (single-field ranges: the "range" metadata above)
        super().__post_init__()
        if self.fixed_lambda is None and self.num_iterations < 1:
            raise ConfigValueError("num_iterations", f"{self.num_iterations} trains no primal step; use an int >= 1 (or fixed_lambda=λ for one step)")


def resolve_constraint(config: Any, ctx: TrainContext) -> tuple[float, str]:
    """(b, units) from the method config, falling back to the run's scoring section."""
    b = ctx.cfg.scoring.threshold if config.threshold is None else config.threshold
    units = config.threshold_units or ctx.cfg.scoring.threshold_units
    if units not in UNITS:
        raise BenchError(f"threshold_units '{units}' is not one of {', '.join(UNITS)}")
    return b, units


def dual_estimate(ctx: TrainContext, policy: Path, reference: Path, units: str, prompts: list[str],
                  temperature: float | None = None, same_as_reference: bool = False) -> dict[str, float]:
    """Ĉ(π) on fresh samples of `policy` (Algorithm 1 line 4), scored by the configured cost annotator, plus the
    mean reward and a KL(π‖π_r̂) estimate: the mean of log π − log π_r̂ over the same samples (an unbiased KL
    estimate only when they are sampled at temperature 1; greedy samples give a mode-seeking proxy)."""
    from harness.generation import cached_generate, close_generator

    g = ctx.cfg.generation
    params = SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature if temperature is None else temperature,
                            top_p=g.top_p, seed=ctx.seed)
    gen = ctx.make_generator(policy)
    responses, _ = cached_generate(gen, prompts, params, g.cache)
    in_memory = getattr(gen, "model", None)  # reuse the generator's weights for the policy log-probs when it has them
    kl = 0.0
    if not same_as_reference:
        lp_policy = sequence_logprobs(in_memory if in_memory is not None else policy, getattr(gen, "tokenizer", None),
                                      prompts, responses, ctx.cfg, ctx.device)
        del in_memory
        close_generator(gen)  # explicit: a vLLM engine must let go of the GPU before the reference and scorers load
        lp_ref = sequence_logprobs(reference, None, prompts, responses, ctx.cfg, ctx.device)
        kl = float((lp_policy - lp_ref).mean())
    else:
        del in_memory
        close_generator(gen)
    costs = ctx.cost_annotator().score(prompts, responses)
    rewards = ctx.reward_annotator().score(prompts, responses)
    unsafe_rate = sum(c > 0 for c in costs) / len(costs)
    mean_cost = statistics.fmean(costs)
    return {
        "cost_estimate": unsafe_rate if units == "unsafe_rate" else mean_cost,
        "unsafe_rate": unsafe_rate, "mean_cost": mean_cost, "reward": statistics.fmean(rewards), "kl_to_pi_r": kl,
        "kl_estimator": "sampled log-ratio (unbiased)" if params.temperature == 1.0 and params.top_p >= 1.0
        else "log-ratio on greedy/tempered outputs (proxy; can be < 0)",
        "n_dual": len(prompts),
    }


def dual_prompts(ctx: TrainContext, limit: int) -> list[str]:
    prompts = ctx.dual_prompts[: limit or None]
    if not prompts:
        raise BenchError("PD-DPO's dual step needs held-out dual prompts, but the dataset's dual fold is empty: "
                         "set data.max_dual_prompts > 0 (they are never evaluation prompts)")
    return prompts


def networks_held(extra: list[str] | None = None) -> list[str]:
    return ["policy", "pi_r_hat (frozen stage-2 reference: log-probs on D_c cached once; reloaded at dual time for KL)",
            *(extra or []), "cost annotator (dual time)", "reward annotator (trajectory logging only)"]


def copy_model(src: Path, dst: Path) -> Path:
    """π_K = π_r̂ (λ_K = 0): the final folder is a copy, written atomically."""
    return copy_dir_atomic(src, dst)


class PDDPO:
    name: ClassVar[str] = "pddpo"
    config_class: ClassVar[type] = PDDPOConfig

    def __init__(self, config: PDDPOConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        c, cfg = self.config, ctx.cfg
        ctx.require_pairs(self.name, "reward", "cost")
        beta = c.beta or cfg.train.beta
        b, units = resolve_constraint(c, ctx)
        fixed = c.fixed_lambda is not None
        prompts = dual_prompts(ctx, c.max_dual_prompts) if (not fixed or c.estimate_fixed) else []

        # Stage 1: π_r̂ = DPO(π_ref, D_r, β), reference = the SFT model.
        pi_r = train_dpo(ctx.reward_pairs, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.work_dir / "pi_r_hat",
                         cfg=cfg, device=ctx.device, run_name="pddpo-stage1")

        lam = c.fixed_lambda if fixed else c.lambda_init
        iterations = 1 if fixed else c.num_iterations
        policy, trajectory = pi_r, []
        for k in range(1, iterations + 1):
            out = ctx.out_dir if k == iterations else ctx.work_dir / f"pi_{k}"
            trained = lam > c.lambda_min
            if trained:  # primal: L_DPO(θ; π_r̂, β/λ_k, D_c), reference π_r̂ passed explicitly
                init = policy if c.warm_start == "previous" else pi_r
                new = train_dpo(ctx.cost_pairs, init=init, ref=pi_r, beta=stage2_beta(beta, lam), out_dir=out, cfg=cfg,
                                device=ctx.device, run_name=f"pddpo-primal-{k}")
            else:  # λ = 0 guard: β/λ is infinite, the primal solution is π_r̂
                new = copy_model(pi_r, out) if k == iterations else pi_r
            if policy not in (pi_r, new) and not c.keep_iterates:
                shutil.rmtree(policy, ignore_errors=True)
            policy = new

            record: dict[str, Any] = {"iteration": k, "lambda": lam, "beta_stage2": stage2_beta(beta, lam) if trained else None,
                                      "trained": trained}
            if prompts:
                record.update(dual_estimate(ctx, policy, pi_r, units, prompts, c.dual_temperature, same_as_reference=not trained))
            lam_next = lam if fixed else dual_update(lam, record["cost_estimate"], b, c.eta, c.lambda_max)
            record.update(lambda_next=lam_next, threshold=b)
            ctx.log(record)
            trajectory.append(record)
            lam = lam_next

        return TrainResult(
            model_path=str(ctx.out_dir), models_trained=2, networks_held=networks_held(), trajectory=trajectory,
            extra={"mode": "fixed_lambda" if fixed else "primal_dual", "beta": beta, "threshold": b, "threshold_units": units,
                   "lambda_final": lam, "iterations": iterations, "warm_start": c.warm_start,
                   "provenance": "PD-DPO v1 ran fixed λ = 5 with no dual update [paper]; every other setting is [ours]"},
        )


@dataclass
class PDDPOFixedConfig(PDDPOConfig):
    """`pddpo-fixed`: the PD-DPO settings with the v1 paper's own setting preset, fixed λ = 5 and no dual update."""

    fixed_lambda: float | None = field(default=5.0, metadata={"range": ">=0", "help": "[paper v1] λ of the single primal step (v1: 5, no dual update); None = the primal-dual loop (then use `pddpo`)"})


class PDDPOFixed(PDDPO):
    """PD-DPO exactly as the v1 paper ran it: stage 1, then one primal step at β/5 against π_r̂ (a preset of `pddpo`:
    the same as `pddpo --set method.fixed_lambda=5`, listed under its own name on the leaderboard)."""

    name: ClassVar[str] = "pddpo-fixed"
    config_class: ClassVar[type] = PDDPOFixedConfig
