"""Why PeCAN's dual diverges on the cpu profile (issue 11 item 4): measure the implicit-safety spread it can use.

PeCAN's constraint is relative to π_ref in log-ratio units: `E_π[h_g] − E_π_ref[h_g] ≥ b/β` with `h_g = log π_g/π_ref`.
On K π_ref samples per dual prompt, the most any λ can reach is `mean_i max_k h_g − mean(h_g)` (the softmax puts all
weight on each prompt's best sample), so the dual has a finite λ* only if that exceeds b/β (methods/pecan.py,
`pecan_max_slack`). This script trains (or reuses from the store) π_g exactly as PeCAN does, samples K responses per
dual prompt from π_ref, and prints π_g's own learning check (held-out implicit-reward accuracy), h_g's spread, the largest reachable slack for the configured b and β, the largest
feasible b, how that grows with K, and what the solver does with and without the early infeasibility check.

    nice -n 10 .venv/bin/python benchmarks/pecan_dual_feasibility.py --profile cpu [--prompts 32 --k 8]

Prints human-readable lines and, last, `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENCH_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--prompts", type=int, default=0, help="dual prompts (0 = the profile's)")
    ap.add_argument("--k", type=int, default=0, help="samples per prompt (0 = PeCAN's default)")
    ap.add_argument("--set", action="append", default=[], help="config overrides, as bench run --set")
    args = ap.parse_args()

    import numpy as np

    from harness.training.can_dual import projected_gradient_descent
    from harness.config import load_config, method_config
    from harness.datasets import load_bundle
    from harness.training.dpo import train_dpo
    from harness.generation import cached_generate, close_generator, make_generator
    from harness.training.learning import collect
    from harness.training.logprobs import sequence_logprobs
    from harness.models import resolve_model
    from harness.registries import METHODS
    from harness.types import SamplingParams
    from methods.pecan import pecan_dual, pecan_dual_grad, pecan_max_slack

    cfg = load_config(args.profile, args.set, method="pecan")
    c = method_config(METHODS.get("pecan").config_class, cfg)
    beta = c.beta if c.beta is not None else cfg.train.beta
    k = args.k or c.samples_per_prompt
    bundle = load_bundle(cfg)
    policy = str(resolve_model(cfg.model))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        with collect(cfg, bundle) as learned:  # π_g's own learning check: held-out implicit-reward accuracy on cost pairs
            pi_g = train_dpo(bundle.cost_pairs["train"], init=policy, ref=None, beta=beta, out_dir=Path(tmp) / "pi_g", cfg=cfg,
                             device="cpu", run_name="pecan-pi_g")
        t_train = time.time() - t0
        prompts = [p.prompt for p in bundle.prompts.get("dual", [])][: (args.prompts or c.num_prompts) or None]
        params = SamplingParams(max_new_tokens=cfg.generation.max_new_tokens, temperature=c.temperature, top_p=c.top_p, seed=cfg.seed)
        gen = make_generator(policy, backend="hf", template=cfg.template, batch_size=cfg.generation.batch_size, device="cpu")
        flat, _ = cached_generate(gen, [p for p in prompts for _ in range(k)], params, cfg.generation.cache)
        close_generator(gen)
        flat_p = [p for p in prompts for _ in range(k)]
        lp_ref = sequence_logprobs(policy, None, flat_p, flat, cfg, "cpu")
        lp_g = sequence_logprobs(str(pi_g), None, flat_p, flat, cfg, "cpu")
    hg = (lp_g - lp_ref).double().numpy().reshape(len(prompts), k)
    hr = np.zeros_like(hg)  # the reachable slack does not depend on h_r; the solver runs below use h_r = 0
    need = c.margin / beta
    spread = float(hg.max(axis=1).mean() - hg.mean())
    by_k = {kk: float(hg[:, :kk].max(axis=1).mean() - hg[:, :kk].mean()) for kk in (1, 2, 4, 8, 16, 32) if kk <= k}
    slack = pecan_max_slack(hg, c.margin, beta)
    old = projected_gradient_descent(lambda lam: pecan_dual_grad(lam, hr, hg, c.margin, beta),
                                     **{**c.solver(), "lambda_cap": None})
    new = pecan_dual(hr, hg, c.margin, beta, True, **c.solver())
    out = {
        "profile": args.profile, "beta": beta, "margin_b": c.margin, "b_over_beta_nats": need, "prompts": len(prompts), "k": k,
        "pi_g_train_s": round(t_train, 1), "h_g_mean": float(hg.mean()), "h_g_std": float(hg.std()),
        "h_g_abs_max": float(np.abs(hg).max()), "kl_ref_pi_g": float(-hg.mean()),
        "best_minus_mean_nats": spread, "best_minus_mean_by_k": by_k, "max_slack_nats": slack,
        "largest_feasible_b": beta * spread,
        "pi_g_learning": [{k: e.get(k) for k in ("check", "value", "ci", "passed", "n", "forward_sequences", "seconds")}
                          for e in learned.entries],
        "old_solver": {"lambda": old.lam, "converged": old.converged, "iterations": old.total_iterations},
        "new_solver": {"lambda": new.lam, "infeasible": new.infeasible, "iterations": new.total_iterations, "reason": new.reason},
    }
    print(f"h_g = log π_g/π_ref on {len(prompts)}x{k} π_ref samples: mean {out['h_g_mean']:.4f}, std {out['h_g_std']:.4f}, "
          f"|max| {out['h_g_abs_max']:.4f} nats")
    print(f"best-of-K minus mean: {spread:.4f} nats (by K: {json.dumps({k_: round(v, 4) for k_, v in by_k.items()})}); "
          f"the constraint needs b/β = {need:.3g} nats -> largest reachable slack {slack:.4f}")
    for e in learned.entries:
        print(f"π_g learning check {e['check']}: {e['value']:.4g} {e['ci']} on {e['n']} held-out cost pairs "
              f"({e['forward_sequences']} extra sequences, {e['seconds']} s)")
    print(f"largest feasible b on these samples: {out['largest_feasible_b']:.4g} (configured b = {c.margin})")
    print(f"old solver: λ = {old.lam:.4g} after {old.total_iterations} iterations (converged {old.converged}); "
          f"new: infeasible {new.infeasible} after {new.total_iterations} iterations")
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
