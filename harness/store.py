"""The run store: an embedded SQLite file (`<runs_dir>/bench.sqlite`) indexing every run's results record.

The JSON record in each run folder is the source of truth; the store is an index the leaderboards read, and it
heals: a listing registers any finished run folder whose row is missing (`heal`), `reindex` rebuilds it from the
folders, and a record that does not fit the results schema (`record_problem`) is skipped and reported, never indexed.
On a runs dir this process cannot write, listings read the store read-only into an in-memory index, together with
the finished run folders it lacks.
Schema version of the results record: `RESULTS_SCHEMA_VERSION` (documented in docs/results-schema.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import BenchError

RESULTS_SCHEMA_VERSION = "1.1"
log = logging.getLogger("bench")

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


class StoreReadOnly(BenchError):
    """The store (or its folder) cannot be written: listings fall back to a read-only index (`list_runs`)."""


def _read_only_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _connect(runs_dir: str | Path) -> sqlite3.Connection:
    path = store_path(runs_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode = WAL")  # readers never block writers; several runs share one store
        con.execute(_DDL)
    except sqlite3.DatabaseError as exc:
        error = _store_error(path, exc)
        raise (StoreReadOnly(str(error)) if _read_only_error(exc) else error) from None
    except PermissionError as exc:
        raise StoreReadOnly(f"cannot write the run store {path} ({exc.strerror}): make it writable or choose another --runs-dir") from None
    return con


def writable(runs_dir: str | Path) -> bool:
    """Whether this process may write the runs dir and its store (a missing runs dir counts: it is made on the first
    write). `list_runs` reads a store it may not write read-only."""
    root, path = Path(runs_dir), store_path(runs_dir)
    if not root.exists():
        return True
    return os.access(root, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _store_error(path: Path, exc: Exception) -> BenchError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return BenchError(f"run store {path} stayed locked for {BUSY_TIMEOUT_S} s ({exc}): another process holds it; retry")
    if _read_only_error(exc):
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
    """Rows as dicts (with `results` parsed), filtered by equality on any column, newest first. Finished run folders
    whose row is missing are registered first (`heal`); a runs dir this process cannot write is read through an
    in-memory index (`read_only_index`), so listings and leaderboards work there too."""
    clauses = " AND ".join(f"{k} = ?" for k in where)
    sql = "SELECT * FROM runs" + (f" WHERE {clauses}" if clauses else "") + " ORDER BY updated DESC"
    con: sqlite3.Connection | None = None
    if writable(runs_dir):
        try:
            heal(runs_dir)
            if not store_path(runs_dir).exists():
                return []
            con = _connect(runs_dir)
        except StoreReadOnly:  # a read-only file system, or a store made by another user
            con = None
    if con is None:
        con = read_only_index(runs_dir)
    with closing(con), _errors(runs_dir):
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(sql, tuple(where.values()))]
    for r in rows:
        r["results"] = json.loads(r["results"]) if r["results"] else None
    return rows


# -- healing: the run folders are the source of truth --------------------------------------------------------------

def record_problem(record: Any, run_id: str | None = None) -> str | None:
    """Why a results record does not fit the results schema (docs/results-schema.md) well enough to be indexed, or
    None: a JSON object with a `schema_version`, the index fields (`run_id` = its folder's name, `method`, `dataset`,
    `model`, `profile` as text, `seed` an integer) and a `results` object whose every estimate (`value`, `ci_low`,
    `ci_high`) and count (`n`, `n_prompts`) is a finite number or null. Listings and leaderboards format these."""
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("schema_version"), str):
        return "has no schema_version"
    if run_id is not None and record.get("run_id") != run_id:
        return f"names run {record.get('run_id')!r}, not its folder {run_id!r}"
    for key in ("run_id", "method", "dataset", "model", "profile"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"field '{key}' is {record.get(key)!r}, not a name"
    if not isinstance(record.get("seed"), int) or isinstance(record.get("seed"), bool):
        return f"field 'seed' is {record.get('seed')!r}, not an integer"
    if not isinstance(record.get("results"), dict):
        return "field 'results' is not an object"
    return _numbers_problem(record["results"], "results")


_NUMERIC = ("value", "ci_low", "ci_high", "n", "n_prompts")


def _numbers_problem(node: Any, where: str) -> str | None:
    if isinstance(node, list):
        return next((p for i, x in enumerate(node) if (p := _numbers_problem(x, f"{where}[{i}]"))), None)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if key in _NUMERIC and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            return f"'{where}.{key}' is {value!r}, not a number"
        problem = _numbers_problem(value, f"{where}.{key}")
        if problem:
            return problem
    return None


def folder_row(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(store row, None) for a run folder (`config.yaml`; `results.json` makes it finished, else its last finished
    stage and `interrupted`, or `running` while locked), or (None, why it cannot be indexed)."""
    import yaml

    cfg_path, results_path = run_dir / "config.yaml", run_dir / "results.json"
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else None
        results = json.loads(results_path.read_text()) if results_path.exists() else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return None, f"cannot read its config.yaml/results.json ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    if results is not None:
        problem = record_problem(results, run_dir.name)
        if problem:
            return None, f"results.json {problem}"
        keys = results
    elif isinstance(cfg, dict):
        keys = cfg
    else:
        return None, "config.yaml is not a mapping"
    try:
        fields = {k: keys[k] for k in ("method", "dataset", "model", "profile", "seed")}
    except KeyError as exc:
        return None, f"config.yaml has no {exc}"
    done = [s for s in STAGES if (run_dir / s / "done.json").exists()]
    root = run_dir.parent
    status = "finished" if results else "running" if is_running(root, run_dir.name) else "interrupted"
    mtime = (cfg_path if cfg_path.exists() else results_path).stat().st_mtime
    return dict(run_id=run_dir.name, **fields, suite=keys.get("suite"), status=status, stage=done[-1] if done else None,
                created=mtime, updated=results_path.stat().st_mtime if results else mtime,
                results=json.dumps(results) if results else None), None


