"""Weights & Biases behind the harness's `Tracker` protocol.

Offline by default: runs are written under `<dir>/wandb/offline-run-*` without an account or network and can be
uploaded later with `wandb sync <dir>/wandb/offline-run-*`. The harness writes its local results first, so a W&B
failure (bad credentials, a full disk, a wandb bug) is logged as a warning and never raises: after the first
failure of `wandb.init` the tracker turns into a no-op.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")


class WandbTracker:
    """One W&B run. Grouping convention: suite id in `group`, stage or purpose in `job_type`, the run's
    method/dataset/seed in `config` (so the W&B runs table can filter and group by them)."""

    def __init__(self, run_name: str | None = None, group: str | None = None, job_type: str | None = None,
                 config: dict[str, Any] | None = None, mode: str = "offline", project: str = "safealign-bench",
                 entity: str | None = None, dir: str | os.PathLike | None = None, tags: list[str] | None = None):
        if mode not in MODES:
            log.warning("W&B mode %r is not one of %s; using 'disabled'", mode, ", ".join(MODES))
            mode = "disabled"
        self.mode = mode
        self.errors: list[str] = []  # one line per swallowed W&B failure (tests and the CLI's final report)
        self.run: Any = None
        os.environ.setdefault("WANDB_SILENT", "true")
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)

        def init(mode: str) -> Any:
            import wandb

            # finish_previous: several runs in one process (a suite) close each other cleanly. init_timeout: an
            # unreachable server costs seconds, not wandb's default 90 s.
            return wandb.init(project=project, entity=entity, name=run_name, group=group, job_type=job_type,
                              config=config or {}, dir=str(dir) if dir is not None else None, mode=mode,
                              tags=tags, reinit="finish_previous", settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S))

        later = f"upload later with `bench leaderboard --wandb-sync --runs-dir {dir or '.'}`"
        problem = online_problem() if mode == "online" else None
        if problem:  # the one warning: an offline run keeps everything for a later sync
            self.mode = mode = "offline"
            self._warn(f"W&B online unavailable ({problem}); logging offline instead, {later}")
        try:
            self.run = init(mode)
        except Exception as exc:  # noqa: BLE001
            if mode == "online":
                try:
                    self.run, self.mode = init("offline"), "offline"
                    self._warn(f"W&B online init failed ({type(exc).__name__}: {exc}); logging offline instead, {later}")
                    return
                except Exception:  # noqa: BLE001
                    pass
            self._warn(f"W&B init failed ({type(exc).__name__}: {exc}); local results are unaffected")

    # -- the Tracker protocol --------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._call("log", lambda run: run.log(dict(metrics), step=step))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        def log_table(run: Any) -> None:
            import wandb

            # Columns may hold None next to numbers or strings; let W&B type each column as "mixed".
            table = wandb.Table(columns=list(columns), data=[list(r) for r in rows], allow_mixed_types=True)
            run.log({key: table})

        self._call("log_table", log_table)

    def set_summary(self, key: str, value: Any) -> None:
        def set_summary(run: Any) -> None:
            run.summary[key] = value

        self._call("set_summary", set_summary)

    def log_artifact(self, name: str, path: str, type: str = "eval_results") -> None:
        def log_artifact(run: Any) -> None:
            import wandb

            artifact = wandb.Artifact(artifact_name(name), type=type)
            if Path(path).is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            run.log_artifact(artifact)

        self._call("log_artifact", log_artifact)

    def finish(self) -> None:
        self._call("finish", lambda run: run.finish())
        self.run = None

    # -- the harness's results record ---------------------------------------------------------------------
    def log_results(self, record: dict[str, Any]) -> None:
        """Mirror a finished run's record: every declared metric as `eval/<name>` (evaluators.metrics.METRICS) and
        each stage's numbers as `stages/<stage>/<key>`, logged and set as summary; the trajectory as a table."""
        flat = results_values(record)
        self.log_metrics(flat)
        for k, v in flat.items():
            self.set_summary(k, v)
        traj = record.get("train", {}).get("trajectory") or []
        if traj:
            cols = sorted({k for t in traj for k in t})
            self.log_table("train/trajectory", cols, [[t.get(c) for c in cols] for t in traj])

    # -- failure handling --------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[Any], Any]) -> None:
        if self.run is not None:
            self._guard(what, lambda: fn(self.run))

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # W&B must never take local results down with it
            self._warn(f"W&B {what} failed ({type(exc).__name__}: {exc}); local results are unaffected")
            return None

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        log.warning(message)


INIT_TIMEOUT_S = float(os.environ.get("BENCH_WANDB_INIT_TIMEOUT", "15"))
CONNECT_TIMEOUT_S = 3.0


def online_problem() -> str | None:
    """Why online logging cannot work right now (no API key, server unreachable), checked in at most a few seconds
    without prompting; None when it may."""
    import netrc
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    if not os.environ.get("WANDB_API_KEY"):
        try:
            found = netrc.netrc().authenticators(host)
        except (OSError, netrc.NetrcParseError):
            found = None
        if not found:
            return f"no API key for {host}: set WANDB_API_KEY or run `wandb login`"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host}:{port} unreachable: {exc}"
    return None


def offline_runs(root: str | os.PathLike) -> list[Path]:
    """Offline W&B run folders under `root` (a runs dir), not yet synced (wandb marks synced ones with a .synced file)."""
    return sorted(p for p in Path(root).glob("**/wandb/offline-run-*") if p.is_dir() and not any(p.glob("*.synced")))


def sync_offline(root: str | os.PathLike, runner: Callable[[list[str]], int] | None = None) -> tuple[int, int]:
    """`wandb sync` every unsynced offline run under `root`; returns (synced, failed). Needs network and a key."""
    import shutil
    import subprocess

    runs = offline_runs(root)
    exe = shutil.which("wandb") or str(Path(os.sys.executable).with_name("wandb"))
    run = runner or (lambda cmd: subprocess.run(cmd, timeout=600).returncode)
    failed = sum(run([exe, "sync", str(r)]) != 0 for r in runs)
    return len(runs) - failed, failed


def results_values(record: dict[str, Any]) -> dict[str, float]:
    """The flat numbers of a results record a tracker logs: `eval/<metric>` and `stages/<stage>/<key>`."""
    from evaluators.metrics import tracker_values

    flat = tracker_values(record)
    for stage, info in (record.get("stages") or {}).items():
        flat.update({f"stages/{stage}/{k}": v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return flat


def artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "artifact"
