"""P3: PD-DPO peak memory ÷ Safe-RLHF peak memory, same policy, same measurement. Target <= 0.4.

Each method's train stage runs in its own fresh process (`benchmarks/train_stage.py --no-reuse`: nothing answered
from the training store) on the cpu profile, shortened where peak memory does not depend on it (16 pairs per
preference set, 8 dual prompts, one PD-DPO iteration, one Safe-RLHF rollout batch). The peak is the stage's sampled
RSS (harness.monitor), the figure every run records.
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
METHOD_SHORT = {"pddpo": ["methods.pddpo.num_iterations=1"], "safe-rlhf": ["methods.safe-rlhf.num_rollout_batches=1"]}


def train_stage(method: str, profile: str) -> dict:
    sets = [x for s in [*SHORT, *METHOD_SHORT.get(method, [])] for x in ("--set", s)]
    out = subprocess.run([sys.executable, str(HERE / "train_stage.py"), method, "--profile", profile, "--no-reuse", *sets],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} train stage failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    a = ap.parse_args()
    recs = {m: train_stage(m, a.profile) for m in ("pddpo", "safe-rlhf")}
    for m, r in recs.items():
        top = sorted(r.get("phases", {}).items(), key=lambda kv: -kv[1]["peak_rss_mb"])[:3]
        print(f"{m:10s} peak RSS {r['peak_rss_mb']:8.1f} MB, wall {r['wall_s']:.0f} s; top phases: "
              + ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in top))
    ratio = recs["pddpo"]["peak_rss_mb"] / recs["safe-rlhf"]["peak_rss_mb"]
    print(f"P3 PD-DPO/Safe-RLHF peak RSS = {ratio:.3f}; target <= 0.4")
    result("P3", ratio=ratio, target="<= 0.4", met=ratio <= 0.4, pddpo=recs["pddpo"], safe_rlhf=recs["safe-rlhf"])


if __name__ == "__main__":
    main()
