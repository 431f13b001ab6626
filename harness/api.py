"""The contracts between the harness and what plugs into it (lm-eval's `lm_eval/api/`).

- `Method` (registry `bench.methods`): a class with `name`, `config_class` and `train(ctx: TrainContext) -> TrainResult`.
  A method reads top to bottom in its own file: a `@dataclass` config with every field documented (`help`
  metadata), and the class. The harness owns data loading, generation, scoring, metrics and storage; a method only
  turns the SFT policy into an aligned one.
- `Scorer` (registry `bench.scorers`, entries are factories `factory(cfg: RunConfig, **kw) -> Scorer`):
  `score(prompts, responses) -> list[float]`. Reward scorers: higher = more helpful. Cost scorers: **cost > 0 means
  unsafe** (Safe-RLHF convention), for every cost scorer; binary annotators (the truthfulness judge) return 1.0 for
  unsafe/untruthful and 0.0 otherwise, so their mean cost is the unsafe rate. Every scorer has a `fingerprint` so
  scores can be cached by (fingerprint, prompt, response).

This module sits at the bottom of the layers (harness -> methods -> evaluators -> leaderboards): it imports nothing
from the project at run time, so `harness.registries` can check entries without importing methods or evaluators.
`methods.base` and `evaluators.base` re-export these names, so plugins written against them keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.generation import Generator
    from harness.tracking import Tracker
    from harness.types import DatasetBundle, PreferencePair

__all__ = ["Method", "Scorer", "TrainContext", "TrainResult", "is_method", "is_scorer_factory"]


@dataclass
class TrainResult:
    """What training produced. `model_path=None` means the policy is the unchanged SFT model."""

    model_path: str | None
    models_trained: int = 0  # networks whose weights were optimised (PD-DPO: 2; Safe-RLHF: 5)
    networks_held: list[str] = field(default_factory=list)  # every network held in memory at some point
    trajectory: list[dict[str, Any]] = field(default_factory=list)  # per iteration: lambda, cost estimate, ...
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainContext:
    """What the harness hands a method. Heavy services are callables, built only when a method asks."""

    cfg: "RunConfig"
    data: "DatasetBundle"
    policy_path: str  # local folder of the dense SFT policy (safetensors + tokenizer)
    out_dir: Path  # save the final model here (the train stage's folder)
    work_dir: Path  # scratch for intermediate models, inside the stage folder
    device: str  # "cpu" or "cuda"
    seed: int
    make_generator: Callable[..., "Generator"]  # make_generator(model_or_path, tokenizer=None) -> Generator
    reward_annotator: Callable[[], "Scorer"]  # the configured absolute reward scorer (for online pairs)
    cost_annotator: Callable[[], "Scorer"]  # the configured absolute cost scorer (dual steps, relabelling)
    train_score_model: Callable[..., "Scorer"]  # train_score_model(kind, pairs, name, **kw) -> Scorer (Safe-RLHF's own R/C; kw e.g. encoder=)
    tracker: "Tracker | None" = None
    log: Callable[[dict[str, Any]], None] = lambda record: None  # one trajectory record (also to the tracker)

    @property
    def reward_pairs(self) -> list["PreferencePair"]:
        return self.data.reward_pairs.get("train", [])

    @property
    def cost_pairs(self) -> list["PreferencePair"]:
        return self.data.cost_pairs.get("train", [])

    @property
    def dual_prompts(self) -> list[str]:
        return [p.prompt for p in self.data.prompts.get("dual", [])]

    def require_pairs(self, who: str, *kinds: str, what: str = "") -> None:
        """Refuse to train without the train-fold pairs a method needs (`kinds`: "reward", "cost"), in one message
        that names the method, what is missing, the counts and the fix. `what` qualifies the pairs ("offline")."""
        from harness.errors import BenchError

        have = {"reward": self.reward_pairs, "cost": self.cost_pairs}
        missing = [k for k in kinds if not have[k]]
        if missing:
            counts = " and ".join(f"{len(have[k])} {k}" for k in kinds)
            raise BenchError(f"{who} needs {what + ' ' if what else ''}{' and '.join(kinds)} pairs in the train fold, but there are "
                             f"no {' and no '.join(missing)} pairs: dataset '{self.cfg.dataset}' gave {counts} preference pairs "
                             "(check data.max_train_pairs; `bench data` shows the folds)")


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None: ...

    def train(self, ctx: TrainContext) -> TrainResult: ...


def is_method(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "train") and hasattr(obj, "config_class") and hasattr(obj, "name")


@runtime_checkable
class Scorer(Protocol):
    name: str
    kind: str  # "reward" | "cost"
    fingerprint: str  # changes whenever the scores could change (weights, revision, template)
    is_binary: bool  # True when scores are 0/1 labels (then mean cost == unsafe rate)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


def is_scorer_factory(obj: Any) -> bool:
    """Registry check: scorer registry entries are callables `factory(cfg: RunConfig, **kw) -> Scorer`."""
    return callable(obj)
