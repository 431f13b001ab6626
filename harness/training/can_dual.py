"""The CAN family's shared machinery (MoCAN, PeCAN; arXiv 2405.19544, docs/methods.md §5): the projected-gradient dual
solver, the Bernoulli relabelling of preference pairs, the sampler of π_ref responses for the dual, and the settings
both methods share (`CANDualConfig`). The method files (`methods/mocan.py`, `methods/pecan.py`) hold only their own
dual objective and `train`.

Upstream reference (read, not vendored): `shuoli90/CAN@68a922c` (`safe_rlhf/trainers/model_based.py` for the
dual, `safe_rlhf/algorithms/cdpo/dpo.py` for the relabelling).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from harness.config import RangeChecked
from harness.errors import BenchError
from harness.registry import lazy_module

torch = lazy_module("torch")  # loads on first use: the method configs below import without it

if TYPE_CHECKING:
    from harness.api import TrainContext
    from harness.types import PreferencePair

log = logging.getLogger("bench")


# -- the dual solver ----------------------------------------------------------------------------


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
    infeasible: bool = False  # stopped early: the constraint cannot be met on these samples (max_slack <= 0, or λ ran past the cap)
    max_slack: float | None = None  # the largest slack any λ reaches on these samples (the gradient's limit as λ → ∞)
    reason: str = ""  # why the dual was declared infeasible

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
    lambda_cap: float | None = None,
) -> DualResult:
    """Minimise a convex D over λ ≥ 0 given D': `λ ← max(0, λ − η·D'(λ))` (CAN's dual solver, docs/methods.md §5.1).

    Converged once the last `window` iterates all lie within `tol` of the current one (and at least `min_iters`
    steps were taken). Otherwise restart from `lambda_init` with η halved, at most `max_attempts` attempts in all
    (η, η/2, η/4, ...); after that the dual has no finite minimiser on these samples (b is infeasible) and the
    result says `converged=False`. Upstream halves cumulatively (η, η/2, η/8, ...); we halve once per restart.

    `lambda_cap` [ours]: once λ passes it while every gradient of the attempt was negative (the slack never
    reached zero), stop at once with `infeasible=True`: a smaller step cannot change the sign, so restarting only
    spends iterations (the cpu profile's PeCAN ran 1,000 of them to λ = 108).
    """
    if eta <= 0 or tol <= 0 or window < 1 or max_iters < 1 or max_attempts < 1:
        raise ValueError("projected_gradient_descent needs eta > 0, tol > 0, window >= 1, max_iters >= 1, max_attempts >= 1")
    total = 0
    lam, g, step, traj, it = float(lambda_init), float("nan"), eta, [float(lambda_init)], 0
    for attempt in range(1, max_attempts + 1):
        step = eta / 2 ** (attempt - 1)
        lam, traj = max(0.0, float(lambda_init)), [max(0.0, float(lambda_init))]
        all_negative = True
        for it in range(1, max_iters + 1):
            g = float(grad(lam))
            if not math.isfinite(g):
                break
            all_negative = all_negative and g < 0
            lam = max(0.0, lam - step * g)
            traj.append(lam)
            total += 1
            if lambda_cap is not None and all_negative and lam > lambda_cap:
                return DualResult(lam, False, it, total, attempt, step, g, traj, infeasible=True,
                                  reason=f"λ passed the cap {lambda_cap:g} after {it} steps with the gradient negative throughout")
            if it >= min_iters and len(traj) >= window and max(abs(lam - x) for x in traj[-window:]) < tol:
                return DualResult(lam, True, it, total, attempt, step, g, traj)
    return DualResult(lam, False, it, total, max_attempts, step, g, traj)


def max_slack(constraint: Any, offset: float) -> float:
    """`mean_i max_k c_ik − offset`: the limit of the CAN dual gradient `mean_i Σ_k softmax_k(a_ik + λ·c_ik)·c_ik − offset`
    as λ → ∞ (the softmax puts all weight on each prompt's largest c). The gradient is non-decreasing in λ (its
    derivative is the softmax-weighted variance of c) and bounded by this limit, so when the limit is <= 0 the slack
    never reaches zero on these samples: no finite λ* exists, and projected GD would push λ up forever."""
    c = score_matrix(constraint, "constraint")
    return float(c.max(dim=1).values.mean() - offset)


def infeasible_result(lambda_init: float, lambda_cap: float, slack: float, what: str) -> DualResult:
    """The dual stopped before its first step: the constraint's largest reachable slack is <= 0 (`max_slack`)."""
    return DualResult(lambda_cap, False, 0, 0, 0, 0.0, float(slack), [float(lambda_init)], infeasible=True, max_slack=float(slack),
                      reason=f"{what}: the largest slack any λ reaches on these samples is {slack:.4g} <= 0")


def score_matrix(x: Any, name: str) -> torch.Tensor:
    """(N prompts, K samples) float64 tensor, refusing anything else (a flat list here is a caller bug)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty (prompts, samples) matrix, got shape {tuple(t.shape)}")
    return t


# -- relabelling --------------------------------------------------------------------------------


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
class CANDualConfig(RangeChecked):
    """Settings shared by MoCAN and PeCAN: reference sampling, the dual solver, the relabelling draw."""

    num_prompts: int = field(default=0, metadata={"range": ">=0", "help": "N dual prompts from the held-out `dual` fold; 0 = all (capped by data.max_dual_prompts) [ours; paper ≈1,000-1,600]"})
    samples_per_prompt: int = field(default=8, metadata={"range": ">=1", "help": "K responses per prompt from π_ref [ours: CPU-sized; paper ≥ 128]"})
    temperature: float = field(default=1.0, metadata={"range": ">=0", "help": "sampling temperature for the π_ref samples (> 0 unless lambda_ is fixed) [ours; verify upstream's]"})
    top_p: float = field(default=1.0, metadata={"range": "(0,1]", "help": "nucleus sampling for the π_ref samples [ours]"})
    lambda_init: float = field(default=1.0, metadata={"range": ">=0", "help": "λ_0 [code]"})
    eta: float = field(default=2.0, metadata={"range": ">0", "help": "projected-GD step size η [code: lr=2]"})
    tol: float = field(default=1e-5, metadata={"range": ">0", "help": "convergence: last `window` iterates within tol [code]"})
    window: int = field(default=5, metadata={"range": ">=1", "help": "iterates the tolerance is checked over [code]"})
    max_iters: int = field(default=200, metadata={"range": ">=1", "help": "iterations per attempt [code: 200; paper 100-200]"})
    min_iters: int = field(default=10, metadata={"range": ">=0", "help": "no convergence check before this many iterations [code]"})
    max_attempts: int = field(default=5, metadata={"range": ">=1", "help": "attempts in all, η halved on each restart [code]; then b is declared infeasible"})
    lambda_cap: float = field(default=100.0, metadata={"range": ">0", "help": "[ours] the dual stops as infeasible once λ passes this with the gradient negative throughout; "
                                                                "also the λ an infeasible dual trains with under on_infeasible=last"})
    check_feasible: bool = field(default=True, metadata={"help": "[ours] before any step, compute the largest slack any λ reaches on the samples "
                                                                 "(mean over prompts of the best sample's constraint value, minus the bound); <= 0: infeasible, stop"})
    on_infeasible: str = field(default="last", metadata={"range": "in:last|raise", "help": "no finite λ*: \"last\" = train with the final iterate (λ_cap when stopped early: safety dominates) | \"raise\" [ours]"})
    lambda_: float | None = field(default=None, metadata={"range": ">=0", "help": "fixed λ: skip sampling and the dual (upstream runs are labelled by λ) [code]"})
    relabel_seed: int | None = field(default=None, metadata={"range": ">=0", "help": "seed of the one Bernoulli draw per pair; None = the run seed [ours]"})

    def validate(self) -> None:
        # samples_per_prompt >= 1 is its declared range; temperature may be 0 only when a fixed λ skips the sampling
        if self.lambda_ is None and not self.temperature > 0:
            raise BenchError("the dual needs temperature > 0 (distinct samples from π_ref), or a fixed lambda_")

    def solver(self) -> dict[str, Any]:
        return dict(lambda_init=self.lambda_init, eta=self.eta, tol=self.tol, window=self.window, max_iters=self.max_iters,
                    min_iters=self.min_iters, max_attempts=self.max_attempts, lambda_cap=self.lambda_cap)


def sample_reference(ctx: "TrainContext", num_prompts: int, k: int, temperature: float, top_p: float) -> tuple[list[str], list[list[str]]]:
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
    if result.infeasible:
        msg = f"{what}: the dual is infeasible ({result.reason}); stopped after {result.total_iterations} iterations, λ = {result.lam:.4g}"
    else:
        msg = (f"{what}: the dual did not converge after {result.attempts} attempts (last λ = {result.lam:.4g}, gradient "
               f"{result.grad:.4g}): the constraint is likely infeasible on these samples")
    if cfg.on_infeasible == "raise":
        raise BenchError(msg + " (loosen the bound, add samples, or set on_infeasible=last / lambda_)")
    log.warning("%s; training with the last iterate", msg)
    return result.lam
