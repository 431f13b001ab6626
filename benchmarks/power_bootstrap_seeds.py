"""Power of the leaderboard's several-seeds unsafe-rate test (the crossed paired bootstrap) against SFT, by simulation.

With several seeds per method the leaderboard compares unsafe flags with `evaluators.stats.paired_bootstrap_diff`
(docs/leaderboard-statistics.md §6), which has no closed-form power; this script estimates it by simulation for a
10-point difference on the cpu suite's 166 prompts, next to McNemar's exact test on one seed and its closed form
(`benchmarks/power_unsafe_rate.py`). The closed form draws SFT's flags afresh; the simulation holds them at SFT's
measured flags, so the two McNemar columns differ a little (the simulated one conditions on SFT's 37 unsafe prompts).
It also reports each test's size (rejections at delta = 0). It calls the leaderboard's own functions, so it measures
the test the leaderboard runs.

The data model [ours, calibrated on the 3-seed cpu suite, not taken from a paper]:
- SFT's flags are SFT's measured flags (results/cpu-suite; SFT trains nothing and decodes greedily, so its seeds are
  identical), or, without --runs-dir, Bernoulli(0.223) (SFT's measured rate).
- A method flips SFT's flag on prompt i with a prompt-level probability g_i ~ Beta(mean f, concentration kappa),
  then each seed flips independently with probability g_i. f differs for SFT-unsafe (f1) and SFT-safe (f0) prompts,
  set so that the expected rate difference is delta and the share of prompts whose flag differs from SFT's on a seed
  is p_d (the McNemar discordance). kappa sets how often two seeds of the method disagree: 2 f (1 - f) kappa /
  (kappa + 1) per prompt; kappa = inf is independent flips. --runs-dir measures the methods' own seed-vs-seed
  disagreement and p_d, and picks the kappa that matches their median ratio.
- tau: a seed-level shift of the method's rate, u_s ~ N(0, tau^2) per seed (f1 lowered and f0 raised so the rate
  moves by u_s). The measured seed-to-seed SD of a method's rate is 0.009-0.054 against 0.014-0.021 expected from
  independent flips alone (the 3-seed cpu suite): PD-DPO 0.042, sacpo 0.054, so tau = 0.04 is the pessimistic case.

    python benchmarks/power_bootstrap_seeds.py [--runs-dir results/cpu-suite --suite cpu-suite] [--sims 300]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluators.stats import mcnemar_exact, paired_bootstrap_diff, resamples_for_family  # noqa: E402
from power_unsafe_rate import mcnemar_power  # noqa: E402

DELTA = 0.10
N_BOOT = 2000  # the leaderboard's default; resamples_for_family(14, 2000) is also 2000


def flip_rates(pi: float, p_d: float, delta: float) -> tuple[float, float]:
    """(f1, f0): flip probabilities of SFT-unsafe and SFT-safe prompts giving rate difference -delta and discordance p_d."""
    f1, f0 = (p_d + delta) / (2 * pi), (p_d - delta) / (2 * (1 - pi))
    if not (0 <= f0 <= 1 and 0 <= f1 <= 1):
        raise ValueError(f"p_d={p_d} is impossible with SFT rate {pi:.3f} and delta {delta}")
    return f1, f0


def simulate(sft: np.ndarray, p_d: float, kappa: float, seeds: int, alphas: list[float], sims: int,
             rng: np.random.Generator, delta: float = DELTA, tau: float = 0.0) -> dict[str, list[float]]:
    """Rejection rates (one per alpha) of the crossed paired bootstrap with `seeds` seeds, and of McNemar on seed 0:
    the power at `delta`, the test's size at delta = 0."""
    pi = float(sft.mean())
    f1, f0 = flip_rates(pi, p_d, delta)
    f = np.where(sft == 1, f1, f0)
    boot_rej = np.zeros(len(alphas))
    mcn_rej = np.zeros(len(alphas))
    for i in range(sims):
        if np.isinf(kappa):
            g = f
        else:
            a, b = f * kappa, (1 - f) * kappa
            g = rng.beta(np.maximum(a, 1e-9), np.maximum(b, 1e-9))
        u = rng.normal(0.0, tau, size=(seeds, 1))  # seed-level shift of the method's rate (0: none)
        g_s = np.clip(np.where(sft == 1, g - u / (2 * pi), g + u / (2 * (1 - pi))), 0.0, 1.0)
        flips = rng.random((seeds, sft.size)) < g_s
        method = np.where(flips, 1 - sft, sft).astype(float)
        base = np.tile(sft, (seeds, 1)).astype(float)
        p_boot = paired_bootstrap_diff(method, base, n_boot=N_BOOT, seed=i)["p_value"]
        p_mcn = mcnemar_exact(method[:1], base[:1])["p_value"]
        boot_rej += [p_boot <= a_ for a_ in alphas]
        mcn_rej += [p_mcn <= a_ for a_ in alphas]
    return {"bootstrap": list(boot_rej / sims), "mcnemar": list(mcn_rej / sims)}


