"""What a run shows while it works: rich progress bars that stay quiet when output is not a terminal or when `-q` is
given; one line per stage (`StageLines`), while the libraries' own output goes to the run's log file (`captured`)."""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

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


# -- a run's output: library logs to the run's log file, one line per stage on the terminal ---------------------------

_TERMINAL: list[TextIO] = []  # the user's stdout while a stage's output is captured


def terminal() -> TextIO:
    """The user's stdout, also while a stage's output goes to the run's log file (`captured`)."""
    return _TERMINAL[-1] if _TERMINAL else sys.stdout


class _LogStream(io.TextIOBase):
    """sys.stdout / sys.stderr during a stage: text goes to the log file. A library that kept a reference (a logging
    handler made during the stage) writes to the real stderr once the stage is over, never to a closed file."""

    def __init__(self, log: TextIO):
        self._log = log

    def _target(self) -> TextIO:
        return self._log if not self._log.closed else sys.__stderr__

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def fileno(self) -> int:
        return self._target().fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _ToTerminal(logging.Handler):
    """While a stage is captured, the project's own warnings and errors still reach the user (and the log file)."""

    PROJECT = ("bench", "harness", "methods", "evaluators", "leaderboards")

    def __init__(self, stream: TextIO):
        super().__init__(logging.WARNING)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in self.PROJECT:
            try:
                self.stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
                self.stream.flush()
            except Exception:  # noqa: BLE001  (a closed terminal must not fail the stage)
                pass


@contextmanager
def captured(log_path: Path) -> Iterator[None]:
    """Everything printed while the block runs goes to `log_path` (appended): Trainer loss dicts, tqdm and weight-loading
    bars, library warnings. Both levels are redirected: sys.stdout/sys.stderr, and file descriptors 1 and 2 (C code,
    and handlers that kept the original stream). `terminal()` still reaches the user, and so do the project's warnings.
    Off outside the main thread (descriptors are per process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    user_out, user_err = sys.stdout, sys.stderr
    for stream in (user_out, user_err):
        _flush(stream)
    saved: list[tuple[int, int]] = []
    term: TextIO = user_out
    try:
        out_fd = user_out.fileno()
        term = os.fdopen(os.dup(out_fd), "w", buffering=1, encoding=getattr(user_out, "encoding", None) or "utf-8", errors="replace")
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # not a real file (click's CliRunner): keep the object
        pass
    for fd in (1, 2):
        try:
            saved.append((fd, os.dup(fd)))
            os.dup2(log.fileno(), fd)
        except OSError:
            pass
    stream = _LogStream(log)
    sys.stdout = sys.stderr = stream  # type: ignore[assignment]
    handler = _ToTerminal(term)
    logging.getLogger().addHandler(handler)
    _TERMINAL.append(term)
    try:
        yield
    finally:
        _TERMINAL.pop()
        logging.getLogger().removeHandler(handler)
        _flush(stream)
        sys.stdout, sys.stderr = user_out, user_err
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        if term is not user_out:
            _flush(term)
            term.close()
        log.close()


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):  # no stream (sys.stdout is None under pythonw), or a closed one
        pass


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def stage_eta(runs_dir: str | Path, run_prefix: str, stage: str) -> float | None:
    """Median wall time of `stage` in the finished stages of earlier runs whose id starts with `run_prefix`
    ("<method>-<dataset>-<profile>-s"), from their done-markers; None when there are none."""
    walls = []
    for marker in Path(runs_dir).glob(f"{run_prefix}*/{stage}/done.json"):
        try:
            wall = json.loads(marker.read_text()).get("wall_s")
        except (OSError, ValueError):
            continue
        if isinstance(wall, (int, float)) and not isinstance(wall, bool):
            walls.append(float(wall))
    return statistics.median(walls) if walls else None


class StageLines:
    """The `on_stage` of `bench run`/`bench eval`: one line per stage. On a terminal the running stage's line counts
    up (elapsed, and the ETA: the median wall time of this stage in earlier runs of the method, dataset and profile),
    then settles as `train    done in 0:35`; elsewhere each line is printed once, when the stage ends. Quiet: nothing."""

    def __init__(self, eta: Callable[[str], float | None] = lambda stage: None, quiet: bool = False):
        self.eta, self.quiet = eta, quiet
        self._stage: str | None = None
        self._start = 0.0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, stage: str, status: str) -> None:
        self.close()
        if self.quiet:
            return
        if status == "running":
            self._stage, self._start = stage, time.monotonic()
            expected = self.eta(stage)
            if terminal().isatty():
                self._stop.clear()
                self._ticker = threading.Thread(target=self._tick, args=(expected,), daemon=True)
                self._ticker.start()
            return
        self._write(f"  {stage:<8} {status}\n")

    def close(self, failed: bool = False) -> None:
        """Settle the running stage's line (`stopped after` when the stage raised)."""
        if self._stage is None:
            return
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        stage, self._stage = self._stage, None
        elapsed = _clock(time.monotonic() - self._start)
        if not self.quiet:
            self._write(f"  {stage:<8} {'stopped after' if failed else 'done in'} {elapsed}\n")

    def _tick(self, expected: float | None) -> None:
        while True:
            elapsed = time.monotonic() - self._start
            eta = f", ETA {_clock(max(expected - elapsed, 0.0))} (earlier runs: {_clock(expected)})" if expected else ""
            self._write(f"  {self._stage:<8} running {_clock(elapsed)}{eta}")
            if self._stop.wait(1.0):
                return

    def _write(self, text: str) -> None:
        out = terminal()
        try:
            if out.isatty():
                text = "\r\033[K" + text
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # a closed terminal never fails the run
            pass
