"""Run only the train stage of one method, in this process, and print its stage record as JSON (last line).

    python benchmarks/train_stage.py pddpo --profile cpu --set data.max_train_pairs=16 [--out rec.json]

The record is what a run's `train/done.json` holds: wall time, peak RSS, CUDA peak, per-phase peaks and reuse
events. `--no-reuse` points the training store at a fresh temporary folder so every model is really trained
(memory measurements must not be answered from the store). Used by `make bench` (P3) and docs/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-reuse", action="store_true",
                    help="fresh training store and reference log-prob cache: train and score everything")
    ap.add_argument("--learning", action="store_true",
                    help="run the held-out learning checks as a real run does (size: --set learning.heldout_pairs=N)")
    ap.add_argument("--out", help="also write the record here")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-train-stage-")  # the trained model(s), up to ~1 GB: removed at exit
    try:
        record = _train(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


def _train(args: argparse.Namespace, tmp: str) -> dict:
    if args.no_reuse:
        os.environ["BENCH_STORE"] = str(Path(tmp) / "store")
        import harness.training.dpo as dpo  # reference log-probs (train pairs) computed, not read from the user cache

        from harness.training.learning import DPOProbe

        fresh = Path(tmp) / "cache"
        dpo.cache_dir = lambda: fresh
        heldout_path = DPOProbe._cache_path  # and the held-out checks' reference log-probs too
        DPOProbe._cache_path = lambda self, ref_id, folder: heldout_path(self, ref_id, folder or fresh / "ref_logps")

    from harness.config import load_config, method_config
    from harness.datasets import load_bundle
    from harness.models import resolve_device, resolve_model
    from harness.monitor import StageMonitor
    from harness.registries import METHODS
    from harness.runs import Services, build_context, seed_everything

    cfg = load_config(args.profile, args.overrides, method=args.method, runs_dir=str(Path(tmp) / "runs"))
    method_cls = METHODS.get(cfg.method)
    mcfg = method_config(method_cls.config_class, cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    import contextlib

    from harness.training import learning

    with StageMonitor() as mon:
        services = Services(cfg, load_bundle(cfg), device)
        ctx = build_context(cfg, Path(tmp) / "train", services, str(resolve_model(cfg.model)))
        checks = learning.collect(cfg, services.bundle) if args.learning else contextlib.nullcontext()
        with checks:
            result = method_cls(mcfg).train(ctx)
    return {"method": cfg.method, "profile": cfg.profile, "overrides": args.overrides, **mon.record,
            "models_trained": result.models_trained}


if __name__ == "__main__":
    main()
