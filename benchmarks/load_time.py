"""Model load time of smollm2-135m-instruct, cold vs warm (issue 28 item 2): the GGUF dequantisation must belong to
the first load only.

Each measurement runs in a fresh process (a process memoises file checksums, so a second call in the same process
would hide the warm cost):

- cold: an empty `$BENCH_CACHE` (a temporary folder, removed after): `resolve_model` dequantises the packaged GGUF
  into float32 safetensors, then `load_causal_lm` loads that folder;
- warm: the real cache, already converted: `resolve_model` (checks the cached folder) and `load_causal_lm`, twice.

    cd benchmarks && python load_time.py [--skip-cold]

Prints one line per measurement, then `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
t = time.perf_counter()
import torch, transformers  # what every stage has imported before its first load
from transformers import AutoModelForCausalLM, LlamaForCausalLM
import_s = time.perf_counter() - t
from harness.models import DEFAULT_MODEL, load_causal_lm, resolve_model
t = time.perf_counter(); path = resolve_model(DEFAULT_MODEL); resolve_s = time.perf_counter() - t
loads = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); m = load_causal_lm(path); loads.append(time.perf_counter() - t); del m
print("CHILD " + json.dumps({"import_s": import_s, "resolve_s": resolve_s, "load_s": loads}))
"""


def measure(cache: str | None, loads: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    if cache is not None:
        env["BENCH_CACHE"] = cache
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(loads)], env=env, capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("CHILD ")][-1]
    return json.loads(line[len("CHILD "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true")
    a = ap.parse_args()
    res = {}
    if not a.skip_cold:
        tmp = tempfile.mkdtemp(prefix="bench-load-cold-")
        try:
            res["cold"] = measure(tmp, 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"cold: imports {res['cold']['import_s']:.1f} s, convert (GGUF dequantisation + save) {res['cold']['resolve_s']:.1f} s, "
              f"then load {res['cold']['load_s'][0]:.1f} s")
    res["warm"] = measure(None, 2)
    w = res["warm"]
    print(f"warm (new process): imports (torch, transformers, Llama) {w['import_s']:.1f} s, resolve (cached folder check) "
          f"{w['resolve_s']:.1f} s, load {w['load_s'][0]:.1f} s, "
          f"second load in the same process {w['load_s'][1]:.1f} s")
    print("RESULT " + json.dumps({"bench": "load_time", **res}))


if __name__ == "__main__":
    main()
