"""The shared training library: what methods build on, below the pipeline.

- `dpo`, `kto`: TRL trainers wrapped for the harness (reference cache, margins, atomic output).
- `ppo`: PPO-Lagrangian's rollout and update pieces (Safe-RLHF, reward shaping).
- `losses`, `rl_math`: the shared math, plain torch, unit-tested against hand computations.
- `logprobs`: sequence log-probs and response features used by training and the dual estimates.
- `can_dual`: MoCAN / PeCAN's dual problems.
- `merging`: LoRA merge and model arithmetic (SACPO's naive merge, P-SACPO).
- `learning`: each stage's own learning signal and the learning checks.
- `artifacts`: content hashes and manifests of what a stage saved.

The pipeline (`harness.runs`), config, store and CLI stay one level up, in `harness/`.
"""
