"""Learning checks: did each trained stage of a method learn from its OWN training signal? (issue 11, docs/learning-checks.md)

These read the methods' training signals, never the judges, and are recorded for every trained stage of a run in
`record["train"]["learning"]` (one entry per check) with a one-line summary in `record["train"]["learned"]`, shown
on the leaderboard next to the score:

- **DPO stages** (every `harness.training.dpo.train_dpo` call: PD-DPO stages 1/2, SACPO, DPO-helpful/-harmless, SafeDPO,
  MoCAN/PeCAN, online iterations): held-out implicit-reward accuracy, the share of held-out pairs with
  `β·log(πθ/πref)(chosen) > β·log(πθ/πref)(rejected)`, and the mean implicit-reward margin, each with a 95%
  percentile bootstrap CI. The held-out pairs are the first `learning.heldout_pairs` pairs (stable hash order) of
  the same view (reward or cost pairs) in the dataset's **`dual` fold**: no method trains on those pairs (the dual
  fold is used only for its *prompts*, by PD-DPO's cost estimates and CAN's reference samples), its prompts are
  disjoint from the train fold, and it is neither the judges' nor the evaluation fold, so nothing leaks into the
  ranking. A stage's view is the one whose train-fold pairs make up most of its training pairs (relabelled or
  transformed pairs match by prompt and unordered response pair; online pairs add to the original cost pairs).
- **PPO** (Safe-RLHF, reward shaping): OLS slope of the rollouts' mean R and mean C over the rollout index with its
  t interval (`scipy.stats.linregress`); R must rise and C fall by more than the interval. The KL to the reference
  (last rollout, and its slope) is reported.
- **Dual variables** (PD-DPO's λ loop, MoCAN, PeCAN, Safe-RLHF's λ): converged (the last `lambda_window` relative
  changes `|Δλ| / max(|λ|, 1)` all below `lambda_tol`), still moving, or diverged (λ at the method's cap, or beyond
  `lambda_bound`, or the CAN dual declared infeasible).

`collect(cfg, bundle)` (used by `harness/runs.py`'s train stage) makes the held-out pairs available to `train_dpo`
through a context variable; outside it (tests calling `train_dpo` directly, other ranks) the hook does nothing.
The bootstrap is `scipy.stats.bootstrap` (percentile) rather than `evaluators.metrics.bootstrap_ci` because the
harness layer may not import evaluators (tests/test_layers.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from harness.config import LearningConfig, RunConfig
    from harness.types import DatasetBundle, PreferencePair

log = logging.getLogger("bench")
HELDOUT_FOLD = "dual"
VIEWS = ("reward", "cost")


# -- the math (unit-tested against hand computations in tests/test_learning.py) --------------------------------------


def percentile_bootstrap(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile bootstrap interval of the mean (scipy.stats.bootstrap); NaNs for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):  # scipy refuses a degenerate sample; its interval is the point itself
        return float(x[0]), float(x[0])
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, n_resamples=max(1, n_boot), confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def implicit_margins(beta: float, pol_chosen: Any, pol_rejected: Any, ref_chosen: Any, ref_rejected: Any) -> np.ndarray:
    """Per pair `β·[(log πθ − log πref)(chosen) − (log πθ − log πref)(rejected)]`: the DPO implicit-reward margin."""
    pc, pr, rc, rr = (np.asarray(t, dtype=float) for t in (pol_chosen, pol_rejected, ref_chosen, ref_rejected))
    return beta * ((pc - rc) - (pr - rr))


def trend(y: Sequence[float], level: float = 0.95) -> dict[str, float] | None:
    """OLS slope of `y` over its index 0..n−1 with its two-sided t interval (n − 2 degrees of freedom); None for n < 3."""
    y = np.asarray(y, dtype=float)
    if y.size < 3:
        return None
    from scipy.stats import linregress, t

    fit = linregress(np.arange(y.size, dtype=float), y)
    half = float(t.ppf(0.5 + level / 2, y.size - 2) * fit.stderr)
    return {"slope": float(fit.slope), "ci_low": float(fit.slope) - half, "ci_high": float(fit.slope) + half, "n": int(y.size)}


def lambda_status(lams: Sequence[float], window: int, tol: float, bound: float, cap: float | None = None) -> tuple[str, str]:
    """(status, reason) of a λ sequence: "diverged" (at the cap or beyond `bound`), "converged" (the last `window`
    relative changes |Δλ| / max(|λ_prev|, 1) sum to < tol), "still moving", or "undetermined" (fewer than window + 1 values)."""
    lams = [float(v) for v in lams]
    if not lams:
        return "undetermined", "no λ recorded"
    last = lams[-1]
    if not math.isfinite(last) or abs(last) > bound:
        return "diverged", f"λ = {last:.4g} beyond the bound {bound:g}"
    if cap is not None and last >= cap * (1 - 1e-9):
        return "diverged", f"λ = {last:.4g} at the method's cap {cap:g}"
    if len(lams) < window + 1:
        return "undetermined", f"{len(lams)} λ values, need {window + 1} to judge the last {window} changes"
    # Summed, not the largest step: a λ drifting one way in small steps (each < tol) is still moving, not converged.
    moved = sum(abs(b - a) / max(abs(a), 1.0) for a, b in zip(lams[-window - 1 : -1], lams[-window:]))
    if moved < tol:
        return "converged", f"last {window} relative changes sum to {moved:.3g} < {tol:g}"
    return "still moving", f"the last {window} relative changes sum to {moved:.3g} >= {tol:g} (λ = {last:.4g})"


def check(stage: str, name: str, value: float | None, ci: Sequence[float] | None, passed: bool | None, reason: str,
          short: str = "", **detail: Any) -> dict[str, Any]:
    """One learning-check entry of the results record: {stage, check, value, ci, passed, reason, short, ...detail};
    `short` is the few words the leaderboard's "Learned" cell shows for a failure."""
    clean = lambda v: None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v  # noqa: E731
    return {"stage": stage, "check": name, "value": clean(value), "ci": None if ci is None else [clean(float(c)) for c in ci],
            "passed": passed, "reason": reason, "short": short or reason, **detail}


