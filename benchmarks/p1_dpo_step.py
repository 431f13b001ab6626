"""P1: a harness DPO step ÷ a raw TRL `DPOTrainer` step, same batch, model, LoRA and settings. Target <= 1.05.

Both trainers are built from the cpu profile's regime on SmolLM2-135M (LoRA r16, reference log-probs
precomputed), get the same first batch and run forward + backward alternately. Two harness paths are timed: the
default (TRL's own loss: the subclass only adds a column and a cache) and the margin loss (SafeDPO, O-PD-DPO),
which computes `harness.training.losses.dpo_loss` from TRL's fused LM head.
"""

from __future__ import annotations

from common import cfg_for, first_batch, harness_trainer, interleaved, long_pairs, paired_ratio, policy_path, result, step_args, step_fn, trl_trainer


def main() -> None:
    a = step_args(__doc__, steps=5)
    from harness.models import load_tokenizer

    cfg = cfg_for(a.seq_len, a.batch)
    pairs = long_pairs(a.batch, load_tokenizer(policy_path()), a.seq_len)
    raw = trl_trainer(cfg, pairs)
    ours = harness_trainer(cfg, pairs)
    ours_margin = harness_trainer(cfg, pairs, margins=[0.5] * len(pairs))
    batch = first_batch(raw)
    fns = {"trl": step_fn(raw, batch), "harness": step_fn(ours, first_batch(ours)), "harness_margin": step_fn(ours_margin, first_batch(ours_margin))}
    times = interleaved(fns, a.steps)
    r = paired_ratio(times, "harness", "trl")
    rm = paired_ratio(times, "harness_margin", "trl")
    for k, v in times.items():
        print(f"{k:15s} median {sorted(v)[len(v) // 2]:.3f} s/step over {len(v)} steps")
    print(f"P1 harness/TRL = {r:.3f} (margin loss: {rm:.3f}); target <= 1.05")
    result("P1", ratio=r, ratio_margin=rm, target="<= 1.05", met=r <= 1.05, times=times, seq_len=a.seq_len, batch=a.batch)


if __name__ == "__main__":
    main()
