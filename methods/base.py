"""Re-exports of the method contracts, which live in `harness.api` (kept so plugins importing from here keep working).

    from methods.base import TrainContext, TrainResult
"""

from harness.api import Method, TrainContext, TrainResult, is_method  # noqa: F401

__all__ = ["Method", "TrainContext", "TrainResult", "is_method"]
