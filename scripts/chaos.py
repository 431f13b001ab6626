"""Crash safety: run a tiny suite, `kill -9` it at a random moment, resume it, and compare with an uninterrupted run.

    scripts/chaos.sh 20            # 20 trials, a fresh recorded seed
    scripts/chaos.sh 3 --seed 7    # replay: the same kill times

Each trial starts the suite in its own runs dir, kills the whole process group with SIGKILL after a delay drawn
uniformly from [0, baseline wall time], then reruns the same command until it finishes. The trial passes when:
- every run's artifacts (config.yaml, each stage's outputs, done.json and results.json without wall times, memory,
  cache-hit counters and dates, the trained model's weight files) and the suite's summary are byte-identical to the uninterrupted run;
- the store holds exactly one finished row per run folder, each with the same results record;
- no temporary file (`*.tmp*`, write probes) is left in the runs dir or the cache.
The suite: `sft` and `dpo-helpful` on the tiny profile (random 2-layer Llama, 2 optimiser steps) with the `dummy`
generator and the length/random scorers, so one suite takes seconds and a kill can land in every stage, including
a model being saved. Every trial uses a private $BENCH_CACHE (built models are hard-linked in), so cache writes are
attacked too. Prints "K/N identical" and exits 1 unless every trial is identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = ["suite", "--methods", "sft,dpo-helpful", "--profile", "tiny", "--seeds", "0", "--wandb", "disabled",
         "--set", "generation.backend=dummy", "--set", "scoring.reward=length", "--set", "scoring.cost=random",
         "--set", "eval.truthfulqa_mc=false"]
VOLATILE = {"wall_s", "peak_rss_mb", "cuda_max_allocated_mb", "date", "created", "updated", "runs_dir", "files", "git_hash",
            "cache_hit", "ref_cache_hits", "reused", "reused_from", "trained_as", "reuse", "phases",
            "forward_sequences"}  # learning checks' extra passes: fewer when a cache or a finished training answers
# timings, memory, dates, paths; whether a cache or the training store served a stage (how a result was obtained,
# not what it is: the weight files themselves are still compared byte for byte); per-phase accounting (a resumed
# stage whose generations come from the cache enters its "generate" phase once instead of twice)
TEMP = re.compile(r"\.tmp|write-probe")


def bench(runs_dir: Path, cache: Path, log) -> subprocess.Popen:
    env = {**os.environ, "BENCH_CACHE": str(cache), "WANDB_MODE": "disabled", "BENCH_QUIET": "1"}
    env.pop("BENCH_STORE", None)  # the training store lives in this trial's private cache (tests set BENCH_STORE)
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "-q", *SUITE, "--runs-dir", str(runs_dir)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_runtime", "_per_second", "seconds", "_wall_s"))  # refusal_wall_s


def scrub(obj):
    """A record without what legitimately differs between two identical runs (timings, memory, dates, paths)."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not volatile(k)}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


def fingerprint(runs_dir: Path, cache: Path) -> dict[str, str]:
    """path -> hash of its scrubbed content, for every artifact that carries a result."""
    import yaml

    def text(s: str) -> str:  # the trial's own folders are not a difference
        return s.replace(str(runs_dir), "<RUNS>").replace(str(cache), "<CACHE>")

    out = {}
    for p in sorted(runs_dir.rglob("*")):
        rel = str(p.relative_to(runs_dir))
        if not p.is_file() or rel.startswith(".locks") or "bench.sqlite" in rel or "/work/" in rel or rel.endswith("errors.log"):
            continue
        if p.suffix == ".json":
            data = json.dumps(scrub(json.loads(text(p.read_text()))), sort_keys=True).encode()
        elif p.suffix == ".yaml":
            data = json.dumps(scrub(yaml.safe_load(text(p.read_text()))), sort_keys=True).encode()
        elif p.suffix in (".safetensors", ".bin"):
            data = p.read_bytes()
        else:
            continue  # rendered leaderboards (md/csv/html) show wall times; their numbers come from the records compared here
        out[rel] = hashlib.sha256(data).hexdigest()
    con = sqlite3.connect(runs_dir / "bench.sqlite")
    rows = con.execute("SELECT run_id, status, results FROM runs").fetchall()
    con.close()
    folders = sorted(p.parent.name for p in runs_dir.glob("*/config.yaml"))
    out["store:ids"] = json.dumps(sorted(r[0] for r in rows))
    out["store:folders"] = json.dumps(folders)
    for rid, status, results in rows:
        record = scrub(json.loads(text(results or "null")))
        out[f"store:{rid}"] = hashlib.sha256(f"{status}:{json.dumps(record, sort_keys=True)}".encode()).hexdigest()
    return out


def temp_files(*roots: Path) -> list[str]:
    return [str(p) for root in roots if root.exists() for p in root.rglob("*") if TEMP.search(p.name)]


def run_to_end(runs_dir: Path, cache: Path, log, timeout: float = 900) -> int:
    p = bench(runs_dir, cache, log)
    return p.wait(timeout=timeout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trials", type=int, nargs="?", default=20)
    ap.add_argument("--seed", type=int, default=None, help="Kill-time seed (default: drawn and printed).")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-", dir=args.work))
    print(f"chaos: {args.trials} trials, seed {seed}, work dir {work}", flush=True)
    shared_models = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "safealign-bench") / "models"

    def fresh_cache(name: str) -> Path:
        cache = work / name / "cache"
        cache.mkdir(parents=True)
        if shared_models.exists():  # built models are inputs here, not what is attacked: link them in
            subprocess.run(["cp", "-al", str(shared_models), str(cache / "models")], check=True)
        return cache

    t0 = time.time()
    base_runs, base_cache = work / "baseline" / "runs", fresh_cache("baseline")
    with open(work / "baseline.log", "w") as log:
        rc = run_to_end(base_runs, base_cache, log)
    wall = time.time() - t0
    if rc != 0:
        print(f"baseline suite failed (exit {rc}); see {work / 'baseline.log'}")
        return 2
    want = fingerprint(base_runs, base_cache)
    print(f"baseline: {wall:.1f} s, {len(want)} artifacts", flush=True)

    identical = 0
    for i in range(1, args.trials + 1):
        runs_dir, cache = work / f"t{i}" / "runs", fresh_cache(f"t{i}")
        delay = rng.uniform(0, wall)
        with open(work / f"t{i}.log", "w") as log:
            p = bench(runs_dir, cache, log)
            try:
                p.wait(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                killed = True
            resumes = 0
            while True:
                rc = run_to_end(runs_dir, cache, log)
                resumes += 1
                if rc == 0 or resumes >= 3:
                    break
        problems = []
        if rc != 0:
            problems.append(f"resume exited {rc}")
        else:
            got = fingerprint(runs_dir, cache)
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            if diff:
                problems.append("differs: " + ", ".join(diff[:6]))
        left = temp_files(runs_dir, cache)
        if left:
            problems.append("temp files left: " + ", ".join(left[:4]))
        ok = not problems
        identical += ok
        print(f"trial {i:>2}: kill at {delay:5.1f} s{'' if killed else ' (finished first)'} -> "
              f"{'identical' if ok else 'DIFFERENT: ' + '; '.join(problems)}", flush=True)
        if ok and not args.keep:
            shutil.rmtree(work / f"t{i}", ignore_errors=True)
    print(f"{identical}/{args.trials} identical (seed {seed})")
    if identical == args.trials and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
