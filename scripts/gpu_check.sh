#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): the harness's real CUDA paths on one GPU in a few minutes.
#
#   scripts/gpu_check.sh --prepare        # HERE (networked, CPU): wheels + carried configs into .gpucheck/ (~3 MiB)
#   scripts/gpu_check.sh --dry-run        # HERE: the same steps on CPU at toy sizes (proves the script runs)
#   scripts/gpu_check.sh [--out DIR]      # THERE (GPU host): installs the carried wheels, runs, writes DIR/gpu-check.md
#
# With the workplace's device tool (the GPU machine has torch/transformers/accelerate but no trl/datasets, and no
# network):  run(command="bash scripts/gpu_check.sh --out $OUT", carry=[".gpucheck"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=.gpucheck
OUT_DIR=""
MODE=run
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --out) OUT_DIR="$2"; shift ;;
    *) echo "unknown argument $1 (use --prepare, --dry-run or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$MODE" = prepare ]; then
  PY=${PY:-.venv/bin/python}
  grep -qx '/.gpucheck/' .git/info/exclude 2>/dev/null || echo '/.gpucheck/' >> "$(git rev-parse --git-path info/exclude)"
  rm -rf "$ASSETS" && mkdir -p "$ASSETS/whl"
  # Python packages the GPU image lacks (KINDS.md lists what it has), pure-Python wheels, pinned to this venv's.
  for pkg in trl datasets dill multiprocess; do
    ver=$($PY -c "from importlib.metadata import version; print(version('$pkg'))")
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$ASSETS/whl" "$pkg==$ver"
  done
  $PY - "$ASSETS" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
from harness.models import resolve_model
from evaluators.score_models import minilm_path
from harness.config import load_config
from harness.datasets import load_bundle
assets = Path(sys.argv[1])
for name, src in (("smollm2-135m", Path(resolve_model("smollm2-135m-instruct"))), ("minilm", minilm_path())):
    dst = assets / name
    dst.mkdir()
    for f in src.iterdir():  # configs and tokenizers only: the weights are rebuilt there (seeded random)
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".onnx", ".gguf", ".md"):
            shutil.copy(f, dst / f.name)
cfg = load_config("cpu", ["data.max_train_pairs=64"])
pairs = load_bundle(cfg).cost_pairs["train"][:64]
keep = ("prompt", "chosen", "rejected", "chosen_safe", "rejected_safe", "category", "source")
(assets / "pairs.json").write_text(json.dumps([{k: getattr(p, k) for k in keep} for p in pairs]))
print(f"{len(pairs)} real PKU-SafeRLHF cost pairs carried")
# The cpu profile's trained cost model (from the cache; trained here on first use), carried in fp16 (~45 MB).
import torch
from evaluators.score_models import minilm_cost
scorer = minilm_cost(load_config("cpu"))
dst = assets / "cost-scorer"
scorer.model.to(torch.float16).save_pretrained(dst)
scorer.tokenizer.save_pretrained(dst)
(dst / "carried.json").write_text(json.dumps({"fingerprint": scorer.fingerprint, "carried_dtype": "float16"}))
print(f"trained cost scorer carried: {scorer.fingerprint}")
PYEOF
  du -sh "$ASSETS"
  exit 0
fi

if [ "$MODE" = dry ]; then
  PY=${PY:-.venv/bin/python}
  [ -f "$ASSETS/pairs.json" ] || { echo "run scripts/gpu_check.sh --prepare first" >&2; exit 2; }
  exec timeout 600 $PY scripts/gpu_check.py --dry-run --assets "$ASSETS" --work /tmp/gpu-check-dry ${OUT_DIR:+--out "$OUT_DIR/gpu-check.md"}
fi

# On the GPU host: the image's python3 holds torch; carried wheels go to a private target, never over the image.
[ -f "$ASSETS/pairs.json" ] || { echo "no $ASSETS/: run scripts/gpu_check.sh --prepare where pip works, then carry .gpucheck" >&2; exit 2; }
PY=${PY:-python3}
if ! $PY -c "import trl, datasets" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpucheck-site "$ASSETS"/whl/*.whl
  export PYTHONPATH=/tmp/gpucheck-site${PYTHONPATH:+:$PYTHONPATH}
fi
# CUBLAS_WORKSPACE_CONFIG: what torch's deterministic mode needs for cuBLAS (the generation step tries that mode)
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 480 $PY scripts/gpu_check.py --assets "$ASSETS" ${OUT_DIR:+--out "$OUT_DIR/gpu-check.md"}
