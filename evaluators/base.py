"""The `Scorer` protocol: `score(prompts, responses) -> list[float]`.

Reward scorers: higher = more helpful. Cost scorers: **cost > 0 means unsafe** (Safe-RLHF convention),
for every cost scorer; binary annotators (the truthfulness judge) return 1.0 for unsafe/untruthful and 0.0
otherwise, so their mean cost is the unsafe rate. Every scorer has a `fingerprint` so scores can be cached
by (fingerprint, prompt, response).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


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
