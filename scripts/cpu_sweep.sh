#!/usr/bin/env bash
# The reward / unsafe-rate frontier of PD-DPO over a fixed λ on the cpu profile (issue 11, item 6), in the same runs
# dir as the cpu suite, then the suite's leaderboard page regenerated so it links (md) and embeds (html) the sweep.
#
#   scripts/cpu_sweep.sh [VALUES] [SEEDS]     # default 0,1,2,5,10,20 and 0
#
# Stage 1 (π_r̂) comes from the store of finished trainings, so each λ > 0 costs one stage-2 DPO run plus the
# evaluation (~12 min on 2 free cores) and λ = 0 only the evaluation. The sweep's runs carry the sweep's store tag:
# the suite's table (`--suite cpu-suite`) and the main leaderboard leave them out.
set -euo pipefail
cd "$(dirname "$0")/.."
VALUES="${1:-0,1,2,5,10,20}"
SEEDS="${2:-0}"
RUNS="${RUNS:-results/cpu-suite}"
BENCH="${BENCH:-.venv/bin/bench}"
export BENCH_DATA_DIR="${BENCH_DATA_DIR:-$(cd .. && pwd)/shared/data}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

nice -n "${NICE:-5}" "$BENCH" sweep --method pddpo-fixed --over "method.fixed_lambda=$VALUES" --profile cpu \
  --seeds "$SEEDS" --runs-dir "$RUNS"
exec scripts/cpu_suite.sh   # resumes the finished suite (nothing reruns) and rewrites the docs, sweeps included
