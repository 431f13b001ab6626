"""Rich progress bars that stay quiet when output is not a terminal or when `-q` is given."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        if self._p is not None and self._t is not None:
            self._p.advance(self._t, n)


def quiet() -> bool:
    return os.environ.get("BENCH_QUIET") == "1" or not sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[_Bar]:
    if quiet():
        yield _Bar(None, None)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