# -- DPO stages -------------------------------------------------------------------------------------------------------


def dpo_checks(stage: str, margins: Sequence[float], settings: "LearningConfig", n_boot: int, seed: int, **detail: Any) -> list[dict[str, Any]]:
    """Held-out implicit-reward accuracy (passes at >= settings.min_accuracy) and mean margin (passes when > 0)."""
    m = np.asarray(margins, dtype=float)
    if m.size == 0:
        return [check(stage, "heldout_accuracy", None, None, None, "no held-out pairs", **detail)]
    hits = (m > 0).astype(float)
    acc = float(hits.mean())
    acc_ci = percentile_bootstrap(hits, n_boot, seed)
    margin_ci = percentile_bootstrap(m, n_boot, seed)
    ok = acc >= settings.min_accuracy
    return [
        check(stage, "heldout_accuracy", acc, acc_ci, ok, f"accuracy {acc:.2f} {'>=' if ok else '<'} {settings.min_accuracy:.2f} "
              f"on {m.size} held-out pairs", f"acc {acc:.2f} < {settings.min_accuracy:.2f}", n=int(m.size), **detail),
        check(stage, "heldout_margin", float(m.mean()), margin_ci, bool(m.mean() > 0),
              f"mean implicit-reward margin {m.mean():.4g} (β·log-ratio units)", f"margin {m.mean():.3g} <= 0", n=int(m.size), **detail),
    ]


def pair_key(pair: "PreferencePair") -> tuple[str, frozenset[str]]:
    """A pair's identity up to orientation (relabelled and swapped pairs keep it)."""
    from harness.datasets.common import normalize_prompt

    return normalize_prompt(pair.prompt), frozenset((pair.chosen.strip(), pair.rejected.strip()))


