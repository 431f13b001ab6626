#!/usr/bin/env bash
# Determinism on the cpu profile (issue 13): the same `bench run` twice, from scratch, and every metric compared.
#
#   scripts/determinism_cpu.sh [METHOD] [-- extra bench run options]     # default: dpo-harmless
#
# Each run gets its own runs dir and its own training store (BENCH_STORE), and generation.cache=false, so both really
# train, generate and score; the model files, score models and judges come from the shared cache (they are inputs,
# not what is being tested). The eval sets are shortened (EVAL_PROMPTS / REFUSAL_PROMPTS / MC_QUESTIONS, defaults
# 48 / 16 / 20) so the pair takes about 20 minutes on 2 free cores: the regime, model and code paths are the cpu
# profile's (PROFILE=tiny gives a one-minute smoke run). Prints every numeric result that differs, the largest absolute difference, and whether the generations match.
set -euo pipefail
cd "$(dirname "$0")/.."
METHOD="${1:-dpo-harmless}"
shift || true
[ "${1:-}" = "--" ] && shift
BENCH="${BENCH:-.venv/bin/bench}"
PY="${PY:-.venv/bin/python}"
export BENCH_DATA_DIR="${BENCH_DATA_DIR:-$(cd .. && pwd)/shared/data}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
WORK="${WORK:-$(mktemp -d -t bench-determinism-XXXX)}"
mkdir -p "$WORK"
SETS=(--set generation.cache=false --set "data.max_eval_prompts=${EVAL_PROMPTS:-48}"
      --set "data.max_refusal_prompts=${REFUSAL_PROMPTS:-16}" --set "data.max_harmful_prompts=${HARMFUL_PROMPTS:-16}"
      --set "eval.mc_max_questions=${MC_QUESTIONS:-20}")
for side in a b; do
  echo "== run $side: $METHOD, ${PROFILE:-cpu} profile, seed 0 -> $WORK/$side" >&2
  BENCH_STORE="$WORK/store-$side" "$BENCH" run --method "$METHOD" --profile "${PROFILE:-cpu}" --seed 0 --runs-dir "$WORK/$side" \
    --wandb disabled "${SETS[@]}" "$@" > "$WORK/$side.log" 2>&1 || { tail -20 "$WORK/$side.log" >&2; exit 1; }
done
exec "$PY" - "$WORK" <<'PYEOF'
import json, math, sys
from pathlib import Path
work = Path(sys.argv[1])
recs = {}
for side in "ab":
    (res,) = list((work / side).glob("*/results.json"))
    recs[side] = (res.parent, json.loads(res.read_text()))
(da, a), (db, b) = recs["a"], recs["b"]


def leaves(x, prefix=""):
    """Every numeric leaf of the nested results, by its dotted path."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield prefix, float(x)


la, lb = dict(leaves(a["results"])), dict(leaves(b["results"]))
worst, worst_key, differing = 0.0, None, 0
for k in sorted(set(la) | set(lb)):
    x, y = la.get(k, float("nan")), lb.get(k, float("nan"))
    if math.isnan(x) and math.isnan(y):
        continue
    d = abs(x - y) if not (math.isnan(x) or math.isnan(y)) else float("inf")
    if d > 0:
        differing += 1
        print(f"differs: {k}: {x:.6g} vs {y:.6g} (|Δ| {d:.3g})")
    if d > worst:
        worst, worst_key = d, k
gens = {}
for side, (folder, _) in recs.items():
    files = sorted((folder / "generate").glob("*generations.json"))  # not done.json: it holds wall times
    gens[side] = [f.read_bytes() for f in files]
same_gen = gens["a"] == gens["b"] and bool(gens["a"])
print(f"{len(la)} numeric results, {differing} differ; largest |difference| {worst:.3g}" + (f" ({worst_key})" if worst_key else "")
      + f"; generation files identical: {same_gen}")
print(f"train wall s: a {a['stages'].get('train', {}).get('wall_s', float('nan')):.0f}, b {b['stages'].get('train', {}).get('wall_s', float('nan')):.0f}")
PYEOF
