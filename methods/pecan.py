"""PeCAN (arXiv 2405.19544, NeurIPS 2024; docs/methods.md §5.2): preference-based constrained alignment.

Without reward or cost models, PeCAN uses two pre-aligned policies as implicit scorers:
`π_r = DPO(π_ref, D_r, β)` and `π_g = DPO(π_ref, D_c, β)` give `h_r = log π_r/π_ref` and `h_g = log π_g/π_ref`
(`β·h` equals the reward up to a per-prompt constant). The constraint is therefore *relative* to π_ref,
`E_π[g] − E_{π_ref}[g] ≥ b`, where the constants cancel.

1. **Dual** (upstream `preference_based_dual_trainer_corrected(1).ipynb`): on K π_ref samples per held-out prompt,
   `∇D̂(λ) = mean_i Σ_k softmax_k(h_r + λ·h_g)·h_g + KL̂(π_ref‖π_g) − b/β`, `KL̂ = −mean(h_g)`; projected GD, η = 2.
2. **Primal** (upstream `safe_rlhf/algorithms/cdpo/dpo_alg2.py`): relabel each training pair with one Bernoulli
   draw, `P(y_a chosen) = σ(Δh_r + λ·Δh_g)`, then DPO with β against π_ref.

⚑ The Bradley–Terry label implied by the target reward `β·h_r + λβ·h_g` is `σ(β·(Δh_r + λ·Δh_g))`; upstream omits β
(sharper labels). `beta_in_relabel` selects it; the default follows upstream [verify against the paper's equation].
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from harness.registry import lazy_module
from harness.training.can_dual import (
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

torch = lazy_module("torch")  # loads on first use: `bench list methods pecan` imports this file for its config alone


def pecan_dual_grad(lam: float, h_r: Any, h_g: Any, margin: float, beta: float) -> float:
    """`mean_i Σ_k softmax_k(h_r + λ·h_g)·h_g − mean(h_g) − b/β`: the relative-constraint slack, in log-ratio units."""
    h_r, h_g = score_matrix(h_r, "h_r"), score_matrix(h_g, "h_g")
    w = torch.softmax(h_r + lam * h_g, dim=1)
    kl_ref_g = -h_g.mean()  # KL̂(π_ref‖π_g) on π_ref samples
    return float((w * h_g).sum(dim=1).mean() + kl_ref_g - margin / beta)


def pecan_max_slack(h_g: Any, margin: float, beta: float) -> float:
    """The largest relative-constraint slack any λ reaches on the samples: `mean_i max_k h_g − mean(h_g) − b/β`
    (log-ratio units). The dual has a finite λ* only when this is > 0 (harness.training.can_dual.max_slack)."""
    h_g = score_matrix(h_g, "h_g")
    return max_slack(h_g, float(h_g.mean()) + margin / beta)


def pecan_dual(h_r: Any, h_g: Any, margin: float, beta: float, check_feasible: bool = True, **solver: Any) -> DualResult:
    """λ* for `E_π[g] − E_{π_ref}[g] ≥ b` from implicit log-ratios of K π_ref samples for each of N prompts.

    Args:
        h_r, h_g: (N, K) `log π_r/π_ref` and `log π_g/π_ref` of the samples.
        margin: the required improvement b over π_ref, in implicit-reward units (`β·h`).
        beta: the β both π_r and π_g were trained with.
    """
    if not beta > 0:
        raise ValueError(f"pecan_dual needs beta > 0 (got {beta})")
    h_r, h_g = score_matrix(h_r, "h_r"), score_matrix(h_g, "h_g")
    if h_r.shape != h_g.shape:
        raise ValueError(f"h_r and h_g must have the same shape, got {tuple(h_r.shape)} and {tuple(h_g.shape)}")
    slack = pecan_max_slack(h_g, margin, beta)
    if check_feasible and slack <= 0:
        return infeasible_result(solver.get("lambda_init", 1.0), solver.get("lambda_cap") or 100.0, slack,
                                 f"E_π[h_g] − E_π_ref[h_g] ≥ b/β = {margin / beta:.4g} nats")
    result = projected_gradient_descent(lambda lam: pecan_dual_grad(lam, h_r, h_g, margin, beta), **solver)
    result.max_slack = slack
    return result


def pecan_scores(h_r: Sequence[float], h_g: Sequence[float], lam: float, beta: float, beta_in_relabel: bool) -> list[float]:
    """Per-response relabelling score: `h_r + λ·h_g` (upstream), or `β·(h_r + λ·h_g)` (target-consistent)."""
    scale = beta if beta_in_relabel else 1.0
    return [scale * (a + lam * b) for a, b in zip(h_r, h_g)]


@dataclass
class PeCANConfig(CANDualConfig):
    """PeCAN: π_r, π_g by DPO; offline dual on their implicit log-ratios; one DPO on relabelled pairs."""

    beta: float | None = field(default=None, metadata={"range": ">0", "help": "β of π_r, π_g and the final DPO (one β for all three); None = train.beta [paper 0.1 or 0.025]"})
    margin: float = field(default=0.5, metadata={"help": "b: required E_π[g] − E_{π_ref}[g], implicit-reward units [code notebook demo 0.5; paper b ∈ [0, 3]]"})
    beta_in_relabel: bool = field(default=False, metadata={"help": "⚑ False: σ(Δh_r + λΔh_g) [code]; True: σ(β(Δh_r + λΔh_g)) [derived; verify paper]"})
    logprob_batch_size: int = field(default=0, metadata={"range": ">=0", "help": "batch size for the log-prob passes; 0 = 2 × train.batch_size [ours]"})

    def validate(self) -> None:
        super().validate()  # beta's range included (check_ranges covers the subclass's fields)


def _log_probs(path: str | Path, ctx: TrainContext, prompts: list[str], responses: list[str], pairs: Sequence[Any],
               batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(samples, pairs' chosen, pairs' rejected) summed response log-probs under one model, loaded once, float32."""
    from harness.training.logprobs import policy_logps, sequence_logprobs
    from harness.models import load_policy

    model, tok = load_policy(Path(path), ctx.device, "fp32")  # log-ratios are differences of long sums: keep fp32
    samples = sequence_logprobs(model, tok, prompts, responses, ctx.cfg, ctx.device, batch_size) if prompts else torch.zeros(0)
    chosen, rejected = policy_logps(model, tok, pairs, ctx.cfg, ctx.device, batch_size)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return samples, chosen, rejected


