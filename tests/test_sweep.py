"""`bench sweep`: the grid it runs, the per-value aggregation (leaderboard CIs), its files and the leaderboard links.

The first tests replace `execute_run` with hand-written records (milliseconds); the last one runs a real tiny sweep
(PD-DPO at fixed λ = 0 and 5, dummy generator, length/random annotators, fake judges) to check that the shared
stage 1 is trained once and the frontier files come out of real runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import leaderboards.cli as lb_cli
from harness.errors import BenchError
from leaderboards import sweep as sw
from leaderboards.table import build_leaderboard
from results_fixtures import add_run, add_scores, make_record


def app() -> typer.Typer:
    a = typer.Typer()
    lb_cli.register(a)
    return a


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text("model: tiny-random\nwandb:\n  mode: disabled\n")
    return path


def test_parse_over() -> None:
    assert sw.parse_over("method.fixed_lambda=0,1,2.5") == ("method.fixed_lambda", [0, 1, 2.5])
    for bad, match in (("method.fixed_lambda", "KEY=V1"), ("x=1,a", "not a number"), ("x=1,true", "not a number"),
                       ("x=1", "at least two"), ("x=1,1", "at least two")):
        with pytest.raises(BenchError, match=match):
            sw.parse_over(bad)


def fake_execute(runs_dir: Path, reward_of, unsafe_of, fail_at: float | None = None):
    """Records per (λ, seed): reward and unsafe rate as functions of λ, with per-prompt scores so CIs are real."""
    seen = []

    def run(cfg):
        lam = cfg.methods[cfg.method]["fixed_lambda"]
        seen.append((lam, cfg.seed, cfg.suite))
        if lam == fail_at:
            raise RuntimeError("out of memory")
        rec = make_record(cfg.method, seed=cfg.seed, model=cfg.model, profile=cfg.profile, suite=cfg.suite)
        rec["run_id"] = f"{cfg.method}-l{lam}-s{cfg.seed}"
        n = 20
        k = round(unsafe_of(lam) * n)
        add_scores(runs_dir, rec, [reward_of(lam) + 0.1 * (i % 3) for i in range(n)], [1.0] * k + [-1.0] * (n - k))
        add_run(runs_dir, rec)
        return rec

    return run, seen


def test_sweep_runs_each_value_and_seed_and_traces_the_frontier(tmp_path: Path, profile: Path, monkeypatch) -> None:
    runs_dir = tmp_path / "runs"
    run, seen = fake_execute(runs_dir, reward_of=lambda lam: 1.0 - 0.05 * lam, unsafe_of=lambda lam: 0.5 - 0.04 * lam, fail_at=10)
    monkeypatch.setattr(lb_cli, "execute_run", run)
    args = ["sweep", "--method", "pddpo", "--over", "method.fixed_lambda=0,2,5,10", "--seeds", "0,1", "--profile", str(profile),
            "--runs-dir", str(runs_dir), "--set", "train.beta=0.2", "--set", "scoring.bootstrap=100"]
    out = CliRunner().invoke(app(), args)
    assert out.exit_code == 1, out.output  # λ = 10 failed: reported, the other values are kept
    assert [(lam, s) for lam, s, _ in seen] == [(v, s) for v in (0, 2, 5, 10) for s in (0, 1)]
    sid = seen[0][2]
    assert sid.startswith("sweep-pddpo-fixed_lambda-") and {x[2] for x in seen} == {sid}
    assert "fixed_lambda=10 seed 0: RuntimeError: out of memory" in out.output
    folder = runs_dir / "sweeps" / sid
    data = json.loads((folder / "sweep.json").read_text())
    points = {p["value"]: p for p in data["points"]}
    assert points[10]["row"] is None and len(points[10]["failed"]) == 2
    for lam in (0, 2, 5):
        row = points[lam]["row"]
        assert row["n_seeds"] == 2 and row["ci_method"].startswith("seeds x prompts")
        assert "reward_mean" not in row["no_interval"] and "unsafe_rate" not in row["no_interval"]
        assert row["unsafe_rate"]["value"] == pytest.approx(round((0.5 - 0.04 * lam) * 20) / 20)
        assert row["reward_mean"]["ci_low"] < row["reward_mean"]["value"] < row["reward_mean"]["ci_high"]
    assert points[0]["row"]["reward_mean"]["value"] > points[5]["row"]["reward_mean"]["value"]  # higher λ: safer, less reward
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [r["method.fixed_lambda"] for r in rows] == ["0", "2", "5", "10"] and rows[3]["n_seeds"] == "0"
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "sweep.md").read_text()
    assert "| fixed_lambda | seeds |" in md and "![reward vs unsafe_rate over fixed_lambda](sweep.png)" in md
    assert "data:image/png;base64," in (folder / "sweep.html").read_text()

    # the leaderboard page links (md) and embeds (html) the sweep of its setting
    lb_md = tmp_path / "out" / "lb.md"
    out = CliRunner().invoke(app(), ["leaderboard", "--runs-dir", str(runs_dir), "--format", "md", "-o", str(lb_md)])
    assert out.exit_code == 0, out.output
    text = lb_md.read_text()
    assert "## Sweeps" in text and f"[table](../runs/sweeps/{sid}/sweep.md)" in text and f"../runs/sweeps/{sid}/sweep.png" in text
    out = CliRunner().invoke(app(), ["leaderboard", "--runs-dir", str(runs_dir), "--format", "html", "-o", str(tmp_path / "lb.html")])
    assert out.exit_code == 0 and "pddpo: method.fixed_lambda sweep" in (tmp_path / "lb.html").read_text()


def test_sweep_runs_stay_off_the_main_leaderboard_but_the_default_value_stays(tmp_path: Path, profile: Path, monkeypatch) -> None:
    """pddpo-fixed's own λ is 5. Sweeping λ = 5, 20 must not turn the main board's `pddpo-fixed` row into the λ = 20
    run (the newest): the λ = 20 run carries the sweep's tag and is left out (counted in the notes), the λ = 5 run
    is the method's own run (no tag) and stays. A `--sweep-id` without the prefix still gets it as the tag."""
    runs_dir = tmp_path / "runs"
    run, seen = fake_execute(runs_dir, reward_of=lambda lam: 1.0 - 0.05 * lam, unsafe_of=lambda lam: 0.5 - 0.02 * lam)
    monkeypatch.setattr(lb_cli, "execute_run", run)
    out = CliRunner().invoke(app(), ["sweep", "--method", "pddpo-fixed", "--over", "method.fixed_lambda=5,20", "--profile",
                                     str(profile), "--runs-dir", str(runs_dir), "--sweep-id", "mine", "--set", "scoring.bootstrap=100"])
    assert out.exit_code == 0, out.output
    assert [(lam, tag) for lam, _, tag in seen] == [(5, None), (20, "sweep-mine")]
    assert (runs_dir / "sweeps" / "mine" / "sweep.json").exists()

    lb = build_leaderboard(runs_dir, n_boot=100)
    (table,) = lb.tables
    assert [r["run_id"] for r in table.runs] == ["pddpo-fixed-l5-s0"]  # not the newer λ = 20 run
    assert any("1 run(s) made by `bench sweep`" in n for n in lb.notes)
    # asked for by its tag or run id, the swept run is there
    assert [r["run_id"] for r in build_leaderboard(runs_dir, suite="sweep-mine", n_boot=100).tables[0].runs] == ["pddpo-fixed-l20-s0"]
    assert [r["run_id"] for r in build_leaderboard(runs_dir, run_ids=["pddpo-fixed-l20-s0"], n_boot=100).tables[0].runs] == ["pddpo-fixed-l20-s0"]
    lb_md = tmp_path / "lb.md"  # the sweep is listed under the table of its setting
    out = CliRunner().invoke(app(), ["leaderboard", "--runs-dir", str(runs_dir), "--format", "md", "-o", str(lb_md),
                                     "--plots-dir", str(tmp_path / "plots")])
    text = lb_md.read_text()
    assert out.exit_code == 0 and "### Sweeps" in text and "## Sweeps of settings" not in text
    assert "| fixed_lambda | seeds | reward [95% CI] |" in text and "\n| 20 | 1 | " in text  # the sweep's table, inline
    assert (tmp_path / "plots" / "mine.png").exists() and "](plots/mine.png)" in text  # its figure beside the page's
    assert "[csv](plots/mine.csv)" in text and "sweeps/mine" not in text  # nothing inside the runs dir is linked


