"""Wall time of one suite grid, in-process vs `--executor ray` (a local Ray instance on this machine's cores).

    python benchmarks/scaleout_suite.py                      # sft,dpo-harmless,pddpo x seeds 0,1, tiny profile
    python benchmarks/scaleout_suite.py --methods sft --seeds 0,1,2,3 --profile tiny

Each suite gets its own runs folder and its own cache folder, seeded with the built models and trained scorers
(so neither pays for those) but with no generations, scores or reference log-probs: neither suite can reuse
the other's work. Generation caching is off. The in-process suite runs first, then the Ray suite; the load
average before each is printed, because on a shared machine it moves the numbers more than anything else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def suite(executor: str, args: argparse.Namespace, root: Path) -> float:
    from harness.models import cache_dir

    cache = root / f"cache-{executor}"
    for sub in ("models", "scorers"):  # built once already: not part of what is compared
        if (cache_dir() / sub).exists():
            shutil.copytree(cache_dir() / sub, cache / sub, ignore=shutil.ignore_patterns("*.lock", ".*tmp*"))
    env = {**os.environ, "BENCH_CACHE": str(cache)}
    cmd = [str(Path(sys.executable).with_name("bench")), "-q", "suite", "--methods", args.methods, "--seeds", args.seeds,
           "--profile", args.profile, "--runs-dir", str(root / f"runs-{executor}"), "--executor", executor,
           "--set", "generation.cache=false"]
    print(f"load average before {executor}: {os.getloadavg()}", flush=True)
    t = time.time()
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t
    if out.returncode != 0:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
        raise SystemExit(f"{executor} suite failed ({out.returncode})")
    print(f"{executor:>6}: {wall:7.1f} s", flush=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="sft,dpo-harmless,pddpo")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        local = suite("local", args, Path(tmp))
        ray = suite("ray", args, Path(tmp))
    print(f"grid {args.methods} x seeds {args.seeds}, profile {args.profile}, {os.cpu_count()} CPUs")
    print(f"in-process {local:.1f} s, ray {ray:.1f} s: ray / in-process = {ray / local:.2f}")


if __name__ == "__main__":
    main()
