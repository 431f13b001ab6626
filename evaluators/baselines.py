"""Trivial scorers: response length and a seeded random score. A learned scorer must beat both on held-out pairs
(docs/evaluation.md §4.3), otherwise its accuracy says nothing about helpfulness or safety."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from harness.config import RunConfig


@dataclass
class LengthScorer:
    """Score = number of words in the response (longer = "better" reward, or "costlier" as a cost)."""

    kind: str = "reward"
    name: str = "length"
    fingerprint: str = "length-words-v1"
    is_binary: bool = False

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(r.split())) for r in responses]


@dataclass
class RandomScorer:
    """Score ~ Uniform(−1, 1), a pure function of (seed, prompt, response): deterministic across calls and batch
    orders, and centred on 0 so that as a cost its sign is a coin flip."""

    seed: int = 0
    kind: str = "reward"
    name: str = "random"
    is_binary: bool = False

    @property
    def fingerprint(self) -> str:
        return f"random-uniform-v1-s{self.seed}"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for p, r in zip(prompts, responses):
            h = int(hashlib.sha256(f"{self.seed}\x00{p}\x00{r}".encode()).hexdigest()[:13], 16)
            out.append(2.0 * h / 16**13 - 1.0)
        return out


def length_scorer(cfg: RunConfig, kind: str = "reward", **_) -> LengthScorer:
    return LengthScorer(kind=kind)


def random_scorer(cfg: RunConfig, kind: str = "reward", seed: int | None = None, **_) -> RandomScorer:
    return RandomScorer(seed=cfg.seed if seed is None else seed, kind=kind)
