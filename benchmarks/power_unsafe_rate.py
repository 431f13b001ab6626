"""Power of the paired unsafe-rate comparison (McNemar's exact test) against the number of evaluation prompts.

Sizes `data.max_eval_prompts` of the cpu profile (configs/cpu.yaml, README "Reading the results"). Two methods
answer the same n prompts; per prompt the pair of judge decisions is discordant with probability p_d
(p10 = A unsafe & B safe, p01 = the reverse, p10 - p01 = delta). McNemar's exact test conditions on the d
discordant prompts: b ~ Bin(d, p10 / p_d), rejected when the two-sided binomial p-value <= alpha. Exact power:

    power(n) = sum_d Bin(d; n, p_d) * P(reject | d)

computed here in closed form (no simulation). alpha = 0.05 for one pre-specified comparison (e.g. a method vs
SFT) and 0.05 / k for the smallest p-value of the k vs-SFT comparisons under Holm (k = 14: the 15-method cpu
suite of scripts/cpu_suite.sh).

    python benchmarks/power_unsafe_rate.py [--comparisons 14]   # the table in docs/leaderboard-statistics.md
    python benchmarks/power_unsafe_rate.py --runs-dir results/cpu-suite --suite cpu-suite   # p_d as measured

With `--runs-dir` it also measures p_d: for each method, the share of prompts whose unsafe flag differs from SFT's
on the same seed (the per-prompt flags in each run's metrics/items.json), averaged over the seeds both have.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import binom


def mcnemar_power(n: int, p10: float, p01: float, alpha: float) -> float:
    pd = p10 + p01
    q = p10 / pd
    power = 0.0
    for d in range(1, n + 1):
        pr_d = binom.pmf(d, n, pd)
        if pr_d < 1e-12:
            continue
        bs = np.arange(d + 1)
        # the exact two-sided p-value of b ~ Bin(d, 1/2) (symmetric): min(1, 2 P[X <= min(b, d - b)]) = binomtest's
        reject = np.minimum(1.0, 2 * binom.cdf(np.minimum(bs, d - bs), d, 0.5)) <= alpha
        power += pr_d * float(binom.pmf(bs[reject], d, q).sum())
    return power


def needed_n(p10: float, p01: float, alpha: float, target: float = 0.8, n_max: int = 2000) -> int | None:
    lo, hi = 10, n_max
    if mcnemar_power(hi, p10, p01, alpha) < target:
        return None
    while lo < hi:  # power is not exactly monotone in n for exact tests; the bisection finds a first crossing
        mid = (lo + hi) // 2
        if mcnemar_power(mid, p10, p01, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def unsafe_flags(runs_dir: str, suite: str | None) -> dict[str, dict[int, np.ndarray]]:
    """method -> seed -> the run's per-prompt unsafe flags (metrics/items.json), runs with store tag `suite` only."""
    import json
    from pathlib import Path

    flags: dict[str, dict[int, np.ndarray]] = {}
    for res in Path(runs_dir).glob("*/results.json"):
        rec = json.loads(res.read_text())
        items = res.parent / "metrics" / "items.json"
        if (suite is not None and rec.get("suite") != suite) or not items.exists():
            continue
        values = json.loads(items.read_text())["values"].get("unsafe_rate")
        if values is not None:
            flags.setdefault(rec["method"], {})[rec["seed"]] = np.asarray(values, dtype=float)
    return flags


def measured_discordance(runs_dir: str, suite: str | None, baseline: str = "sft",
                         flags: dict[str, dict[int, np.ndarray]] | None = None) -> dict[str, tuple[float, int]]:
    """method -> (mean share of prompts whose unsafe flag differs from the baseline's on the same seed, seeds)."""
    flags = unsafe_flags(runs_dir, suite) if flags is None else flags
    base = flags.get(baseline, {})
    out = {}
    for method, by_seed in sorted(flags.items()):
        seeds = [s for s in by_seed if s in base and len(base[s]) == len(by_seed[s])]
        if method != baseline and seeds:
            out[method] = (float(np.mean([np.mean(by_seed[s] != base[s]) for s in seeds])), len(seeds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comparisons", type=int, default=14, help="k vs-SFT comparisons under Holm (methods - 1)")
    ap.add_argument("--runs-dir", help="also measure p_d (vs SFT, same seed) from these runs")
    ap.add_argument("--suite", help="only runs with this store tag (e.g. cpu-suite)")
    args = ap.parse_args()
    k = args.comparisons
    delta = 0.10  # e.g. SFT 0.40 unsafe vs a method at 0.30 (the README's cpu rates are 0.31-0.43)
    print(f"delta = {delta}: n for 80% power, and power at n = 166 (all PKU eval-fold prompts)")
    print(f"p_disc  p10   p01   | n(a=.05) n(a=.05/{k}) | power@166 a=.05  a=.05/{k}")
    for pd in (0.15, 0.20, 0.30, 0.40):
        p10, p01 = (pd + delta) / 2, (pd - delta) / 2
        row = [needed_n(p10, p01, 0.05), needed_n(p10, p01, 0.05 / k)]
        pw = [mcnemar_power(166, p10, p01, a) for a in (0.05, 0.05 / k)]
        print(f"{pd:5.2f}  {p10:.3f} {p01:.3f} | {row[0]!s:>8} {row[1]!s:>11} | {pw[0]:14.2f} {pw[1]:9.2f}")
    if args.runs_dir:
        measured = measured_discordance(args.runs_dir, args.suite)
        print(f"\nmeasured p_d vs SFT ({args.runs_dir}); power of McNemar at n = 166 for delta = {delta} at that p_d")
        print(f"{'method':20s} p_d    seeds | power a=.05  a=.05/{k}")
        for method, (pd, n_seeds) in measured.items():
            if pd <= delta:  # a 10-point difference needs at least 10% of prompts to flip
                print(f"{method:20s} {pd:.3f}  {n_seeds:5d} | p_d <= delta: a {delta:.0%} difference cannot arise at this p_d")
                continue
            p10, p01 = (pd + delta) / 2, (pd - delta) / 2
            print(f"{method:20s} {pd:.3f}  {n_seeds:5d} | {mcnemar_power(166, p10, p01, 0.05):11.2f} {mcnemar_power(166, p10, p01, 0.05 / k):9.2f}")


if __name__ == "__main__":
    main()
