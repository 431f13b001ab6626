"""MoCAN (arXiv 2405.19544, NeurIPS 2024; methods.md §5.1): model-based constrained alignment in one DPO run.

The dual of the KL-regularised constrained problem (methods.md §1) is convex and smooth in λ, so MoCAN solves it
*offline*, on responses sampled once from the SFT policy π_ref and scored by the reward and cost annotators, and
then runs a single DPO toward `π*_{λ*} ∝ π_ref·exp((r + λ*·g)/β)`, `g = −cost`:

1. **Dual.** K responses for each of N held-out prompts; λ* = argmin_{λ≥0} D̂(λ) by projected gradient descent,
   `D̂(λ) = β·mean_i log mean_k exp((r_ik + λ(g_ik − b))/β)` (upstream `safe_rlhf/trainers/model_based.py`).
2. **Primal.** Every training pair (x, y_a, y_b) is relabelled by one Bernoulli draw with
   `P(y_a chosen) = σ(s_a − s_b)`, `s = r + λ*·g` (upstream `safe_rlhf/algorithms/cdpo/dpo.py`), then DPO with β
   against π_ref. The relabelled pairs (with their probabilities and draws) are written as JSONL to `work_dir`
   and copied into the saved model folder, which outlives the run's scratch space.

The harness uses one annotator pair for the dual and the relabelling (upstream: Beaver v1.0 vs v3.0 [verify]).
The dual solver, the reference sampler and the relabelling are shared with PeCAN (`methods/pecan.py`).
Upstream reference (read, not vendored): `shuoli90/CAN@68a922c`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from harness.errors import BenchError
from methods.base import TrainContext, TrainResult

if TYPE_CHECKING:
    from harness.types import PreferencePair

log = logging.getLogger("bench")


# -- the dual solver (shared with PeCAN) ----------------------------------------------------------------------------


@dataclass
class DualResult:
    """Outcome of projected gradient descent on a 1-D convex dual."""

    lam: float  # λ* when converged; otherwise the last iterate of the final attempt
    converged: bool
    iterations: int  # iterations of the final attempt
    total_iterations: int  # over all attempts
    attempts: int  # 1 + number of restarts with a halved step
    eta: float  # step size of the final attempt
    grad: float  # dual gradient at the last iterate
    trajectory: list[float] = field(default_factory=list)  # λ iterates of the final attempt (λ_0 first)

    def summary(self) -> dict[str, Any]:
        """The scalar fields, for `ctx.log` and the results record."""
        return {k: v for k, v in asdict(self).items() if k != "trajectory"}


def projected_gradient_descent(
    grad: Callable[[float], float],
    *,
    lambda_init: float = 1.0,
    eta: float = 2.0,
    tol: float = 1e-5,
    window: int = 5,
    max_iters: int = 200,
    min_iters: int = 10,
    max_attempts: int = 5,
) -> DualResult:
    """Minimise a convex D over λ ≥ 0 given D': `λ ← max(0, λ − η·D'(λ))` (CAN's dual solver, methods.md §5.1).

    Converged once the last `window` iterates all lie within `tol` of the current one (and at least `min_iters`
    steps were taken). Otherwise restart from `lambda_init` with η halved, at most `max_attempts` attempts in all
    (η, η/2, η/4, ...); after that the dual has no finite minimiser on these samples (b is infeasible) and the
    result says `converged=False`. Upstream halves cumulatively (η, η/2, η/8, ...); we halve once per restart.
    """
    if eta <= 0 or tol <= 0 or window < 1 or max_iters < 1 or max_attempts < 1:
        raise ValueError("projected_gradient_descent needs eta > 0, tol > 0, window >= 1, max_iters >= 1, max_attempts >= 1")
    total = 0
    lam, g, step, traj, it = float(lambda_init), float("nan"), eta, [float(lambda_init)], 0
    for attempt in range(1, max_attempts + 1):
        step = eta / 2 ** (attempt - 1)
        lam, traj = max(0.0, float(lambda_init)), [max(0.0, float(lambda_init))]
        for it in range(1, max_iters + 1):
            g = float(grad(lam))
            if not math.isfinite(g):
                break
            lam = max(0.0, lam - step * g)
            traj.append(lam)
            total += 1
            if it >= min_iters and len(traj) >= window and max(abs(lam - x) for x in traj[-window:]) < tol:
                return DualResult(lam, True, it, total, attempt, step, g, traj)
    return DualResult(lam, False, it, total, max_attempts, step, g, traj)


def score_matrix(x: Any, name: str) -> torch.Tensor:
    """(N prompts, K samples) float64 tensor, refusing anything else (a flat list here is a caller bug)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty (prompts, samples) matrix, got shape {tuple(t.shape)}")
    return t


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


def mocan_dual(r: Any, g: Any, b: float, beta: float, **solver: Any) -> DualResult:
    """λ* for `max E[r] − β·KL  s.t.  E[g] ≥ b`, from scores of K reference samples for each of N prompts.

    Args:
        r, g: (N, K) reward and safety utility (`g = −cost`) of the samples.
        b: the bound on E[g] (a cost bound `E[c] ≤ b_c` is `b = −b_c`).
        beta: the KL coefficient β.
        **solver: `projected_gradient_descent` settings (η = 2, λ_0 = 1, tol 1e-5 over 5 iterates by default).
    """
    if not beta > 0:
        raise ValueError(f"mocan_dual needs beta > 0 (got {beta})")
    r, g = score_matrix(r, "r"), score_matrix(g, "g")
    if r.shape != g.shape:
        raise ValueError(f"r and g must have the same shape, got {tuple(r.shape)} and {tuple(g.shape)}")
    return projected_gradient_descent(lambda lam: mocan_dual_grad(lam, r, g, b, beta), **solver)


# -- relabelling (shared with PeCAN) --------------------------------------------------------------------------------


def relabel(
    pairs: Sequence["PreferencePair"], score_chosen: Sequence[float], score_rejected: Sequence[float], seed: int
) -> tuple[list["PreferencePair"], list[dict[str, Any]]]:
    """One Bernoulli draw per pair: keep the orientation with probability `σ(s_chosen − s_rejected)`, else swap.

    The incoming chosen/rejected orientation carries no information here (the draw is symmetric in the two
    responses); it only names them. Returns the relabelled pairs and one JSON-able row per pair (scores, the
    probability, the uniform draw and whether the pair was swapped), so the dataset can be stored and audited.
    """
    n = len(pairs)
    if len(score_chosen) != n or len(score_rejected) != n:
        raise ValueError(f"relabel: {n} pairs but {len(score_chosen)}/{len(score_rejected)} scores")
    diff = torch.tensor(score_chosen, dtype=torch.float64) - torch.tensor(score_rejected, dtype=torch.float64)
    p_keep = torch.sigmoid(diff).tolist()
    u = np.random.default_rng(seed).random(n)  # exactly one draw per pair, in pair order
    out, rows = [], []
    for pair, s_c, s_r, p, draw in zip(pairs, score_chosen, score_rejected, p_keep, u):
        swap = not bool(draw < p)
        new = pair.swapped() if swap else pair
        out.append(new)
        rows.append({"prompt": new.prompt, "chosen": new.chosen, "rejected": new.rejected, "swapped": swap,
                     "p_keep": p, "u": float(draw), "score_original_chosen": float(s_c),
                     "score_original_rejected": float(s_r), "source": pair.source})
    return out, rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def keep_with_model(path: Path, model_dir: Path) -> Path:
    """Copy a training-data record into the saved model folder: the harness deletes `work_dir` after training."""
    return Path(shutil.copy2(path, Path(model_dir) / path.name))


# -- shared configuration and plumbing for MoCAN / PeCAN -----------------------------------------------------------


@dataclass
class CANDualConfig:
    """Settings shared by MoCAN and PeCAN: reference sampling, the dual solver, the relabelling draw."""

    num_prompts: int = 0  # N dual prompts from the held-out `dual` fold; 0 = all (capped by data.max_dual_prompts) [ours; paper ≈1,000-1,600]
    samples_per_prompt: int = 8  # K responses per prompt from π_ref [ours: CPU-sized; paper ≥ 128]
    temperature: float = 1.0  # sampling temperature for the π_ref samples (must be > 0) [ours; verify upstream's]
    top_p: float = 1.0  # nucleus sampling for the π_ref samples [ours]
    lambda_init: float = 1.0  # λ_0 [code]
    eta: float = 2.0  # projected-GD step size η [code: lr=2]
    tol: float = 1e-5  # convergence: last `window` iterates within tol [code]
    window: int = 5  # iterates the tolerance is checked over [code]
    max_iters: int = 200  # iterations per attempt [code: 200; paper 100-200]
    min_iters: int = 10  # no convergence check before this many iterations [code]
    max_attempts: int = 5  # attempts in all, η halved on each restart [code]; then b is declared infeasible
    on_infeasible: str = "last"  # no finite λ*: "last" = use the final iterate (large λ: safety dominates) | "raise" [ours]
    lambda_: float | None = None  # fixed λ: skip sampling and the dual (upstream runs are labelled by λ) [code]
    relabel_seed: int | None = None  # seed of the one Bernoulli draw per pair; None = the run seed [ours]

    def validate(self) -> None:
        if self.on_infeasible not in ("last", "raise"):
            raise BenchError(f"on_infeasible must be 'last' or 'raise' (got {self.on_infeasible!r})")
        if self.lambda_ is not None and self.lambda_ < 0:
            raise BenchError(f"lambda_ must be >= 0 (got {self.lambda_})")
        if self.lambda_ is None and (self.samples_per_prompt < 1 or not self.temperature > 0):
            raise BenchError("the dual needs samples_per_prompt >= 1 and temperature > 0 (distinct samples from π_ref)")

    def solver(self) -> dict[str, Any]:
        return dict(lambda_init=self.lambda_init, eta=self.eta, tol=self.tol, window=self.window, max_iters=self.max_iters,
                    min_iters=self.min_iters, max_attempts=self.max_attempts)


def sample_reference(ctx: TrainContext, num_prompts: int, k: int, temperature: float, top_p: float) -> tuple[list[str], list[list[str]]]:
    """K sampled responses from π_ref (the SFT policy) for each held-out dual prompt: (prompts, responses[N][K])."""
    from harness.generation import cached_generate, close_generator
    from harness.types import SamplingParams

    prompts = ctx.dual_prompts[: num_prompts or None]
    if not prompts:
        raise BenchError("the dual needs held-out prompts, but the dataset's 'dual' fold is empty (raise data.max_dual_prompts)")
    params = SamplingParams(max_new_tokens=ctx.cfg.generation.max_new_tokens, temperature=temperature, top_p=top_p, seed=ctx.seed)
    gen = ctx.make_generator(ctx.policy_path)
    flat, _ = cached_generate(gen, [p for p in prompts for _ in range(k)], params, ctx.cfg.generation.cache)
    close_generator(gen)  # before the annotators score: vLLM and a scorer never share the GPU
    return prompts, [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


def resolve_lambda(result: DualResult, cfg: CANDualConfig, what: str) -> float:
    """λ to train with: λ* if the dual converged; else the last iterate or an error, per `on_infeasible`."""
    if result.converged:
        return result.lam
    msg = (f"{what}: the dual did not converge after {result.attempts} attempts (last λ = {result.lam:.4g}, gradient "
           f"{result.grad:.4g}): the constraint is likely infeasible on these samples")
    if cfg.on_infeasible == "raise":
        raise BenchError(msg + " (loosen the bound, add samples, or set on_infeasible=last / lambda_)")
    log.warning("%s; training with the last iterate", msg)
    return result.lam


# -- MoCAN ------------------------------------------------------------------------------------------------------------


@dataclass
class MoCANConfig(CANDualConfig):
    """MoCAN: offline dual on annotator scores of π_ref samples, then one DPO on relabelled pairs."""

    beta: float | None = None  # KL coefficient β of the dual and the DPO step; None = train.beta [paper/code 0.1 (or 0.025)]
    threshold: float | None = None  # cost bound b_c in the utility's units (E[c] ≤ b_c); None = scoring.threshold [ours]
    utility: str = "auto"  # safety utility g: "score" (g = −cost, upstream) | "indicator" (g = −1[cost > 0], b_c is an
    #                        unsafe rate) | "auto" (indicator when scoring.threshold_units is unsafe_rate) [ours]

    def validate(self) -> None:
        super().validate()
        if self.utility not in ("auto", "score", "indicator"):
            raise BenchError(f"utility must be auto, score or indicator (got {self.utility!r})")
        if self.beta is not None and not self.beta > 0:
            raise BenchError(f"beta must be > 0 (got {self.beta})")


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
        from harness.dpo import read_train_record, train_dpo

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
            result = mocan_dual(r, g, -bound, beta, **c.solver())
            lam = resolve_lambda(result, c, "MoCAN")
            ref_stats = {"ref_reward_mean": float(r.mean()), "ref_utility_mean": float(g.mean()), "dual_prompts": shape[0],
                         "samples_per_prompt": shape[1]}
            ctx.log({"stage": "dual", "lambda": lam, **result.summary(), **ref_stats})
            extra["dual"] = {**result.summary(), **ref_stats, "lambda_trajectory": result.trajectory}

        # 2. primal: relabel the training pairs by σ(s_a − s_b), s = r + λ·g, with one draw each
        pairs = ctx.reward_pairs
        if not pairs:
            raise BenchError("MoCAN needs reward pairs in the train fold, but there are none")
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
