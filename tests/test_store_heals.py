"""The run store is an index that heals (harness/store.py): the run folders are the source of truth.

- a deleted `bench.sqlite` is rebuilt by the next command that meets a finished run folder (`bench run` returning
  its cached record, `bench runs`, `bench leaderboard`);
- `bench runs --reindex` checks every record against the results schema and skips (and reports) a bad one, so no
  later listing trips over it;
- listings and leaderboards work on a runs dir this process cannot write (read-only store, in-memory index).

Run folders are written by hand here (config.yaml from the tiny profile, results.json from tests/results_fixtures.py),
so no test trains anything; `bench` runs in-process through `harness.cli.entry`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from cli_entry import entry_code
from results_fixtures import make_record

from harness import runs
from harness.config import dump_yaml, load_config
from harness.store import list_runs, store_path


def finished_run(runs_dir: Path, method: str, seed: int = 0, **record_kw) -> dict:
    """A finished run folder as `bench run` leaves it: config.yaml, the stage markers and results.json."""
    cfg = load_config("tiny", method=method, seed=seed, runs_dir=str(runs_dir))
    rid = runs.run_id(cfg)
    record = make_record(method, seed=seed, model=cfg.model, profile=cfg.profile, **record_kw)
    record.update(run_id=rid, config=cfg.to_dict())
    run_dir = runs_dir / rid
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    for stage in runs.STAGES:
        (run_dir / stage).mkdir()
        (run_dir / stage / "done.json").write_text("{}")
    (run_dir / "results.json").write_text(json.dumps(record))
    return record


def rows_on_disk(runs_dir: Path) -> dict[str, str]:
    """run id -> status, read straight from the file (list_runs itself heals, so it cannot be the witness)."""
    if not store_path(runs_dir).exists():
        return {}
    con = sqlite3.connect(store_path(runs_dir))
    try:
        return dict(con.execute("SELECT run_id, status FROM runs"))
    finally:
        con.close()


def bench(argv: list[str], capsys) -> tuple[int, str, str]:
    code = entry_code(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def leaderboard_methods(runs_dir: Path, capsys) -> list[str]:
    code, out, err = bench(["leaderboard", "--runs-dir", str(runs_dir), "--format", "json"], capsys)
    assert code == 0, err
    return sorted(row["method"] for table in json.loads(out)["tables"] for row in table["rows"])


# -- a deleted store heals ----------------------------------------------------------------------------------------

def test_a_cached_run_re_registers_its_missing_row(tmp_path):
    runs_dir = tmp_path / "runs"
    record = finished_run(runs_dir, "sft")
    assert rows_on_disk(runs_dir) == {}  # bench.sqlite deleted (or never there)
    cfg = load_config("tiny", method="sft", runs_dir=str(runs_dir))
    assert runs.run(cfg)["run_id"] == record["run_id"]  # the cached record, nothing recomputed
    assert rows_on_disk(runs_dir) == {record["run_id"]: "finished"}


def test_a_damaged_cached_record_is_refused_with_the_fix(tmp_path):
    from harness.errors import BenchError

    runs_dir = tmp_path / "runs"
    record = finished_run(runs_dir, "sft")
    path = runs_dir / record["run_id"] / "results.json"
    bad = {**record, "results": {"safety": {**record["results"]["safety"], "unsafe_rate": {"value": "low"}}}}
    path.write_text(json.dumps(bad))
    with pytest.raises(BenchError, match=r"results.safety.unsafe_rate.value' is 'low', not a number: delete that file and rerun"):
        runs.run(load_config("tiny", method="sft", runs_dir=str(runs_dir)))  # `bench run`: one line, exit 2
    assert json.loads(path.read_text()) == bad and rows_on_disk(runs_dir) == {}  # nothing changed, nothing indexed


@pytest.mark.parametrize("command", ["runs", "leaderboard"])
def test_listing_and_leaderboard_re_register_folders_whose_row_is_missing(command, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    kept = finished_run(runs_dir, "sft")
    assert list_runs(runs_dir)[0]["run_id"] == kept["run_id"]  # indexed ...
    store_path(runs_dir).unlink()  # ... then the store is deleted
    lost = finished_run(runs_dir, "pddpo", reward=0.3)
    if command == "runs":
        code, out, err = bench(["runs", "--runs-dir", str(runs_dir)], capsys)
        assert code == 0, err
        assert kept["run_id"] in out and lost["run_id"] in out
    else:
        assert leaderboard_methods(runs_dir, capsys) == ["pddpo", "sft"]
    assert rows_on_disk(runs_dir) == {kept["run_id"]: "finished", lost["run_id"]: "finished"}


# -- reindex checks every record against the schema -----------------------------------------------------------------

BAD_RECORDS = {
    "metric-not-a-number": (lambda r: r["results"]["safety"]["reward_mean"].update(value="high"), "'results.safety.reward_mean.value' is 'high'"),
    "metric-infinite": (lambda r: r["results"]["safety"]["unsafe_rate"].update(ci_high=float("inf")), "'results.safety.unsafe_rate.ci_high' is inf"),
    "metric-nan": (lambda r: r["results"]["truthfulqa"]["mc1"].update(value=float("nan")), "'results.truthfulqa.mc1.value' is nan"),
    "count-a-string": (lambda r: r["results"]["safety"].update(n_prompts="100"), "'results.safety.n_prompts' is '100'"),
    "seed-not-an-int": (lambda r: r.update(seed="0"), "field 'seed' is '0'"),
    "results-not-an-object": (lambda r: r.update(results=[1, 2]), "field 'results' is not an object"),
    "other-run-id": (lambda r: r.update(run_id="someone-else"), "names run 'someone-else'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_reindex_skips_and_reports_a_record_that_breaks_the_schema(kind, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    good = finished_run(runs_dir, "sft")
    bad = finished_run(runs_dir, "pddpo")
    folder = runs_dir / bad["run_id"]
    damage, words = BAD_RECORDS[kind]
    damage(bad)
    (folder / "results.json").write_text(json.dumps(bad))  # json writes NaN/Infinity as Python reads them
    code, out, err = bench(["runs", "--reindex", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if "skipped" in ln)
    assert folder.name in line and words in line, line
    assert rows_on_disk(runs_dir) == {good["run_id"]: "finished"}
    for _ in range(2):  # later listings (which heal) neither crash nor index it
        code, out, err = bench(["runs", "--runs-dir", str(runs_dir)], capsys)
        assert code == 0 and good["run_id"] in out and folder.name not in out, err
        assert leaderboard_methods(runs_dir, capsys) == ["sft"]
    assert rows_on_disk(runs_dir) == {good["run_id"]: "finished"}


def test_reindex_skips_an_unreadable_folder_instead_of_stopping(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    good = finished_run(runs_dir, "sft")
    bad = finished_run(runs_dir, "pddpo")
    (runs_dir / bad["run_id"] / "results.json").write_text('{"schema_version": "1.1", "run_id": ')  # cut off mid-write
    code, out, err = bench(["runs", "--reindex", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0, err
    assert any(bad["run_id"] in ln and "cannot read" in ln for ln in out.splitlines() if "skipped" in ln), out
    assert rows_on_disk(runs_dir) == {good["run_id"]: "finished"}


def test_a_listing_skips_an_unreadable_folder_with_a_warning(tmp_path, capsys, caplog):
    runs_dir = tmp_path / "runs"
    good = finished_run(runs_dir, "sft")
    assert list_runs(runs_dir)  # the store exists: `bench runs` reads it twice (stale rows, then the listing)
    bad = finished_run(runs_dir, "pddpo")
    (runs_dir / bad["run_id"] / "results.json").write_text('{"schema_version": "1.1", "run_id": ')  # cut off mid-write
    caplog.clear()
    code, out, err = bench(["runs", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0 and good["run_id"] in out and bad["run_id"] not in out, err
    assert "Traceback" not in err, err
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # the bench logger's one warning
    assert bad["run_id"] in warning and "not indexed" in warning and "cannot read" in warning, warning
    assert rows_on_disk(runs_dir) == {good["run_id"]: "finished"}


def test_listing_formats_only_numbers(tmp_path, capsys):
    """A row indexed before the schema check (an older version wrote it) is shown with '-', not a crash."""
    from harness.store import upsert_run

    record = make_record("sft")
    record["results"]["safety"]["reward_mean"]["value"] = "high"
    upsert_run(tmp_path, record["run_id"], method="sft", dataset="pku-saferlhf", model="m", profile="tiny", seed=0, suite=None,
               status="finished", results=record)
    code, out, err = bench(["runs", "--runs-dir", str(tmp_path)], capsys)
    assert code == 0 and record["run_id"] in out, err


# -- a runs dir this process cannot write ----------------------------------------------------------------------------

@pytest.fixture()
def read_only(monkeypatch):
    """Make a runs dir behave as one this process cannot write. Tests run as root, where chmod blocks nothing, so:
    os.access says no, and sqlite refuses to open the store for writing (what a read-only dir with a WAL store gives);
    any file written under the dir fails the test."""
    dirs: list[Path] = []
    real_access, real_connect, real_open = os.access, sqlite3.connect, os.open

    def inside(path) -> bool:
        text = str(path)
        return any(text == str(d) or text.startswith(f"{d}/") or text.startswith(f"file://{d}/") for d in dirs)

    def access(path, mode, *a, **k):
        return False if mode & os.W_OK and inside(path) else real_access(path, mode, *a, **k)

    def connect(database, *a, **k):
        if inside(database) and "mode=ro" not in str(database):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_connect(database, *a, **k)

    def guarded_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied (read-only runs dir)", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(os, "open", guarded_open)
    return lambda d: dirs.append(Path(d).resolve())


def test_listing_and_leaderboard_work_on_a_read_only_runs_dir(tmp_path, read_only, capsys):
    runs_dir = tmp_path / "runs"
    stored = finished_run(runs_dir, "sft")
    assert [r["run_id"] for r in list_runs(runs_dir)] == [stored["run_id"]]  # in the store
    unstored = finished_run(runs_dir, "pddpo", reward=0.3)  # finished after the store was last written
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in runs_dir.rglob("*")}
    read_only(runs_dir)
    code, out, err = bench(["runs", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0, err
    assert stored["run_id"] in out and unstored["run_id"] in out  # the folder the store lacks is listed from memory
    assert leaderboard_methods(runs_dir, capsys) == ["pddpo", "sft"]
    code, _, err = bench(["runs", "--reindex", "--runs-dir", str(runs_dir)], capsys)
    assert code == 2 and "cannot reindex" in err and "read-only" in err and len(err.strip().splitlines()) == 1, err
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in runs_dir.rglob("*")} == before  # nothing written


def test_read_only_runs_dir_without_a_store_lists_its_finished_folders(tmp_path, read_only, capsys):
    runs_dir = tmp_path / "runs"
    record = finished_run(runs_dir, "sft")
    read_only(runs_dir)
    assert [r["run_id"] for r in list_runs(runs_dir)] == [record["run_id"]]
    assert not store_path(runs_dir).exists()
