"""Scaling: DPO step time and peak memory against sequence length (128, 256, 512 at batch 4) and batch size
(1, 2, 4, 8 pairs at length 256), SmolLM2-135M with the cpu profile's LoRA regime; a table and docs/scaling.png.

Each point runs in a fresh process (so its peak RSS is its own): build the harness trainer, one warm-up step, then
the median of `--steps` timed steps (forward + backward). "step peak" is the RSS rise during the steps above the
RSS right before them (activations and gradients); "process peak" includes the model and libraries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POINTS = [(128, 4), (256, 4), (512, 4), (256, 1), (256, 2), (256, 8)]


def one(seq_len: int, batch: int, steps: int) -> dict:
    import psutil

    from common import cfg_for, first_batch, harness_trainer, long_pairs, peak_rss_mb, policy_path, step_fn
    from harness.models import load_tokenizer
    from harness.monitor import StageMonitor, malloc_trim

    cfg = cfg_for(seq_len, batch)
    trainer = harness_trainer(cfg, long_pairs(batch, load_tokenizer(policy_path()), seq_len))
    b = first_batch(trainer)
    step = step_fn(trainer, b)
    step()
    malloc_trim()
    before = psutil.Process().memory_info().rss / 2**20
    times = []
    with StageMonitor(interval=0.05) as mon:
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {"seq_len": seq_len, "batch": batch, "tokens": int(b["input_ids"].numel()), "s_per_step": statistics.median(times),
            "step_peak_mb": mon.record["peak_rss_mb"] - before, "process_peak_mb": peak_rss_mb()}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "s_per_step", "seconds per step"), (axes[1], "step_peak_mb", "step memory (MB above model)")):
        for fixed, xkey, name in (("batch", "seq_len", "sequence length (batch 4)"), ("seq_len", "batch", "batch size (length 256)")):
            pts = sorted((r[xkey], r[key]) for r in rows if r[fixed] == (4 if fixed == "batch" else 256))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length / batch size (pairs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("DPO step cost, SmolLM2-135M + LoRA r16, 2 shared CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, type=int, metavar=("SEQ_LEN", "BATCH"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "scaling.png"))
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(*a.one, a.steps)))
        return
    rows = []
    for seq_len, batch in POINTS:
        out = subprocess.run([sys.executable, __file__, "--one", str(seq_len), str(batch), "--steps", str(a.steps)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"scaling point ({seq_len}, {batch}) failed:\n{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"len {seq_len:4d} batch {batch}: {row['s_per_step']:6.2f} s/step, step memory {row['step_peak_mb']:7.1f} MB, "
              f"process peak {row['process_peak_mb']:7.1f} MB", flush=True)
    plot(rows, Path(a.plot))
    from common import result

    result("scaling", rows=rows, plot=str(Path(a.plot).name))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