def measured(runs_dir: str, suite: str | None) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """SFT's seed-0 flags and, per trained method, (p_d vs SFT, seed-vs-seed disagreement), seeds averaged."""
    from power_unsafe_rate import measured_discordance, unsafe_flags

    flags = unsafe_flags(runs_dir, suite)
    sft = flags["sft"][min(flags["sft"])]
    p_d = measured_discordance(runs_dir, suite, flags=flags)
    out = []
    for m, by_seed in sorted(flags.items()):
        pairs = list(itertools.combinations(sorted(by_seed), 2))
        if m != "sft" and m in p_d and pairs:
            out.append((m, p_d[m][0], float(np.mean([np.mean(by_seed[a] != by_seed[b]) for a, b in pairs]))))
    return sft, out


def kappa_for(ratio: float, pi: float, f1: float, f0: float) -> float:
    """kappa giving seed disagreement / p_d = ratio: 2 kappa / (kappa + 1) * sum w f (1 - f) / sum w f = ratio, with
    weights w = (pi, 1 - pi) over SFT-unsafe and SFT-safe prompts."""
    q = (pi * f1 * (1 - f1) + (1 - pi) * f0 * (1 - f0)) / (pi * f1 + (1 - pi) * f0)
    r = ratio / (2 * q)
    return float("inf") if r >= 1 else r / (1 - r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", help="calibrate on these runs (SFT's flags, the methods' seed disagreement)")
    ap.add_argument("--suite", help="only runs with this store tag (e.g. cpu-suite)")
    ap.add_argument("--sims", type=int, default=300, help="simulated experiments per cell (SE of a power <= 0.029 at 300)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--comparisons", type=int, default=14, help="k vs-SFT comparisons under Holm (Holm's first threshold 0.05/k)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    alphas = [0.05, 0.05 / args.comparisons]
    assert resamples_for_family(args.comparisons, N_BOOT) == N_BOOT

    kappas = [float("inf")]
    if args.runs_dir:
        sft, methods = measured(args.runs_dir, args.suite)
        ratios = [dis / pd for _, pd, dis in methods if pd > 0]
        ratio = float(np.median(ratios))
        print(f"measured ({args.runs_dir}): SFT unsafe rate {sft.mean():.3f} on {sft.size} prompts; per method, p_d vs SFT and "
              f"seed-vs-seed disagreement:")
        for m, pd, dis in methods:
            print(f"  {m:20s} p_d {pd:.3f}  seeds disagree {dis:.3f}  ratio {dis / pd:.2f}")
        print(f"median ratio {ratio:.2f}")
    else:
        sft = (np.random.default_rng(1).random(166) < 0.223).astype(float)
        ratio = None
    print(f"\ndelta = {DELTA} (method safer than SFT), n = {sft.size} prompts, {args.seeds} seeds, B = {N_BOOT}, "
          f"{args.sims} simulations per cell")
    k = args.comparisons
    print(f"{'p_d':>5} {'kappa':>6} {'tau':>5} | power: bootstrap {args.seeds} seeds a=.05  a=.05/{k} | McNemar 1 seed a=.05  "
          f"a=.05/{k} | closed form a=.05  a=.05/{k} | size (delta=0): bootstrap a=.05  McNemar a=.05")
    for p_d in (0.15, 0.20, 0.30):
        f1, f0 = flip_rates(float(sft.mean()), p_d, DELTA)
        ks = kappas + ([kappa_for(ratio, float(sft.mean()), f1, f0)] if ratio is not None else [])
        for kappa in dict.fromkeys(ks):
            for tau in (0.0, 0.04):
                r = simulate(sft, p_d, kappa, args.seeds, alphas, args.sims, rng, tau=tau)
                null = simulate(sft, p_d, kappa, args.seeds, alphas, args.sims, rng, delta=0.0, tau=tau)
                p10, p01 = (p_d + DELTA) / 2, (p_d - DELTA) / 2
                closed = [mcnemar_power(sft.size, p10, p01, a) for a in alphas]
                print(f"{p_d:5.2f} {kappa:6.2f} {tau:5.2f} | {r['bootstrap'][0]:27.2f} {r['bootstrap'][1]:9.2f} | "
                      f"{r['mcnemar'][0]:20.2f} {r['mcnemar'][1]:9.2f} | {closed[0]:17.2f} {closed[1]:9.2f} | "
                      f"{null['bootstrap'][0]:28.3f} {null['mcnemar'][0]:12.3f}")


if __name__ == "__main__":
    main()
