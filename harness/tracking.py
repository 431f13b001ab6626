"""Experiment trackers behind one small protocol, so W&B is optional and tests need no network.

Local results are always written first; a tracker failure is reported and never loses them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def set_summary(self, key: str, value: Any) -> None: ...

    def log_artifact(self, name: str, path: str, type: str = "eval_results") -> None: ...

    def finish(self) -> None: ...

    # optional: `log_results(record)` mirrors a finished run's results record (harness.runs calls it when present)


class MemoryTracker:
    """Keeps everything in memory: the `none`/test tracker."""

    def __init__(self, **_: Any) -> None:
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
        self.summary: dict[str, Any] = {}
        self.artifacts: list[tuple[str, str, str]] = []
        self.results: list[dict[str, Any]] = []
        self.finished = False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.tables[key] = (list(columns), [list(r) for r in rows])

    def set_summary(self, key: str, value: Any) -> None:
        self.summary[key] = value

    def log_artifact(self, name: str, path: str, type: str = "eval_results") -> None:
        self.artifacts.append((name, path, type))

    def log_results(self, record: dict[str, Any]) -> None:
        self.results.append(record)

    def finish(self) -> None:
        self.finished = True
