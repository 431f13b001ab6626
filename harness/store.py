"""The run store: an embedded SQLite file (`<runs_dir>/bench.sqlite`) indexing every run's results record.

The JSON record in each run folder is the source of truth; the store is an index the leaderboards read.
Schema version of the results record: `RESULTS_SCHEMA_VERSION` (documented in docs/results-schema.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import BenchError

RESULTS_SCHEMA_VERSION = "1.1"

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    method     TEXT NOT NULL,
    dataset    TEXT NOT NULL,
    model      TEXT NOT NULL,
    profile    TEXT NOT NULL,
    seed       INTEGER NOT NULL,
    suite      TEXT,
    status     TEXT NOT NULL,          -- running | finished | failed
    stage      TEXT,                   -- last finished stage
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    results    TEXT                    -- the results record (JSON), once finished
);
"""


def store_path(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "bench.sqlite"


BUSY_TIMEOUT_S = 30  # a writer waits at most this long for another process's write (WAL keeps readers unblocked)


def _connect(runs_dir: str | Path) -> sqlite3.Connection:
    path = store_path(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode = WAL")  # readers never block writers; several runs share one store
        con.execute(_DDL)
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, exc) from None
    return con


def _store_error(path: Path, exc: Exception) -> BenchError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return BenchError(f"run store {path} stayed locked for {BUSY_TIMEOUT_S} s ({exc}): another process holds it; retry")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return BenchError(f"cannot write the run store {path} ({exc}): make it writable or choose another --runs-dir")
    if "not a database" in text or "malformed" in text or "corrupt" in text or not isinstance(exc, sqlite3.OperationalError):
        return BenchError(f"run store {path} is damaged ({exc}): `bench runs --reindex --runs-dir {path.parent}` rebuilds it from the run folders")
    return BenchError(f"run store {path}: {exc} (retry; `bench runs --reindex --runs-dir {path.parent}` rebuilds it if it persists)")


def check_store(runs_dir: str | Path) -> None:
    """Open the store, check its integrity and take (and release) its write lock, so a damaged or read-only store fails
    before a run starts. Changes nothing, so any number of processes may check at once."""
    path = store_path(runs_dir)
    with closing(_connect(runs_dir)) as con:
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()[0]
            con.execute("BEGIN IMMEDIATE")  # the write lock: fails on a read-only file, waits for a busy one
            con.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            raise _store_error(path, exc) from None
    if ok != "ok":
        raise _store_error(path, sqlite3.DatabaseError(ok))


def upsert_run(runs_dir: str | Path, run_id: str, *, method: str, dataset: str, model: str, profile: str, seed: int,
               suite: str | None, status: str, stage: str | None = None, results: dict[str, Any] | None = None) -> None:
    now = time.time()
    with closing(_connect(runs_dir)) as con, con, _errors(runs_dir):
        con.execute(
            """INSERT INTO runs (run_id, method, dataset, model, profile, seed, suite, status, stage, created, updated, results)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(run_id) DO UPDATE SET status=excluded.status, stage=excluded.stage, updated=excluded.updated,
                 suite=COALESCE(excluded.suite, runs.suite), results=COALESCE(excluded.results, runs.results)""",
            (run_id, method, dataset, model, profile, seed, suite, status, stage, now, now, json.dumps(results) if results else None),
        )


def list_runs(runs_dir: str | Path, **where: Any) -> list[dict[str, Any]]:
    """Rows as dicts (with `results` parsed), filtered by equality on any column, newest first."""
    if not store_path(runs_dir).exists():
        return []
    clauses = " AND ".join(f"{k} = ?" for k in where)
    sql = "SELECT * FROM runs" + (f" WHERE {clauses}" if clauses else "") + " ORDER BY updated DESC"
    with closing(_connect(runs_dir)) as con, _errors(runs_dir):
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(sql, tuple(where.values()))]
    for r in rows:
        r["results"] = json.loads(r["results"]) if r["results"] else None
    return rows


@contextlib.contextmanager
def _errors(runs_dir: str | Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise _store_error(store_path(runs_dir), exc) from None


# -- run lock ------------------------------------------------------------------------------------------------------
# One lock file per run id under <runs_dir>/.locks/, held with flock for the whole run. The kernel drops it when the
# process dies (kill -9 included), so a lock is never stale. (flock on network file systems depends on the mount.)

def _lock_path(runs_dir: str | Path, run_id: str) -> Path:
    return Path(runs_dir) / ".locks" / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(runs_dir: str | Path, run_id: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the run's lock; if another process holds it, call `on_wait(holder)` once and wait for it."""
    path = _lock_path(runs_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            if on_wait is not None:
                on_wait(f"pid {fh.read().strip() or '?'}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_running(runs_dir: str | Path, run_id: str) -> bool:
    """True while some process holds the run's lock."""
    path = _lock_path(runs_dir, run_id)
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def reconcile(runs_dir: str | Path) -> int:
    """Rows still `running` whose process is gone (killed, crashed before it could say so) become `interrupted`.
    Returns how many rows changed."""
    if not store_path(runs_dir).exists():
        return 0
    stale = [r["run_id"] for r in list_runs(runs_dir, status="running") if not is_running(runs_dir, r["run_id"])]
    if stale:
        with closing(_connect(runs_dir)) as con, con, _errors(runs_dir):
            con.executemany("UPDATE runs SET status = 'interrupted', updated = ? WHERE run_id = ? AND status = 'running'",
                            [(time.time(), rid) for rid in stale])
    return len(stale)


# -- rebuild ------------------------------------------------------------------------------------------------------

STAGES = ("train", "generate", "score", "metrics")


def reindex(runs_dir: str | Path) -> dict[str, int]:
    """Rebuild the store from the run folders (the source of truth): each `<run>/config.yaml` gives a row; its
    `results.json` makes it finished, else its last finished stage and `interrupted` (or `running` while locked).
    A damaged store is kept beside the new one as `bench.sqlite.damaged-<time>`. Returns counts."""
    import yaml

    root = Path(runs_dir)
    path = store_path(root)
    rows: list[dict[str, Any]] = []
    for cfg_path in sorted(root.glob("*/config.yaml")):
        run_dir = cfg_path.parent
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
            results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise BenchError(f"{run_dir}: cannot read its config.yaml/results.json ({exc}); move the folder away and reindex again") from None
        done = [s for s in STAGES if (run_dir / s / "done.json").exists()]
        status = "finished" if results else "running" if is_running(root, run_dir.name) else "interrupted"
        mtime = cfg_path.stat().st_mtime
        rows.append(dict(run_id=run_dir.name, method=cfg["method"], dataset=cfg["dataset"], model=cfg["model"], profile=cfg["profile"],
                         seed=cfg["seed"], suite=cfg.get("suite"), status=status, stage=done[-1] if done else None,
                         created=mtime, updated=(run_dir / "results.json").stat().st_mtime if results else mtime,
                         results=json.dumps(results) if results else None))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        with con:
            con.execute(_DDL)
            con.executemany("INSERT INTO runs VALUES (:run_id, :method, :dataset, :model, :profile, :seed, :suite, :status, :stage, "
                            ":created, :updated, :results)", rows)
    finally:
        con.close()
    moved = 0
    if path.exists():
        try:
            with closing(sqlite3.connect(path)) as old:
                old.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError:
            shutil.copy2(path, path.with_name(f"{path.name}.damaged-{int(time.time())}"))
            moved = 1
    for suffix in ("-wal", "-shm"):  # the old write-ahead log belongs to the old file
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)
    return {"runs": len(rows), "finished": sum(r["status"] == "finished" for r in rows), "damaged_store_kept": moved}
