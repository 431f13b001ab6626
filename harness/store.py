"""The run store: an embedded SQLite file (`<runs_dir>/bench.sqlite`) indexing every run's results record.

The JSON record in each run folder is the source of truth; the store is an index the leaderboards read.
Schema version of the results record: `RESULTS_SCHEMA_VERSION` (documented in docs/results-schema.md).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

RESULTS_SCHEMA_VERSION = "1.0"

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


def _connect(runs_dir: str | Path) -> sqlite3.Connection:
    path = store_path(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute(_DDL)
    return con


def upsert_run(runs_dir: str | Path, run_id: str, *, method: str, dataset: str, model: str, profile: str, seed: int,
               suite: str | None, status: str, stage: str | None = None, results: dict[str, Any] | None = None) -> None:
    now = time.time()
    with closing(_connect(runs_dir)) as con, con:
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
    with closing(_connect(runs_dir)) as con:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(sql, tuple(where.values()))]
    for r in rows:
        r["results"] = json.loads(r["results"]) if r["results"] else None
    return rows
