"""P2: a PD-DPO stage-2 step with cached reference log-probs ÷ one with a live reference forward. Target <= 0.75.

Stage 2 trains π_k (LoRA on SmolLM2-135M) against the frozen π_r̂. Cached: `harness.training.dpo.dpo_trainer` with the
reference log-probs precomputed once (the batch carries them). Live: a stock `DPOTrainer` with
`precompute_ref_log_probs=False` and π_r̂ passed as `ref_model`, so every step also runs the reference forward.
Here π_r̂ is the policy's own weights (the step cost does not depend on the values).
"""

from __future__ import annotations

from common import cfg_for, first_batch, harness_trainer, interleaved, load_model, long_pairs, paired_ratio, policy_path, result, step_args, step_fn, trl_trainer


def main() -> None:
    a = step_args(__doc__, steps=5)
    from harness.models import load_tokenizer

    cfg = cfg_for(a.seq_len, a.batch)
    pairs = long_pairs(a.batch, load_tokenizer(policy_path()), a.seq_len)
    cached = harness_trainer(cfg, pairs, beta=0.1 / 3, ref_model=load_model().eval())
    cached.ref_model = None  # what train_dpo does: the reference is released once its log-probs are columns
    live = trl_trainer(cfg, pairs, beta=0.1 / 3, ref_model=load_model().eval(), precompute=False)
    times = interleaved({"cached": step_fn(cached, first_batch(cached)), "live": step_fn(live, first_batch(live))}, a.steps)
    r = paired_ratio(times, "cached", "live")
    print(f"P2 cached/live reference = {r:.3f}; target <= 0.75")
    result("P2", ratio=r, target="<= 0.75", met=r <= 0.75, times=times, seq_len=a.seq_len, batch=a.batch)


if __name__ == "__main__":
    main()