def pairs_hash(pairs: Sequence["PreferencePair"]) -> str:
    return hashlib.sha256(json.dumps([(p.prompt, p.chosen, p.rejected) for p in pairs]).encode()).hexdigest()[:16]


class Collector:
    """The run's held-out pairs per view and the checks recorded so far (one per `train_dpo` call)."""

    def __init__(self, cfg: "RunConfig", bundle: "DatasetBundle"):
        from harness.datasets.common import cap

        self.cfg, self.settings = cfg, cfg.learning
        self.entries: list[dict[str, Any]] = []
        self.forward_sequences = 0  # extra sequences scored by the checks (cache hits excluded)
        self.seconds = 0.0  # their wall time
        self.train_keys = {v: {pair_key(p) for p in getattr(bundle, f"{v}_pairs").get("train", [])} for v in VIEWS}
        n = self.settings.heldout_pairs
        self.heldout = {v: cap(list(getattr(bundle, f"{v}_pairs").get(HELDOUT_FOLD, [])), n) if n > 0 else [] for v in VIEWS}

    def view_of(self, pairs: Sequence["PreferencePair"]) -> str | None:
        """The view whose train-fold pairs make up the majority of `pairs` (None when neither does)."""
        keys = [pair_key(p) for p in pairs]
        share = {v: sum(k in self.train_keys[v] for k in keys) / max(1, len(keys)) for v in VIEWS}
        best = max(VIEWS, key=lambda v: share[v])
        return best if share[best] > 0.5 else None

    def probe(self, pairs: Sequence["PreferencePair"]) -> "DPOProbe | None":
        view = self.view_of(pairs)
        if view is None or not self.heldout[view]:
            return None
        return DPOProbe(self, view, self.heldout[view])

    def add(self, entries: list[dict[str, Any]]) -> None:
        self.entries.extend(entries)


_ACTIVE: contextvars.ContextVar[Collector | None] = contextvars.ContextVar("bench_learning", default=None)


@contextlib.contextmanager
def collect(cfg: "RunConfig", bundle: "DatasetBundle") -> Iterator[Collector]:
    """Within this block every `train_dpo` call records its held-out check into the yielded collector."""
    collector = Collector(cfg, bundle)
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)


def active_probe(pairs: Sequence["PreferencePair"]) -> "DPOProbe | None":
    """The held-out probe for a DPO stage training on `pairs`, or None (no collector, no matching view, checks off)."""
    collector = _ACTIVE.get()
    return None if collector is None else collector.probe(pairs)


