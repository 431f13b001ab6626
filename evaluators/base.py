"""Re-exports of the scorer contract, which lives in `harness.api` (kept so plugins importing from here keep working).

Reward scorers: higher = more helpful. Cost scorers: cost > 0 means unsafe; see `harness.api.Scorer`.
"""

from harness.api import Scorer, is_scorer_factory  # noqa: F401

__all__ = ["Scorer", "is_scorer_factory"]