_WARNED: set[tuple[str, str]] = set()
_INSERT = ("INSERT INTO runs VALUES (:run_id, :method, :dataset, :model, :profile, :seed, :suite, :status, :stage, "
           ":created, :updated, :results)")


def _unindexed(runs_dir: str | Path, known: set[str]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(rows, skipped) for the finished run folders (a `results.json`) whose run id is not in `known`; a folder whose
    record does not fit the schema is skipped with its problem, and logged."""
    rows, skipped = [], []
    for results_path in sorted(Path(runs_dir).glob("*/results.json")):
        if results_path.parent.name in known:
            continue
        row, problem = folder_row(results_path.parent)
        if problem:
            skipped.append((results_path.parent.name, problem))
            if (str(results_path), problem) not in _WARNED:  # once per process: a command may list twice
                _WARNED.add((str(results_path), problem))
                log.warning("run folder %s not indexed: %s (fix or move the folder away)", results_path.parent, problem)
        else:
            rows.append(row)
    return rows, skipped


def heal(runs_dir: str | Path) -> int:
    """Register every finished run folder whose row is missing (or not finished: its process died between writing
    results.json and its row). Returns how many rows it wrote. Safe beside running writers: rows are upserts."""
    root = Path(runs_dir)
    if not root.is_dir() or next(root.glob("*/results.json"), None) is None:
        return 0
    known: set[str] = set()
    if store_path(root).exists():
        with closing(_connect(root)) as con, _errors(root):
            known = {r[0] for r in con.execute("SELECT run_id FROM runs WHERE status = 'finished' AND results IS NOT NULL")}
    rows, _ = _unindexed(root, known)
    if rows:
        with closing(_connect(root)) as con, con, _errors(root):
            con.executemany(_INSERT.replace("INSERT", "INSERT OR REPLACE", 1), rows)
    return len(rows)


def read_only_index(runs_dir: str | Path) -> sqlite3.Connection:
    """An in-memory index for a runs dir this process cannot write: the store's rows (opened read-only and immutable,
    so sqlite needs no journal beside it), plus the finished run folders it lacks."""
    root = Path(runs_dir)
    mem = sqlite3.connect(":memory:")
    mem.execute(_DDL)
    path = store_path(root)
    if path.exists():
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as src:
                mem.executemany(_INSERT, [dict(zip(COLUMNS, r)) for r in src.execute(f"SELECT {', '.join(COLUMNS)} FROM runs")])
        except sqlite3.DatabaseError as exc:
            mem.close()
            raise _store_error(path, exc) from None
    known = {r[0] for r in mem.execute("SELECT run_id FROM runs WHERE status = 'finished' AND results IS NOT NULL")}
    rows, _ = _unindexed(root, known)
    mem.executemany(_INSERT.replace("INSERT", "INSERT OR REPLACE", 1), rows)
    return mem


COLUMNS = ("run_id", "method", "dataset", "model", "profile", "seed", "suite", "status", "stage", "created", "updated", "results")


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
    if not store_path(runs_dir).exists() or not writable(runs_dir):  # read-only: shown as stored
        return 0
    stale = [r["run_id"] for r in list_runs(runs_dir, status="running") if not is_running(runs_dir, r["run_id"])]
    if stale:
        with closing(_connect(runs_dir)) as con, con, _errors(runs_dir):
            con.executemany("UPDATE runs SET status = 'interrupted', updated = ? WHERE run_id = ? AND status = 'running'",
                            [(time.time(), rid) for rid in stale])
    return len(stale)


# -- rebuild ------------------------------------------------------------------------------------------------------

STAGES = ("train", "generate", "score", "metrics")


def reindex(runs_dir: str | Path) -> dict[str, Any]:
    """Rebuild the store from the run folders (the source of truth): each `<run>/config.yaml` (or `results.json`)
    gives a row; its `results.json` makes it finished, else its last finished stage and `interrupted` (or `running`
    while locked). A folder that cannot be read, or whose record does not fit the results schema (`record_problem`),
    is skipped and reported in `skipped` as (run id, problem). A damaged store is kept beside the new one as
    `bench.sqlite.damaged-<time>`. Returns counts."""
    root = Path(runs_dir)
    path = store_path(root)
    if not writable(root):
        raise BenchError(f"cannot reindex {root}: this process may not write it (listings and leaderboards still work "
                         "read-only; reindex as the owner of the folder)")
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for run_dir in sorted({p.parent for p in (*root.glob("*/config.yaml"), *root.glob("*/results.json"))}):
        row, problem = folder_row(run_dir)
        if problem:
            skipped.append((run_dir.name, problem))
        else:
            rows.append(row)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        with con:
            con.execute(_DDL)
            con.executemany(_INSERT, rows)
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
    return {"runs": len(rows), "finished": sum(r["status"] == "finished" for r in rows), "damaged_store_kept": moved,
            "skipped": skipped}
