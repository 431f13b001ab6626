"""Plain data types shared by every part of the harness (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PreferencePair:
    """One preference: `chosen` beats `rejected` for `prompt` under one label view.

    Reward pairs (D_r): chosen = more helpful. Cost pairs (D_c): chosen = **safer** (y_s), rejected = y_u.
    Both views carry each response's safety label and severity where the source has them.
    """

    prompt: str
    chosen: str
    rejected: str
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    chosen_severity: int | None = None
    rejected_severity: int | None = None
    category: str | None = None
    source: str = ""  # "file:row" or "hub:split:row" for error messages and provenance

    def swapped(self) -> "PreferencePair":
        """The same pair with chosen and rejected exchanged (labels and severities travel with their response)."""
        return PreferencePair(
            prompt=self.prompt, chosen=self.rejected, rejected=self.chosen,
            chosen_safe=self.rejected_safe, rejected_safe=self.chosen_safe,
            chosen_severity=self.rejected_severity, rejected_severity=self.chosen_severity,
            category=self.category, source=self.source,
        )


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt to generate for, with an optional category (per-category breakdowns) and metadata."""

    prompt: str
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class DatasetBundle:
    """Everything a run needs from a dataset, already split by a stable prompt hash.

    Folds: `train` (methods), `scorer` (the harness's own score models), `dual` (held-out prompts for dual
    estimates), `eval` (final evaluation). No prompt is in two folds.
    """

    name: str
    source: str  # "hub:<id>@<revision>" or a local path
    reward_pairs: dict[str, list[PreferencePair]] = field(default_factory=dict)
    cost_pairs: dict[str, list[PreferencePair]] = field(default_factory=dict)
    prompts: dict[str, list[EvalPrompt]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)  # rows read, dropped per rule, per fold
    notes: list[str] = field(default_factory=list)  # e.g. "only 238 reward pairs locally"
    default_cost_scorer: str = "minilm-cost"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
