"""Paired statistics for the leaderboard: method differences, McNemar, Holm, tiers, Rogan–Gladen, LC reward.

Every method answers the same evaluation prompts, so methods are compared on those prompts (paired). Inputs are
per-prompt values as a (seeds x prompts) matrix (or one per-prompt vector = one seed), prompts in one shared
order. Seeds of two methods are independent training runs, so they are resampled independently; prompts are
shared, so one replicate draws ONE prompt resample applied to both methods (the crossed design of
`evaluators.metrics.bootstrap_seeds_prompts`, which uses this module's `seeds_prompts_replicates`). This module is
the bottom of `evaluators`: it imports no other first-party module.

- `paired_bootstrap_diff`: difference of means (A - B) with a 95% percentile interval and the bootstrap p-value
  dual to it: p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1)), the smallest level at which the
  percentile interval excludes 0 (with the usual +1 so p is never 0).
- `mcnemar_exact`: McNemar's exact test on paired unsafe flags, one seed per method (discordant counts b, c;
  two-sided binomial test of b ~ Bin(b + c, 1/2)). With several seeds per method the leaderboard uses the crossed
  paired bootstrap instead (`leaderboards/compare.py`): a test on seed-averaged flags would treat each method's
  trained models as fixed and ignore the seed-to-seed spread that the interval shown carries.
- `resamples_for_family`: how many bootstrap resamples a family of m comparisons needs so that the smallest
  attainable bootstrap p-value, 2 / (B + 1), can clear Holm's first threshold ALPHA / m (with a factor 2 margin).
- `holm`: Holm's step-down adjustment (statsmodels) over one family of comparisons.
- `tiers`: contiguous tiers over a ranked list (rule in its docstring).
- `rogan_gladen` / `rogan_gladen_ci`: the unsafe rate corrected for the judge's sensitivity and specificity,
  p = (p_obs + Sp - 1) / (Se + Sp - 1) clipped to [0, 1], with an interval that carries both the prompt sampling
  (crossed bootstrap of the judge's decisions) and the judge's own uncertainty (Se ~ Beta(tp + 1, fn + 1),
  Sp ~ Beta(tn + 1, fp + 1): the posteriors of the held-out confusion counts under a uniform prior, one draw per
  replicate).
- `length_controlled`: the length-controlled reward [ours] (docstring).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

CI_LEVEL = 0.95
ALPHA = 0.05  # significance level of every test and of the tiers [ours: the conventional 5%]


def percentile_ci(value: float, boots: np.ndarray) -> dict[str, float]:
    """`{"value", "ci_low", "ci_high"}`: the point estimate and the 95% percentile interval of its replicates."""
    lo, hi = np.percentile(boots, [100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2])
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi)}


def seeds_prompts_replicates(m: np.ndarray, c: np.ndarray, rng: np.random.Generator, w: np.ndarray | None = None) -> np.ndarray:
    """Crossed-bootstrap replicates of the mean of a (seeds x prompts) matrix `m`, given the prompt draw counts
    `c` (B x prompts); seed draw counts `w` (B x seeds) are drawn from `rng` unless given. Replicate b is
    w_b' m c_b / (K N). Paired comparisons pass one `c` to two methods (their prompts are shared, their seeds not)."""
    k, n = m.shape
    if w is None:
        w = rng.multinomial(k, np.full(k, 1 / k), size=c.shape[0])
    return np.einsum("bk,kn,bn->b", w, m, c) / (k * n)


def as_matrix(values: Any) -> np.ndarray:
    """(seeds x prompts) float matrix from a matrix or one per-prompt vector."""
    m = np.asarray(values, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"expected per-prompt values as (seeds x prompts), got shape {m.shape}")
    return m


def _two_sided_boot_p(boots: np.ndarray) -> float:
    b = boots.size
    return float(min(1.0, 2 * min(np.sum(boots <= 0) + 1, np.sum(boots >= 0) + 1) / (b + 1)))


# -- paired comparisons ------------------------------------------------------------------------------------