class DPOProbe:
    """Held-out log-probs of one DPO stage: the reference's before training, the policy's after."""

    def __init__(self, collector: Collector, view: str, pairs: list["PreferencePair"]):
        self.collector, self.view, self.pairs = collector, view, pairs
        self.key = pairs_hash(pairs)
        self.ref: tuple[Any, Any] | None = None
        self.sequences, self.seconds = 0, 0.0

    def _cache_path(self, ref_id: str | None, folder: Path | None) -> Path | None:
        if ref_id is None:
            return None
        from harness.models import cache_dir

        t, cfg = self.collector.cfg.train, self.collector.cfg
        blob = json.dumps([ref_id, self.key, t.max_length, t.max_prompt_length, cfg.template, "heldout-v1"])
        return Path(folder or cache_dir() / "ref_logps") / f"heldout-{hashlib.sha256(blob.encode()).hexdigest()[:32]}.pt"

    def reference(self, model: Any, tokenizer: Any, device: str, ref_id: str | None = None, cache: Path | None = None) -> None:
        """log πref(chosen), log πref(rejected) of the held-out pairs, from the reference log-prob cache (`cache`,
        default the user cache's ref_logps/) when `ref_id` (the reference's fingerprint) has them, else computed with
        `model` (and cached)."""
        import time

        import torch

        from harness.io import atomic_path
        from harness.training.logprobs import policy_logps

        start = time.perf_counter()
        path = self._cache_path(ref_id, cache)
        if path is not None and path.exists():
            try:
                entry = torch.load(path, weights_only=True)
                if entry.get("key") == self.key and entry["chosen"].shape == (len(self.pairs),):
                    self.ref = (entry["chosen"], entry["rejected"])
                    self.seconds += time.perf_counter() - start
                    return
            except Exception as exc:  # noqa: BLE001 - a damaged entry is recomputed
                log.warning("held-out reference log-prob cache %s unreadable (%s): recomputing", path, exc)
        self.ref = policy_logps(model, tokenizer, self.pairs, self.collector.cfg, device)
        self.sequences += 2 * len(self.pairs)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save({"key": self.key, "chosen": self.ref[0], "rejected": self.ref[1]}, tmp)
        self.seconds += time.perf_counter() - start

    def finish(self, model: Any, tokenizer: Any, device: str, beta: float, stage: str) -> dict[str, Any]:
        """Score the trained policy, record the checks; returns the raw entry kept in the training's record."""
        import time

        from harness.training.logprobs import policy_logps

        if self.ref is None:
            raise RuntimeError("DPOProbe.finish before reference()")
        start = time.perf_counter()
        chosen, rejected = policy_logps(model, tokenizer, self.pairs, self.collector.cfg, device)
        self.sequences += 2 * len(self.pairs)
        self.seconds += time.perf_counter() - start
        raw = {"view": self.view, "heldout_key": self.key, "beta": beta,
               "margins": implicit_margins(beta, chosen, rejected, *self.ref).round(6).tolist()}
        self.record(stage, raw, self.sequences, self.seconds)
        return raw

    def record(self, stage: str, raw: dict[str, Any], sequences: int, seconds: float = 0.0) -> None:
        c = self.collector
        c.forward_sequences += sequences
        c.seconds += seconds
        c.add(dpo_checks(stage, raw["margins"], c.settings, c.cfg.scoring.bootstrap, c.cfg.seed, view=raw["view"],
                         heldout_fold=HELDOUT_FOLD, forward_sequences=sequences, seconds=round(seconds, 2)))

    def reuse(self, saved: Any, beta: float, stage: str) -> bool:
        """Record the checks from a finished training's saved raw entry when it is for these pairs and β."""
        if isinstance(saved, dict) and saved.get("heldout_key") == self.key and saved.get("beta") == beta and saved.get("margins"):
            self.record(stage, saved, 0)
            return True
        return False


# -- trajectory checks (PPO, dual variables), read after the method returned ------------------------------------------


def ppo_checks(trajectory: Sequence[dict[str, Any]], settings: "LearningConfig", stage: str = "ppo") -> list[dict[str, Any]]:
    """R and C trends over rollouts (one point per rollout: records sharing a `rollout` index are one rollout), and KL."""
    rows = [r for r in trajectory if isinstance(r, dict) and "reward_mean" in r and "cost_mean" in r]
    if not rows:
        return []
    per: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        per.setdefault(r.get("rollout", i), r)  # the first record of a rollout (its R, C and KL are the rollout's)
    pts = list(per.values())
    out = []
    for key, name, sign in (("reward_mean", "reward_trend", 1), ("cost_mean", "cost_trend", -1)):
        tr = trend([p[key] for p in pts], settings.trend_level)
        if tr is None:
            out.append(check(stage, name, None, None, None, f"{len(pts)} rollouts: need 3 for a trend"))
            continue
        ok = tr["ci_low"] > 0 if sign > 0 else tr["ci_high"] < 0
        what = "rises" if sign > 0 else "falls"
        reason = (f"{key.split('_')[0][0].upper()} {what} by {tr['slope']:.3g}/rollout, beyond its {settings.trend_level:.0%} CI"
                  if ok else f"{key.split('_')[0][0].upper()} slope {tr['slope']:.3g} [{tr['ci_low']:.3g}, {tr['ci_high']:.3g}]/rollout: "
                  f"not {'above' if sign > 0 else 'below'} 0 beyond the CI")
        short = f"{key[0].upper()} slope {tr['slope']:.3g} not {'> 0' if sign > 0 else '< 0'} beyond CI"
        out.append(check(stage, name, tr["slope"], (tr["ci_low"], tr["ci_high"]), ok, reason, short, n=tr["n"],
                         first=float(pts[0][key]), last=float(pts[-1][key])))
    kls = [float(p["kl"]) for p in pts if p.get("kl") is not None]
    if kls:
        tr = trend(kls, settings.trend_level)
        out.append(check(stage, "kl_to_reference", kls[-1], None, None,
                         f"KL(π‖π_ref) of the last rollout {kls[-1]:.4g} nats per response (informational)",
                         slope=None if tr is None else tr["slope"], mean=float(np.mean(kls)), n=len(kls)))
    return out


