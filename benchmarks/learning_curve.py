"""Learning curve of one DPO stage (issue 11): held-out implicit-reward accuracy against training steps.

    python benchmarks/learning_curve.py dpo-harmless --set train.learning_rate=5e-4 --set train.epochs=2 \
        --set data.max_train_pairs=240 --probe-every 30 [--out docs/learning-curves/cost-lr5e-4.json]
    python benchmarks/learning_curve.py --plot docs/learning-curves/*.json --png docs/learning-curves.png

Trains the method's stage exactly as `train_dpo` does (the harness's own trainer, `harness.training.dpo.dpo_trainer`: LoRA,
cached reference log-probs, the run's `train` regime) from the policy against itself, and every `--probe-every`
optimizer steps scores the held-out pairs that the run's learning check uses (`harness.training.learning.Collector`: the
same view's pairs in the `dual` fold, prompts disjoint from training) with the adapters in place. Prints one line per
probe and, last, `RESULT {json}` with the curve: step, pairs seen, held-out accuracy with its 95% bootstrap CI, mean
margin, the training batch's own reward accuracy and loss, and wall time. Nothing is cached or reused: every point
is measured. Used by docs/learning-curves.md and configs/cpu-long.yaml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VIEW = {"dpo-helpful": "reward", "dpo-harmless": "cost"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", nargs="?", choices=sorted(VIEW), help="dpo-helpful (reward pairs) or dpo-harmless (cost pairs)")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, as `bench run --set`")
    ap.add_argument("--probe-every", type=int, default=24, help="optimizer steps between held-out probes (and the last step)")
    ap.add_argument("--out", help="also write the result JSON here")
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="instead of training: plot these results (held-out accuracy vs steps)")
    ap.add_argument("--png", default="docs/learning-curves.png", help="where --plot writes")
    args = ap.parse_args()
    if args.plot:
        return plot([json.loads(Path(p).read_text()) for p in args.plot], Path(args.png))
    if args.method is None:
        ap.error("a method (dpo-helpful or dpo-harmless) or --plot")

    import numpy as np
    from transformers import TrainerCallback, set_seed

    from harness.config import load_config
    from harness.datasets import load_bundle
    from harness.training.dpo import dpo_trainer, preference_dataset
    from harness.training.learning import Collector, dpo_checks, implicit_margins
    from harness.training.logprobs import policy_logps
    from harness.models import load_causal_lm, load_tokenizer, resolve_device, resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-learning-curve-"))
    cfg = load_config(args.profile, args.overrides, method=args.method, runs_dir=str(tmp / "runs"))
    view = VIEW[args.method]
    device = resolve_device(cfg.device)
    bundle = load_bundle(cfg)
    pairs = list(getattr(bundle, f"{view}_pairs")["train"])
    heldout = Collector(cfg, bundle).heldout[view]
    if not heldout:
        raise SystemExit(f"no held-out {view} pairs in the dual fold: nothing to probe")
    set_seed(cfg.seed)
    init = str(resolve_model(cfg.model))
    tokenizer = load_tokenizer(init)
    model = load_causal_lm(init, device)
    beta = cfg.train.beta
    start = time.perf_counter()
    ref = policy_logps(model, tokenizer, heldout, cfg, device)  # the reference = the untouched init
    print(f"{args.method}: {len(pairs)} train pairs ({view}), {len(heldout)} held-out pairs; reference scored in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    trainer = dpo_trainer(model, None, preference_dataset(pairs, tokenizer, cfg), tokenizer, cfg, beta, tmp / "trainer",
                          device, ref_cache_dir=tmp / "ref_logps")
    curve: list[dict] = []
    train_time = [0.0, time.perf_counter()]  # seconds spent in optimizer steps, start of the current step run

    def probe(step: int) -> None:
        train_time[0] += time.perf_counter() - train_time[1]
        t0 = time.perf_counter()
        chosen, rejected = policy_logps(trainer.model, tokenizer, heldout, cfg, device)
        # the run's own learning check on these margins (harness.training.learning.dpo_checks): accuracy and mean margin, CIs
        acc, margin = dpo_checks(args.method, implicit_margins(beta, chosen, rejected, *ref), cfg.learning, cfg.scoring.bootstrap, cfg.seed)
        logs = [h for h in trainer.state.log_history if "loss" in h][-min(step, args.probe_every):]
        point = {
            "step": step, "pairs_seen": step * cfg.train.batch_size * cfg.train.grad_accum,
            "heldout_accuracy": acc["value"], "heldout_accuracy_ci": acc["ci"], "heldout_margin": margin["value"],
            "train_reward_accuracy": float(np.mean([h.get("rewards/accuracies", np.nan) for h in logs])) if logs else None,
            "train_loss": float(np.mean([h["loss"] for h in logs])) if logs else None,
            "train_seconds": round(train_time[0], 1), "probe_seconds": round(time.perf_counter() - t0, 1),
        }
        curve.append(point)
        print(f"step {step:4d} ({point['pairs_seen']:4d} pairs seen): held-out acc {point['heldout_accuracy']:.3f} "
              f"[{point['heldout_accuracy_ci'][0]:.2f}, {point['heldout_accuracy_ci'][1]:.2f}], margin {point['heldout_margin']:+.4f}, "
              f"train acc {point['train_reward_accuracy']}, loss {point['train_loss']}, {point['train_seconds']:.0f} s training", flush=True)
        train_time[1] = time.perf_counter()

    class Probe(TrainerCallback):  # on_log (logging_steps = 1): after the step's own log entry is written
        def on_log(self, _args, state, control, **kw):  # noqa: ANN001
            step = state.global_step
            if (step % args.probe_every == 0 or step == state.max_steps) and not any(p["step"] == step for p in curve):
                probe(step)

    trainer.add_callback(Probe())
    train_time[1] = time.perf_counter()
    trainer.train()
    shutil.rmtree(tmp, ignore_errors=True)  # the trainer's scratch folder and cached reference log-probs
    t = cfg.train
    result = {"bench": "learning_curve", "method": args.method, "view": view, "profile": args.profile, "overrides": args.overrides,
              "train_pairs": len(pairs), "heldout_pairs": len(heldout), "heldout_fold": "dual", "beta": beta,
              "regime": {"learning_rate": t.learning_rate, "epochs": t.epochs, "batch_size": t.batch_size, "grad_accum": t.grad_accum,
                         "max_length": t.max_length, "lora_r": t.lora_r if t.lora else None},
              "min_accuracy": cfg.learning.min_accuracy, "curve": curve,
              "best_step": max(curve, key=lambda p: p["heldout_accuracy"])["step"] if curve else None}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print("RESULT " + json.dumps(result))


def plot(results: list[dict], png: Path) -> None:
    """Held-out accuracy (with its CI band) against pairs seen, one line per result, and the check's threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [p["pairs_seen"] for p in r["curve"]]
        reg = r["regime"]
        label = f"{r['method']} ({r['view']}): lr {reg['learning_rate']:g}, {r['train_pairs']} pairs × {reg['epochs']:g} ep"
        ax.plot(xs, [p["heldout_accuracy"] for p in r["curve"]], marker="o", label=label)
        ax.fill_between(xs, [p["heldout_accuracy_ci"][0] for p in r["curve"]], [p["heldout_accuracy_ci"][1] for p in r["curve"]], alpha=0.15)
    if results:
        ax.axhline(results[0]["min_accuracy"], color="grey", ls="--", lw=1, label=f"check passes at {results[0]['min_accuracy']:.2f}")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("training pairs seen (steps × batch)")
    ax.set_ylabel("held-out implicit-reward accuracy")
    ax.set_title("DPO learning curves on the held-out (dual-fold) pairs, 95% bootstrap CI")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