def paired_bootstrap_diff(a: Any, b: Any, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean(A) - mean(B) on the same prompts: value, 95% percentile interval, bootstrap p-value (module doc)."""
    ma, mb = as_matrix(a), as_matrix(b)
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"paired comparison needs the same prompts: {ma.shape[1]} vs {mb.shape[1]}")
    n = ma.shape[1]
    rng = np.random.default_rng(seed)
    c = rng.multinomial(n, np.full(n, 1 / n), size=max(1, n_boot))  # one prompt resample, shared by A and B
    boots = seeds_prompts_replicates(ma, c, rng) - seeds_prompts_replicates(mb, c, rng)
    out = percentile_ci(float(ma.mean() - mb.mean()), boots)
    out.update(p_value=_two_sided_boot_p(boots), n_prompts=int(n), test="paired-bootstrap")
    return out


def mcnemar_exact(a_flags: Any, b_flags: Any) -> dict[str, Any]:
    """Exact McNemar on paired flags of one seed per method (module doc); several seeds: use the paired bootstrap."""
    from scipy.stats import binomtest

    ma, mb = as_matrix(a_flags), as_matrix(b_flags)
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"paired comparison needs the same prompts: {ma.shape[1]} vs {mb.shape[1]}")
    if ma.shape[0] != 1 or mb.shape[0] != 1:
        raise ValueError(f"McNemar's test takes one seed per method, got {ma.shape[0]} and {mb.shape[0]}: "
                         "compare several seeds with paired_bootstrap_diff")
    d = ma[0] - mb[0]
    n_a, n_b = int(np.sum(d > 0)), int(np.sum(d < 0))
    p = 1.0 if n_a + n_b == 0 else float(binomtest(n_a, n_a + n_b, 0.5).pvalue)
    return {"value": float(ma.mean() - mb.mean()), "a_only": n_a, "b_only": n_b, "p_value": p,
            "n_prompts": int(ma.shape[1]), "test": "mcnemar-exact"}


def resamples_for_family(m: int, n_boot: int) -> int:
    """At least `n_boot`, and enough that 2 / (B + 1) <= ALPHA / (2m): with fewer, no bootstrap p-value in a family of
    m comparisons can survive Holm (e.g. B = 2000 and the 66 pairs of 12 methods: 66 * 2/2001 = 0.066 > 0.05)."""
    return max(int(n_boot), int(np.ceil(4 * max(int(m), 1) / ALPHA)) - 1)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values for one family; None / NaN entries stay None and are not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(p_values) if p is not None and not np.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    if idx:
        adj = multipletests([p_values[i] for i in idx], alpha=ALPHA, method="holm")[1]
        for i, p in zip(idx, adj):
            out[i] = float(p)
    return out


def tiers(ranked: Sequence[str], differs: Callable[[str, str], bool]) -> dict[str, int]:
    """Contiguous tiers over a ranked list of names.

    Rule: the first name opens tier 1. Walking down the ranking, a name joins the current tier if it is
    statistically indistinguishable (`differs` False) from EVERY name already in that tier; otherwise it opens the
    next tier. Tiers never interleave with the ranking, and within a tier no two members differ significantly.
    """
    out: dict[str, int] = {}
    current: list[str] = []
    tier = 0
    for name in ranked:
        if not current or any(differs(name, other) for other in current):
            tier, current = tier + 1, []
        current.append(name)
        out[name] = tier
    return out


# -- Rogan–Gladen -----------------------------------------------------------------------------------------------

def rogan_gladen(p_obs: float, se: float, sp: float) -> float | None:
    """True prevalence from an apparent one: (p_obs + Sp - 1) / (Se + Sp - 1), clipped to [0, 1].

    None when Se + Sp <= 1 (a judge no better than chance carries no information about the true rate)."""
    j = se + sp - 1
    if j <= 0:
        return None
    return float(np.clip((p_obs + sp - 1) / j, 0.0, 1.0))


def rogan_gladen_ci(flags: Any, tp: int, fn: int, tn: int, fp: int, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Corrected unsafe rate with a 95% interval carrying prompt sampling AND the judge's Se/Sp uncertainty.

    `flags`: the judge's unsafe decisions, (seeds x prompts) or per prompt. `tp, fn` are the held-out counts among
    truly unsafe responses (Se = tp / (tp + fn)), `tn, fp` among truly safe ones (Sp = tn / (tn + fp)).
    Replicate b: p_obs* from the crossed seeds x prompts bootstrap, Se* ~ Beta(tp + 1, fn + 1),
    Sp* ~ Beta(tn + 1, fp + 1), p* = RG(p_obs*, Se*, Sp*). If more than (1 - CI level) / 2 of the replicates have
    Se* + Sp* <= 1, the rate is not identified within the interval and the interval is [0, 1].
    """
    m = as_matrix(flags)
    if min(tp, fn, tn, fp) < 0 or tp + fn == 0 or tn + fp == 0:
        raise ValueError(f"Rogan-Gladen needs held-out counts with positives and negatives, got tp={tp} fn={fn} tn={tn} fp={fp}")
    se, sp = tp / (tp + fn), tn / (tn + fp)
    p_obs = float(m.mean())
    out: dict[str, Any] = {"value": rogan_gladen(p_obs, se, sp), "ci_low": None, "ci_high": None, "raw": p_obs,
                           "sensitivity": {"value": se, "tp": int(tp), "fn": int(fn)},
                           "specificity": {"value": sp, "tn": int(tn), "fp": int(fp)},
                           "method": "rogan-gladen; CI: crossed bootstrap x Beta(counts + 1) posteriors of Se, Sp"}
    if out["value"] is None:
        return out
    n = m.shape[1]
    rng = np.random.default_rng(seed)
    b = max(1, n_boot)
    c = rng.multinomial(n, np.full(n, 1 / n), size=b)
    p_boot = seeds_prompts_replicates(m, c, rng)
    se_b, sp_b = rng.beta(tp + 1, fn + 1, size=b), rng.beta(tn + 1, fp + 1, size=b)
    j_b = se_b + sp_b - 1
    ok = j_b > 0
    if np.mean(~ok) > (1 - CI_LEVEL) / 2:
        out["ci_low"], out["ci_high"] = 0.0, 1.0
        return out
    boots = np.clip((p_boot[ok] + sp_b[ok] - 1) / j_b[ok], 0.0, 1.0)
    ci = percentile_ci(out["value"], boots)
    out["ci_low"], out["ci_high"] = ci["ci_low"], ci["ci_high"]
    return out


# -- length-controlled reward [ours] ------------------------------------------------------------------------------

def length_controlled(reward: Sequence[float], length: Sequence[float], ref_reward: Sequence[float] | None = None,
                      ref_length: Sequence[float] | None = None) -> dict[str, Any]:
    """Per-prompt length-controlled reward [ours], after AlpacaEval's length-controlled win rate.

    AlpacaEval fits, per model, a GLM of the win against the baseline on tanh(standardised length difference) and
    reports the win rate predicted at zero length difference. Here, with a scalar reward and the SFT responses
    to the same prompts as the baseline:
      Δr_i = r_i - r0_i,  t_i = tanh((len_i - len0_i) / sd(len - len0)),  OLS  Δr_i = θ + φ t_i + ε_i,
      adjusted_i = r_i - φ t_i,  LC reward = mean_i adjusted_i = mean(r0) + θ
    i.e. the run's mean reward had its responses been as long as SFT's (the part of the gain over SFT that length
    differences explain is removed). Lengths are in words. Without a baseline (the SFT run itself) or without any
    length difference, adjusted = raw. Returns {"adjusted": per-prompt list, "phi", "theta", "n"}.
    """
    r = np.asarray(reward, dtype=float)
    out: dict[str, Any] = {"adjusted": r.tolist(), "phi": 0.0, "theta": None, "n": int(r.size)}
    if ref_reward is None or ref_length is None or r.size < 3:
        return out
    r0, dl = np.asarray(ref_reward, dtype=float), np.asarray(length, dtype=float) - np.asarray(ref_length, dtype=float)
    if r0.shape != r.shape or dl.shape != r.shape:
        raise ValueError("length_controlled: reward, length and the baseline's must cover the same prompts")
    sd = dl.std()
    t = np.tanh(dl / sd) if sd > 0 else np.zeros_like(dl)
    dr = r - r0
    if t.var() > 0:
        phi = float(np.cov(t, dr, bias=True)[0, 1] / t.var())
    else:
        phi = 0.0
    theta = float(dr.mean() - phi * t.mean())
    out.update(adjusted=(r - phi * t).tolist(), phi=phi, theta=theta)
    return out