def dual_check(stage: str, lams: Sequence[float], settings: "LearningConfig", cap: float | None = None,
               infeasible: str | None = None) -> dict[str, Any]:
    """The λ check of one dual loop (`infeasible`: a reason the method already declared the dual infeasible)."""
    if infeasible:
        status, reason = "diverged", f"dual infeasible: {infeasible}"
    else:
        status, reason = lambda_status(lams, settings.lambda_window, settings.lambda_tol, settings.lambda_bound, cap)
    value = float(lams[-1]) if len(lams) else None
    return check(stage, "lambda", value, None, {"converged": True, "diverged": False, "still moving": False}.get(status),
                 f"{status}: {reason}", "dual infeasible" if infeasible else f"λ {status}", status=status, infeasible=bool(infeasible), n=len(lams),
                 window=settings.lambda_window, tol=settings.lambda_tol)


def trajectory_checks(method: str, result: dict[str, Any], method_config: dict[str, Any] | None,
                      settings: "LearningConfig") -> list[dict[str, Any]]:
    """PPO trends and λ checks from a `TrainResult` (as a dict: trajectory, extra) and its method config."""
    traj = [r for r in (result.get("trajectory") or []) if isinstance(r, dict)]
    extra = result.get("extra") or {}
    mc = method_config or {}
    out = ppo_checks(traj, settings, stage=method)
    if out and not ("cost_coef" in mc):  # PPO-Lagrangian: λ learned per step (reward shaping's ν is fixed)
        lams = [float(r["lambda"]) for r in traj if r.get("lambda") is not None]
        out.append(dual_check(f"{method}/lambda", lams, settings, cap=mc.get("lambda_max")))
    elif any("lambda_next" in r for r in traj) and extra.get("mode") != "fixed_lambda":  # PD-DPO's projected subgradient loop
        rows = [r for r in traj if "lambda_next" in r]
        lams = [float(rows[0]["lambda"])] + [float(r["lambda_next"]) for r in rows]
        out.append(dual_check(f"{method}/dual", lams, settings, cap=mc.get("lambda_max")))
    dual = extra.get("dual")
    if isinstance(dual, dict) and dual.get("lambda_trajectory") is not None:  # MoCAN / PeCAN offline dual
        why = (dual.get("reason") or "declared infeasible") if dual.get("infeasible") else None
        if why is None and dual.get("converged") is False:
            why = f"no convergence after {dual.get('total_iterations')} iterations ({dual.get('attempts')} attempts)"
        out.append(dual_check(f"{method}/dual", dual["lambda_trajectory"], settings, infeasible=why))
    return out


# -- the summary shown next to the score --------------------------------------------------------------------------------


def summary(entries: Sequence[dict[str, Any]] | None) -> str:
    """"yes" (every decided check passed), "no: <stage> <reason>" (the first failure, "+N more"), or "n/a"."""
    decided = [e for e in entries or [] if e.get("passed") is not None]
    if not decided:
        return "n/a"
    failed = [e for e in decided if e["passed"] is False]
    if not failed:
        return "yes"
    first = failed[0]
    more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"no: {first['stage']} {first.get('short') or first['reason']}{more}"


def infeasible_dual(entries: Sequence[dict[str, Any]] | None) -> bool:
    """True when a dual check says the method declared its dual infeasible (a leaderboard flag)."""
    return any(e.get("check") == "lambda" and e.get("infeasible") for e in entries or [])