class PeCAN:
    """Preference-based CAN: three DPO runs (π_r, π_g, final) and an offline dual on implicit scores."""

    name: ClassVar[str] = "pecan"
    config_class: ClassVar[type] = PeCANConfig

    def __init__(self, config: PeCANConfig):
        config.validate()
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.training.dpo import read_train_record, train_dpo

        c, cfg = self.config, ctx.cfg
        beta = c.beta if c.beta is not None else cfg.train.beta
        ctx.require_pairs(self.name, "reward", "cost")
        pairs = ctx.reward_pairs
        extra: dict[str, Any] = {"beta": beta, "margin": c.margin, "beta_in_relabel": c.beta_in_relabel}

        # 1. pre-alignment: the two implicit scorers, same β, both from π_ref
        pi = {"ref": ctx.policy_path}
        for key, data in (("r", pairs), ("g", ctx.cost_pairs)):
            pi[key] = str(train_dpo(data, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.work_dir / f"pi_{key}", cfg=cfg,
                                    device=ctx.device, run_name=f"pecan-pi_{key}"))
            rec = read_train_record(pi[key])
            ctx.log({"stage": f"pi_{key}", "train_loss": rec.get("train_loss"), "steps": rec.get("steps"), "pairs": rec.get("pairs")})

        # 2. log-probs of the π_ref samples (dual) and of the training pairs (relabelling) under π_ref, π_r, π_g
        flat_p: list[str] = []
        flat_y: list[str] = []
        if c.lambda_ is None:
            prompts, samples = sample_reference(ctx, c.num_prompts, c.samples_per_prompt, c.temperature, c.top_p)
            flat_p = [p for p, ys in zip(prompts, samples) for _ in ys]
            flat_y = [y for ys in samples for y in ys]
        bs = c.logprob_batch_size or None
        lp = {key: _log_probs(path, ctx, flat_p, flat_y, pairs, bs) for key, path in pi.items()}
        h_r = [lp["r"][i] - lp["ref"][i] for i in range(3)]  # (samples, chosen, rejected)
        h_g = [lp["g"][i] - lp["ref"][i] for i in range(3)]

        # 3. dual on the implicit scores of the π_ref samples
        if c.lambda_ is not None:
            lam = float(c.lambda_)
            ctx.log({"stage": "dual", "lambda": lam, "fixed_lambda": True})
        else:
            shape = (len(prompts), c.samples_per_prompt)
            hr, hg = h_r[0].double().reshape(shape).numpy(), h_g[0].double().reshape(shape).numpy()
            result = pecan_dual(hr, hg, c.margin, beta, c.check_feasible, **c.solver())
            lam = resolve_lambda(result, c, "PeCAN")
            stats = {"kl_ref_pi_g": float(-hg.mean()), "h_r_mean": float(hr.mean()), "dual_prompts": shape[0],
                     "samples_per_prompt": shape[1], "margin_over_beta": c.margin / beta,
                     # how far π_g moved from π_ref on its own samples: the spread the relative constraint can use
                     "h_g_best_minus_mean": float(hg.max(axis=1).mean() - hg.mean()), "h_g_std": float(hg.std())}
            ctx.log({"stage": "dual", "lambda": lam, **result.summary(), **stats})
            extra["dual"] = {**result.summary(), **stats, "lambda_trajectory": result.trajectory}

        # 4. primal: relabel the training pairs with one draw each, then DPO against π_ref
        s_c = pecan_scores(h_r[1].tolist(), h_g[1].tolist(), lam, beta, c.beta_in_relabel)
        s_r = pecan_scores(h_r[2].tolist(), h_g[2].tolist(), lam, beta, c.beta_in_relabel)
        seed = c.relabel_seed if c.relabel_seed is not None else ctx.seed
        relabelled, rows = relabel(pairs, s_c, s_r, seed)
        path = write_jsonl(ctx.work_dir / "pecan_relabelled.jsonl", rows)
        swapped = sum(row["swapped"] for row in rows)
        ctx.log({"stage": "relabel", "lambda": lam, "pairs": len(rows), "swapped": swapped, "swap_rate": swapped / len(rows)})
        extra["relabel"] = {"pairs": len(rows), "swapped": swapped, "seed": seed, "path": str(path)}

        out = train_dpo(relabelled, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.out_dir, cfg=cfg, device=ctx.device,
                        run_name="pecan")
        extra["relabel"]["path"] = str(keep_with_model(path, out))
        rec = read_train_record(out)
        ctx.log({"stage": "dpo", "lambda": lam, "train_loss": rec.get("train_loss"), "steps": rec.get("steps")})
        extra["lambda"] = lam
        return TrainResult(model_path=str(out), models_trained=3, networks_held=["policy", "reference", "pi_r", "pi_g"], extra=extra)
