"""P3: PD-DPO peak memory ÷ Safe-RLHF peak memory, same policy, same measurement. Target <= 0.4. Measured both ways:
against full PPO (upstream Safe-RLHF, what the paper's memory claim compares against) and against LoRA PPO
(`methods.safe-rlhf.ppo_size=lora`: LoRA actor and critics on one set of frozen base weights, the reference = the
actor with its adapters disabled), plus LoRA PPO with gradient checkpointing. Also prints full vs LoRA side by side:
peak RSS and seconds per rollout and per PPO step.

Each train stage runs in its own fresh process (`benchmarks/train_stage.py --no-reuse`: nothing answered from the
training store) on the cpu profile, shortened where peak memory does not depend on it (16 pairs per preference set,
8 dual prompts, one PD-DPO iteration, two Safe-RLHF rollout batches of the profile's 4 prompts × 32 new tokens). The
peak is the stage's sampled RSS (harness.monitor), the figure every run records; the Safe-RLHF phases
(`safe-rlhf/score_models`, `/load`, `/rollout`, `/ppo_step`) show where it is reached. Step times are the phases'
mean wall time per call, measured one process after the other on a shared machine: read them as rough.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import result

HERE = Path(__file__).resolve().parent
SHORT = ["data.max_train_pairs=16", "data.max_dual_prompts=8", "data.max_scorer_pairs=0"]
PPO = "methods.safe-rlhf."
VARIANTS = {  # name: (method, overrides)
    "safe-rlhf full": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=full", f"{PPO}gradient_checkpointing=false"]),
    "safe-rlhf lora": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=lora", f"{PPO}gradient_checkpointing=false"]),
    "safe-rlhf lora+ckpt": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=lora", f"{PPO}gradient_checkpointing=true"]),
    "pddpo": ("pddpo", ["methods.pddpo.num_iterations=1"]),
}


def train_stage(method: str, overrides: list[str], profile: str) -> dict:
    sets = [x for s in [*SHORT, *overrides] for x in ("--set", s)]
    out = subprocess.run([sys.executable, str(HERE / "train_stage.py"), method, "--profile", profile, "--no-reuse", *sets],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} {overrides} train stage failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_call(rec: dict, phase: str) -> float:
    p = rec.get("phases", {}).get(phase)
    return p["wall_s"] / p["count"] if p and p["count"] else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(VARIANTS)
    recs = {}
    for name in names:
        recs[name] = train_stage(*VARIANTS[name], a.profile)
        print(f"# {name}: " + json.dumps(recs[name]), file=sys.stderr, flush=True)  # as each finishes (a long run can be cut short)
    print(f"{'variant':20s} {'peak RSS MB':>11s} {'PPO phases MB':>13s} {'s/rollout':>9s} {'s/PPO step':>10s}  top phases")
    for name, r in recs.items():
        phases = r.get("phases", {})
        ppo_peak = max((v["peak_rss_mb"] for k, v in phases.items() if k.endswith(("/rollout", "/ppo_step"))), default=float("nan"))
        top = sorted(phases.items(), key=lambda kv: -kv[1]["peak_rss_mb"])[:3]
        print(f"{name:20s} {r['peak_rss_mb']:11.0f} {ppo_peak:13.0f} {per_call(r, 'safe-rlhf/rollout'):9.1f} "
              f"{per_call(r, 'safe-rlhf/ppo_step'):10.1f}  " + ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in top))
    out: dict = {"records": recs}
    full, lora = recs.get("safe-rlhf full"), recs.get("safe-rlhf lora")
    if full and lora:
        out["lora_over_full_peak"] = lora["peak_rss_mb"] / full["peak_rss_mb"]
        out["lora_over_full_step"] = per_call(lora, "safe-rlhf/ppo_step") / per_call(full, "safe-rlhf/ppo_step")
        print(f"LoRA ÷ full PPO: peak RSS {out['lora_over_full_peak']:.3f}, s per PPO step {out['lora_over_full_step']:.3f}")
    for name in ("safe-rlhf full", "safe-rlhf lora", "safe-rlhf lora+ckpt"):
        if "pddpo" in recs and name in recs:
            out[f"p3 vs {name}"] = recs["pddpo"]["peak_rss_mb"] / recs[name]["peak_rss_mb"]
            print(f"P3 PD-DPO ÷ {name} peak RSS = {out[f'p3 vs {name}']:.3f}; target <= 0.4")
    if "p3 vs safe-rlhf full" in out:
        ratio = out["p3 vs safe-rlhf full"]
        result("P3", ratio=ratio, target="<= 0.4", met=ratio <= 0.4, ratio_vs_lora=out.get("p3 vs safe-rlhf lora"),
               ratio_vs_lora_ckpt=out.get("p3 vs safe-rlhf lora+ckpt"), lora_over_full_peak=out.get("lora_over_full_peak"),
               lora_over_full_step=out.get("lora_over_full_step"), pddpo=recs["pddpo"], safe_rlhf=full, safe_rlhf_lora=lora,
               safe_rlhf_lora_ckpt=recs.get("safe-rlhf lora+ckpt"))
    else:
        result("P3-partial", **out)


if __name__ == "__main__":
    main()