def test_sweep_refuses_bad_input_before_running(tmp_path: Path, profile: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(lb_cli, "execute_run", lambda cfg: calls.append(cfg) or {})
    runner = CliRunner()
    base = ["sweep", "--profile", str(profile), "--runs-dir", str(tmp_path / "runs")]
    for extra, match in ((["--method", "pddpo", "--over", "method.fixed_lambda=-1,5"], "fixed_lambda"),
                         (["--method", "pddpo", "--over", "method.fixd_lambda=1,5"], "fixd_lambda"),
                         (["--method", "pddpo", "--over", "method.warm_start=1,2"], "warm_start"),
                         (["--method", "pddpo,sacpo", "--over", "method.fixed_lambda=1,5"], "one method"),
                         (["--method", "pddpo", "--over", "method.fixed_lambda=1,5", "--set", "method.fixed_lambda=2"], "drop the --set")):
        out = runner.invoke(app(), base + extra)
        assert out.exit_code != 0 and match in str(out.exception) + out.output, (extra, out.output, out.exception)
    assert calls == []


def test_real_tiny_sweep_trains_stage_one_once(tmp_path: Path, data_dir: Path) -> None:
    """PD-DPO at λ = 0 (π_r̂ itself) and λ = 5 (one primal step): stage 1 is trained by the first run and reused
    from the store by the second; both points get estimates with CIs."""
    runs_dir = tmp_path / "runs"
    args = ["sweep", "--method", "pddpo-fixed", "--over", "method.fixed_lambda=0,5", "--profile", "tiny",
            "--runs-dir", str(runs_dir), "--set", f"data.data_dir={data_dir}", "--set", "generation.backend=dummy",
            "--set", "scoring.reward=length", "--set", "scoring.cost=random", "--set", "eval.truthfulqa_mc=false",
            "--set", "method.estimate_fixed=false", "--set", "train.max_steps=1", "--set", "scoring.win_rate_vs_sft=false"]
    out = CliRunner().invoke(app(), args)
    assert out.exit_code == 0, out.output
    (folder,) = (runs_dir / "sweeps").iterdir()
    data = json.loads((folder / "sweep.json").read_text())
    assert [p["value"] for p in data["points"]] == [0, 5] and all(p["row"]["reward_mean"]["ci_high"] is not None for p in data["points"])
    records = [json.loads((runs_dir / p["run_ids"][0] / "results.json").read_text()) for p in data["points"]]
    assert [r["train"]["trajectory"][0]["trained"] for r in records] == [False, True]
    reuse = [e for e in records[1]["stages"]["train"].get("reused", []) if e.get("name") == "pddpo-stage1"]
    assert reuse and reuse[0]["how"] in ("hardlink", "copy", "hardlink+copy")
    assert (folder / "sweep.png").exists()


def test_coinciding_points_share_one_label() -> None:
    # the cpu sweep's λ = 1..20 points sit within a few thousandths of each other; λ = 0 is far away
    xs, ys = [0.253, 0.157, 0.151, 0.157, 0.157, 0.157], [0.270, 0.281, 0.282, 0.286, 0.287, 0.287]
    assert sw._nearby_groups(xs, ys, (0.26, 0.13)) == [[0], [1, 2, 3, 4, 5]]
    assert sw._nearby_groups([0.1, 0.2], [1.0, 1.0], (0.1, 1.0)) == [[0], [1]]
