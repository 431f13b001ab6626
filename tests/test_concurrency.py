"""Several processes on one runs dir and store; the run lock; store rebuild; resume rules; determinism; crash safety.

Runs here use the tiny profile with the `dummy` generator and the length/random scorers: the stage, lock and store
machinery is real, the model work is skipped (tests/test_runs.py covers the real stages).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import runs
from harness.store import list_runs, reconcile, reindex, run_lock

REPO = Path(__file__).resolve().parent.parent
FAST = ["--set", "generation.backend=dummy", "--set", "scoring.reward=length", "--set", "scoring.cost=random",
        "--set", "eval.truthfulqa_mc=false", "--wandb", "disabled"]
LEADERBOARD_TIMEOUT_S = 60  # a reader must never block longer than this while runs write


def bench(*args: str, runs_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args, "--runs-dir", str(runs_dir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_four_runs_and_a_reader_share_one_store_and_one_run_id_trains_once(tmp_path, data_dir):
    """Seeds 0-3 plus a second process asking for seed 0 (the same run id), while `bench leaderboard` reads in a loop:
    no row lost, nothing corrupted, the duplicate waits for the lock and returns the first one's record."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()  # `bench leaderboard` refuses a runs dir that does not exist (yet)
    procs = [bench("run", "--profile", "tiny", "--seed", str(s), *FAST, runs_dir=runs_dir) for s in (0, 1, 2, 3, 0)]
    reads, t0 = 0, time.time()
    while any(p.poll() is None for p in procs):
        t = time.time()
        out = subprocess.run([sys.executable, "-m", "harness.cli", "leaderboard", "--runs-dir", str(runs_dir), "--format", "csv"],
                             cwd=REPO, capture_output=True, text=True, timeout=LEADERBOARD_TIMEOUT_S)
        assert out.returncode == 0, out.stdout + out.stderr
        assert time.time() - t < LEADERBOARD_TIMEOUT_S
        reads += 1
        time.sleep(2)  # a reader polling every few seconds, not a CPU hog competing with the runs
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert reads >= 1
    rows = list_runs(runs_dir)
    assert sorted(r["seed"] for r in rows) == [0, 1, 2, 3] and all(r["status"] == "finished" for r in rows)
    con = sqlite3.connect(runs_dir / "bench.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    seed0 = [outs[0], outs[4]]
    trained = [o for o in seed0 if re.search(r"\btrain\s+(running|done in)", o)]  # the stage line of a stage that ran
    assert len(trained) == 1, seed0  # the run lock: one process trained seed 0, the other reused its record
    for r in rows:
        rec = json.loads((runs_dir / r["run_id"] / "results.json").read_text())
        assert rec == r["results"]


def test_run_lock_is_exclusive_and_released_by_a_killed_process(tmp_path):
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from harness.store import run_lock\n"
                             f"with run_lock({str(tmp_path)!r}, 'r1'):\n    print('held', flush=True); time.sleep(60)"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert held.stdout.readline().strip() == "held"
    from harness.store import is_running

    assert is_running(tmp_path, "r1")
    waited = []
    held.kill()  # kill -9: the kernel drops the flock
    held.wait()
    with run_lock(tmp_path, "r1", on_wait=waited.append):
        assert not waited or waited  # acquired (possibly after a wait)
    assert not is_running(tmp_path, "r1")


def test_reindex_rebuilds_a_lost_or_damaged_store_and_dead_runs_stop_running(tmp_path, tiny_cfg):
    cfg = tiny_cfg("sft", overrides=[a for a in FAST if "=" in a])
    rec = runs.run(cfg)
    # a second run that died before its first stage finished, without a chance to update its row
    dead = Path(cfg.runs_dir) / "sft-pku-saferlhf-tiny-s9-dead000000"
    dead.mkdir()
    (dead / "config.yaml").write_text((Path(cfg.runs_dir) / rec["run_id"] / "config.yaml").read_text().replace("seed: 0", "seed: 9"))
    from harness.store import upsert_run

    upsert_run(cfg.runs_dir, dead.name, method="sft", dataset="pku-saferlhf", model="tiny-random", profile="tiny", seed=9, suite=None,
               status="running")
    assert reconcile(cfg.runs_dir) == 1
    assert {r["run_id"]: r["status"] for r in list_runs(cfg.runs_dir)}[dead.name] == "interrupted"
    store = Path(cfg.runs_dir) / "bench.sqlite"
    store.write_bytes(b"garbage" * 50)  # damaged
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    counts = reindex(cfg.runs_dir)
    assert counts == {"runs": 2, "finished": 1, "damaged_store_kept": 1, "skipped": []}
    rows = {r["run_id"]: r for r in list_runs(cfg.runs_dir)}
    assert rows[rec["run_id"]]["status"] == "finished" and rows[rec["run_id"]]["results"] == rec
    assert rows[dead.name]["status"] == "interrupted"
    assert list(Path(cfg.runs_dir).glob("bench.sqlite.damaged-*"))


def test_resume_applies_runs_dir_and_refuses_changes(tmp_path, tiny_cfg, capsys):
    from harness.cli import resume_config
    from harness.errors import BenchError

    cfg = tiny_cfg("sft")
    rid = runs.run_id(cfg)
    (Path(cfg.runs_dir) / rid).mkdir(parents=True)
    (Path(cfg.runs_dir) / rid / "config.yaml").write_text(runs.dump_yaml(cfg))
    moved = tmp_path / "moved"
    os.rename(cfg.runs_dir, moved)
    got = resume_config(moved, rid, None, None, {"method": "sft", "seed": 0}, "offline")  # same values: fine
    assert got.runs_dir == str(moved) and got.wandb.mode == "offline" and runs.run_id(got) == rid
    with pytest.raises(BenchError, match="--method would change it"):
        resume_config(moved, rid, None, None, {"method": "dpo-helpful"}, None)
    with pytest.raises(BenchError, match="--set would change it"):
        resume_config(moved, rid, None, ["train.learning_rate=0.5"], {}, None)
    assert runs.run_id(resume_config(moved, rid, None, [f"train.learning_rate={cfg.train.learning_rate}"], {}, None)) == rid


def test_same_seed_gives_identical_metrics(tiny_cfg, tmp_path):
    """Two tiny runs with the same seed (training, real generation without the cache, scoring, MC): identical metrics."""
    over = ["generation.cache=false", "scoring.reward=length", "scoring.cost=random", "eval.mc_max_questions=2"]
    ca, cb = tiny_cfg("dpo-helpful", overrides=over), tiny_cfg("dpo-helpful", overrides=over)
    ca.runs_dir, cb.runs_dir = str(tmp_path / "a"), str(tmp_path / "b")
    a, b = runs.run(ca), runs.run(cb)
    assert a["run_id"] == b["run_id"] and a["stages"]["generate"]["cache_hit"] is False
    assert a["results"] == b["results"]
    ga = (tmp_path / "a" / a["run_id"] / "generate" / "generations.json").read_text()
    assert ga == (tmp_path / "b" / b["run_id"] / "generate" / "generations.json").read_text()


def test_chaos_three_kills(tmp_path):
    """The CI-sized chaos run: 3 random SIGKILLs of a tiny suite, each resumed and compared byte for byte."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "chaos.sh"), "3", "--work", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PY": sys.executable})
    assert out.returncode == 0 and "3/3 identical" in out.stdout, out.stdout + out.stderr
