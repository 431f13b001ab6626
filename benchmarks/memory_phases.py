"""Where a DPO-family train stage's memory goes, phase by phase, in one process (docs/memory.md).

Replays what a PD-DPO stage-2 training does with the cpu profile's policy and regime (SmolLM2-135M, LoRA r16, 4
pairs x 192 tokens per step), each step under `harness.monitor.phase` so the stage record shows its peak RSS:
load policy -> load reference -> trainer init + reference log-probs -> train step (no checkpointing) -> train step
(gradient checkpointing) -> merge + save -> dual-step generation -> scoring. Prints the phase table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psutil

from common import cfg_for, first_batch, load_model, long_pairs, policy_path, result, step_fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=192)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    from harness.training.dpo import dpo_trainer, preference_dataset
    from harness.models import load_tokenizer
    from harness.monitor import StageMonitor, malloc_trim, phase

    rss = lambda: psutil.Process().memory_info().rss / 2**20  # noqa: E731
    resident = {}
    cfg = cfg_for(a.seq_len, a.batch)
    with StageMonitor(interval=0.05) as mon:
        resident["libraries"] = rss()
        with phase("1 load policy"):
            tok = load_tokenizer(policy_path())
            model = load_model()
        resident["1 load policy"] = rss()
        with phase("2 load reference"):
            ref = load_model().eval()
        resident["2 load reference"] = rss()
        pairs = long_pairs(a.batch, tok, a.seq_len)
        with phase("3 trainer init + ref log-probs"):
            trainer = dpo_trainer(model, ref, preference_dataset(pairs, tok, cfg), tok, cfg, 0.05, Path(tempfile.mkdtemp()), "cpu",
                                  Path(tempfile.mkdtemp()))
        resident["3 trainer init + ref log-probs"] = rss()
        if trainer.ref_model in trainer.accelerator._models:
            trainer.accelerator._models.remove(trainer.ref_model)
        trainer.ref_model = None
        del ref
        import gc

        gc.collect()
        malloc_trim()
        resident["3b reference released"] = rss()
        batch = first_batch(trainer)
        step = step_fn(trainer, batch)
        times = {}
        for name, ckpt in (("4 train step", False), ("5 train step, gradient checkpointing", True)):
            if ckpt:
                trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                trainer.model.enable_input_require_grads()
            malloc_trim()
            with phase(name, trim=True):
                start = time.perf_counter()
                loss = step()
                times[name] = (time.perf_counter() - start, loss)
            resident[name] = rss()
        trainer.model.gradient_checkpointing_disable()
        with phase("6 merge + save", trim=True):
            merged = trainer.model.merge_and_unload()
            out = Path(tempfile.mkdtemp()) / "m"
            merged.save_pretrained(out)
            tok.save_pretrained(out)
        del trainer, merged, model
        gc.collect()
        malloc_trim()
        resident["6 merge + save (models freed)"] = rss()
        from harness.datasets import load_bundle
        from harness.generation import HFGenerator
        from harness.registries import SCORERS
        from harness.types import SamplingParams

        prompts = [p.prompt for p in load_bundle(cfg).prompts.get("dual", [])][:8]
        with phase("7 dual generation (8 prompts)", trim=True):
            gen = HFGenerator(out, batch_size=16)
            responses = gen.generate(prompts, SamplingParams(max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0))
            del gen
        with phase("8 scoring (minilm cost)", trim=True):
            scorer = SCORERS.get("minilm-cost")(cfg)
            scorer.use_cache = False
            scorer.score(prompts, responses)
    rec = mon.record
    print(f"{'phase':42s} {'peak RSS MB':>12s} {'resident after':>15s} {'wall s':>8s}")
    print(f"{'libraries (torch, transformers, trl)':42s} {'':>12s} {resident['libraries']:15.0f}")
    for name, p in rec["phases"].items():
        print(f"{name:42s} {p['peak_rss_mb']:12.0f} {resident.get(name, float('nan')):15.0f} {p['wall_s']:8.1f}")
    for k in ("3b reference released", "6 merge + save (models freed)"):
        print(f"{k:42s} {'':>12s} {resident[k]:15.0f}")
    l0, l1 = times["4 train step"][1], times["5 train step, gradient checkpointing"][1]
    print(f"loss without / with checkpointing: {l0:.6f} / {l1:.6f}; step time {times['4 train step'][0]:.1f} s / "
          f"{times['5 train step, gradient checkpointing'][0]:.1f} s")
    result("memory_phases", phases=rec["phases"], resident_mb=resident, peak_rss_mb=rec["peak_rss_mb"],
           loss_no_ckpt=l0, loss_ckpt=l1, step_s={k: v[0] for k, v in times.items()})
    print(json.dumps({"peak_rss_mb": rec["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
