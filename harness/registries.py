"""The six registries and their built-in entries, all lazy ("module:attr"), so the CLI starts fast.

Third parties add methods, datasets and scorers through entry points:

    [project.entry-points."bench.methods"]
    my-method = "my_pkg.my_method:MyMethod"

`EVALUATION` names the evaluator capabilities the pipeline (`harness/runs.py`) calls between scoring and the record:
judge roles and decisions, the metrics, the score-model cache, TruthfulQA MC. The harness layer reaches them here,
never by importing `evaluators` (tests/test_layers.py), so imports run one way: harness -> methods -> evaluators.
"""

from __future__ import annotations

from harness.api import is_method, is_scorer_factory
from harness.registry import Registry

METHODS: Registry = Registry("method", "bench.methods", check=is_method)
DATASETS: Registry = Registry("dataset", "bench.datasets", check=callable)
SCORERS: Registry = Registry("scorer", "bench.scorers", check=is_scorer_factory)
GENERATORS: Registry = Registry("generator", None, check=callable)
TRACKERS: Registry = Registry("tracker", None, check=callable)
EVALUATION: Registry = Registry("evaluation hook", None, check=callable)

for _name, _target in {
    "sft": "methods.sft:SFT",
    "dpo-helpful": "methods.dpo_helpful:DPOHelpful",
    "dpo-harmless": "methods.dpo_harmless:DPOHarmless",
    "pddpo": "methods.pddpo:PDDPO",
    "pddpo-fixed": "methods.pddpo:PDDPOFixed",
    "pddpo-online": "methods.pddpo_online:OnlinePDDPO",
    "safe-rlhf": "methods.safe_rlhf:SafeRLHF",
    "ppo-shaping": "methods.ppo_shaping:PPOShaping",
    "sacpo": "methods.sacpo:SACPO",
    "sacpo-kto": "methods.sacpo:SACPOKTO",
    "p-sacpo": "methods.p_sacpo:PSACPO",
    "sacpo-naive-merge": "methods.sacpo_naive_merge:SACPONaiveMerge",
    "mocan": "methods.mocan:MoCAN",
    "pecan": "methods.pecan:PeCAN",
    "safedpo": "methods.safedpo:SafeDPO",
}.items():
    METHODS.register(_name, _target)

for _name, _target in {
    "pku-saferlhf": "harness.datasets.pku_saferlhf:load",
    "truthfulqa": "harness.datasets.truthfulqa:load",
    "hh-rlhf-harmless": "harness.datasets.hh_rlhf:load",
    "redteam-83": "harness.datasets.prompt_sets:load_redteam",
    "beavertails": "harness.datasets.prompt_sets:load_beavertails",
}.items():
    DATASETS.register(_name, _target)

for _name, _target in {
    "minilm-reward": "evaluators.score_models:minilm_reward",
    "minilm-cost": "evaluators.score_models:minilm_cost",
    "beaver-reward": "evaluators.beaver:beaver_reward",
    "beaver-cost": "evaluators.beaver:beaver_cost",
    "truthfulness": "evaluators.truthfulqa:truthfulness_scorer",
    "length": "evaluators.baselines:length_scorer",
    "random": "evaluators.baselines:random_scorer",
    "safety-judge": "evaluators.judges.core:safety_judge",
    "reward-judge": "evaluators.judges.core:reward_judge",
    "refusal-judge": "evaluators.judges.core:refusal_judge",
    "truthfulness-judge": "evaluators.judges.core:truthfulness_judge",
}.items():
    SCORERS.register(_name, _target)

GENERATORS.register("hf", "harness.generation:HFGenerator")
GENERATORS.register("vllm", "harness.generation:VLLMGenerator")
GENERATORS.register("dummy", "harness.generation:DummyGenerator")

TRACKERS.register("none", "harness.tracking:MemoryTracker")
TRACKERS.register("wandb", "leaderboards.wandb_tracker:WandbTracker")

for _name, _target in {
    # the judges' roles, decisions and record (evaluators/judging.py)
    "judge_names": "evaluators.judging:judge_names",
    "cost_role": "evaluators.judging:cost_role",
    "decisions": "evaluators.judging:decisions",
    "describe": "evaluators.judging:describe",
    "self_judged": "evaluators.judging:self_judged",
    "confusion_counts": "evaluators.judging:confusion_counts",
    # the declared metrics and their per-item values (evaluators/metrics.py)
    "safety_metrics": "evaluators.metrics:safety_metrics",
    "bootstrap_ci": "evaluators.metrics:bootstrap_ci",
    "compute_group": "evaluators.metrics:compute_group",
    "refusal_set_metrics": "evaluators.metrics:refusal_set_metrics",
    "keys_hash": "evaluators.metrics:keys_hash",
    "save_items": "evaluators.metrics:save_items",
    "higher_is_better": "evaluators.metrics:higher_is_better",
    # a method's own score models, trained once and reused (evaluators/score_models/cache.py)
    "reusable_score_model": "evaluators.score_models:reusable_score_model",
    # TruthfulQA multiple choice (evaluators/truthfulqa.py)
    "select_mc_questions": "evaluators.truthfulqa:select_mc_questions",
    "mc_metrics": "evaluators.truthfulqa:mc_metrics",
}.items():
    EVALUATION.register(_name, _target)
