"""Leaderboards: aggregation and ordering over a hand-built store, exports, W&B offline logging, `bench suite`."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.errors import BenchError
from leaderboards import cli as lb_cli
from leaderboards import render
from leaderboards.plots import frontier_figure, lambda_figure, save_png
from leaderboards.table import aggregate, build_leaderboard, constraint_status, pareto_front
from leaderboards.wandb_tracker import WandbTracker
from results_fixtures import add_items, add_run, add_scores, est, make_record


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A store with four methods (pddpo with three seeds and λ trajectories) and one failed run."""
    d = tmp_path / "runs"
    add_run(d, make_record("sft", reward=0.0, cost=0.5, unsafe=0.40))
    for s in (0, 1, 2):
        traj = [{"iteration": i, "lambda": 1.0 + 0.3 * i, "cost_estimate": 0.4 - 0.1 * i} for i in (1, 2, 3)]
        record = make_record("pddpo", seed=s, reward=0.30 + 0.05 * s, cost=-0.2, unsafe=0.15 + 0.02 * s,
                             models_trained=2, trajectory=traj, peak_rss_mb=1000.0 + s, wall_s=10.0 * (s + 1))
        n_unsafe = 15 + 2 * s  # of 100 prompts
        add_items(d, record, {"reward_mean": [0.30 + 0.05 * s + 0.1 * (-1) ** i for i in range(100)],
                              "unsafe_rate": [1.0] * n_unsafe + [0.0] * (100 - n_unsafe),
                              "win_reward": [1.0] * 60 + [0.0] * 40, "mc1": [1.0, 0.0, 0.0, 0.0] * 25})
        add_run(d, record)
    add_run(d, make_record("dpo-helpful", reward=0.6, cost=0.9, unsafe=0.50))
    add_run(d, make_record("dpo-harmless", reward=-0.2, cost=-0.8, unsafe=0.05))
    add_run(d, make_record("safe-rlhf"), status="failed")
    return d


def app() -> typer.Typer:
    a = typer.Typer()
    lb_cli.register(a)
    return a


# -- aggregation and ordering ------------------------------------------------------------------------------------

def test_ordering_rule_constraint_first_then_reward(runs: Path) -> None:
    lb = build_leaderboard(runs)
    (table,) = lb.tables
    assert [r["method"] for r in table.rows] == ["dpo-harmless", "pddpo", "dpo-helpful", "sft"]
    assert [r["constraint"] for r in table.rows] == ["holds", "mean-only", "violated", "violated"]
    assert [r["rank"] for r in table.rows] == [1, 2, 3, 4]
    # dpo-helpful has the highest reward but violates the constraint; it still ranks above sft on reward
    assert table.rows[2]["reward_mean"]["value"] > table.rows[3]["reward_mean"]["value"]
    assert (table.threshold, table.units) == (0.2, "unsafe_rate")
    assert "safe-rlhf" in " ".join(lb.notes) and "failed" in " ".join(lb.notes)


def test_constraint_in_mean_cost_units_uses_cost(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    add_run(d, make_record("a", reward=1.0, cost=0.5, unsafe=0.0, threshold=0.0, units="mean_cost"))
    add_run(d, make_record("b", reward=0.1, cost=-0.5, unsafe=0.9, threshold=0.0, units="mean_cost"))
    (table,) = build_leaderboard(d).tables
    assert table.x_metric == "cost_mean"
    assert [(r["method"], r["constraint"]) for r in table.rows] == [("b", "holds"), ("a", "violated")]


def test_constraint_status_tiers() -> None:
    assert constraint_status(est(0.10, 0.05), 0.2) == "holds"
    assert constraint_status(est(0.18, 0.05), 0.2) == "mean-only"
    assert constraint_status(est(0.25, 0.01), 0.2) == "violated"
    assert constraint_status(None, 0.2) == "n/a"
    assert constraint_status(est(0.1), None) == "n/a"


def test_pareto_front_on_hand_data() -> None:
    # (reward, cost): higher reward and lower cost are better
    points = [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5), (1.0, 2.0), (0.4, 0.6), (None, 0.0), (2.0, 2.0)]
    # (1,2) is dominated by (2,2); (0.4,0.6) by (0.5,0.5); a missing coordinate is never on the front;
    # two identical points do not dominate each other
    assert pareto_front(points) == [0, 1, 2, 6]
    assert pareto_front([]) == []


def test_pareto_column_matches_front(runs: Path) -> None:
    (table,) = build_leaderboard(runs).tables
    on_front = {r["method"] for r in table.rows if r["pareto"]}
    assert on_front == {"dpo-harmless", "pddpo", "dpo-helpful"}  # sft: lower reward and higher unsafe rate than pddpo


def test_newest_finished_run_per_seed_counts(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    old = make_record("pddpo", reward=0.1)
    add_run(d, old)
    new = make_record("pddpo", reward=0.9)
    new["run_id"] = "pddpo-newer"
    add_run(d, new)
    failed = make_record("pddpo", reward=-5.0)
    failed["run_id"] = "pddpo-newest-failed"
    add_run(d, failed, status="failed")
    lb = build_leaderboard(d)
    (row,) = lb.rows
    assert row["run_ids"] == ["pddpo-newer"] and row["reward_mean"]["value"] == 0.9 and row["n_seeds"] == 1
    assert lb.notes == []  # the failed run's key has a finished run, so nothing is missing


def test_one_seed_keeps_the_recorded_interval() -> None:
    e = {"value": 0.3, "ci_low": 0.1, "ci_high": 0.45}
    assert aggregate([e]) == e


def test_seeds_without_per_item_values_get_no_interval() -> None:
    """No normal approximation: without per-item values an interval over seeds is not known, so none is shown."""
    agg = aggregate([est(0.2, 0.0), est(0.4, 0.0), est(0.6, 0.0)])
    assert agg == {"value": pytest.approx(0.4), "ci_low": None, "ci_high": None}
    assert aggregate([None, {"value": None}]) is None


def test_every_declared_metric_pools_seeds_per_item(tmp_path: Path) -> None:
    """items.json carries win and MC per-item values: their intervals are seeds x items bootstraps, and three
    identical seeds are exactly as precise as one (all seeds see the same items)."""
    d = tmp_path / "runs"
    win = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.5]
    mc1 = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    for seed in (0, 1, 2):
        record = make_record("pddpo", seed=seed)
        add_items(d, record, {"win_reward": win, "mc1": mc1, "reward_mean": [0.1 * seed + x for x in (0.0, 1.0, 2.0, 3.0)]})
        add_run(d, record)
    bad = make_record("pddpo", seed=3)  # per-item values that do not reproduce the record are never used
    add_items(d, bad, {"win_reward": win, "mc1": mc1})
    bad["results"]["truthfulqa"]["mc1"]["value"] = 0.9
    add_run(d, bad)
    (row,) = build_leaderboard(d, seeds=[0, 1, 2]).rows
    assert row["win_reward"]["value"] == pytest.approx(sum(win) / len(win)) and row["mc1"]["value"] == pytest.approx(1 / 3)
    assert 0.0 <= row["mc1"]["ci_low"] < 1 / 3 < row["mc1"]["ci_high"] <= 1.0
    assert row["reward_mean"]["value"] == pytest.approx(1.6)
    assert row["ci_method"] == "seeds x prompts (partial)" and "win_reward" not in row["no_interval"]
    assert set(row["no_interval"]) == {"cost_mean", "unsafe_rate", "unsafe_rate_corrected", "win_cost", "mc2", "refusal_rate",
                                       "reward_lc"}  # no items saved for these
    (row4,) = build_leaderboard(d).rows
    assert "mc1" in row4["no_interval"] and row4["mc1"]["ci_low"] is None


def test_rows_use_per_prompt_scores_when_run_folders_have_them(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for seed, rewards in enumerate(([1.0, 0.0, 2.0, 1.0], [1.5, 0.5, 2.5, 1.5])):
        record = make_record("pddpo", seed=seed)
        add_scores(d, record, rewards, [-1.0, 1.0, -1.0, -1.0])
        add_run(d, record)
    for seed in (0, 1):  # sacpo: records only, no run folders
        add_run(d, make_record("sacpo", seed=seed, reward=0.2 * seed))
    (table,) = build_leaderboard(d).tables
    rows = {r["method"]: r for r in table.rows}
    assert rows["pddpo"]["ci_method"] == rows["sacpo"]["ci_method"] == "seeds x prompts (partial)"
    assert set(rows["pddpo"]["no_interval"]) == {"win_reward", "win_cost", "mc1", "mc2", "reward_lc", "refusal_rate"}  # not in scores.json
    assert rows["sacpo"]["reward_mean"]["ci_low"] is None and rows["sacpo"]["reward_mean"]["value"] == pytest.approx(0.1)
    assert rows["pddpo"]["reward_mean"]["value"] == pytest.approx(1.25)
    assert rows["pddpo"]["unsafe_rate"]["value"] == pytest.approx(0.25)
    lo, hi = rows["pddpo"]["unsafe_rate"]["ci_low"], rows["pddpo"]["unsafe_rate"]["ci_high"]
    assert lo == 0.0 and 0.5 <= hi <= 0.75  # one unsafe prompt in four, shared by both seeds
    assert any(n.startswith("pddpo: no interval over seeds for reward_lc, refusal_rate, win_reward, win_cost, mc1, mc2") for n in table.notes)
    assert any(n.startswith("sacpo: no interval over seeds for reward_mean, reward_lc, cost_mean, unsafe_rate") for n in table.notes)


def test_resources_seeds_and_truthfulqa(runs: Path) -> None:
    (table,) = build_leaderboard(runs).tables
    row = next(r for r in table.rows if r["method"] == "pddpo")
    assert row["n_seeds"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["models_trained"] == 2
    assert row["peak_rss_mb"] == 1002.0  # max over stages and seeds
    assert row["peak_cuda_mb"] is None  # CPU runs record no CUDA memory
    assert row["wall_s"] == pytest.approx((13.5 + 23.5 + 33.5) / 3)  # stage sum, mean over seeds
    assert row["mc1"]["value"] == pytest.approx(0.25) and row["mc2"]["value"] == pytest.approx(0.4)
    assert row["win_reward"]["value"] == pytest.approx(0.6)
    assert next(r for r in table.rows if r["method"] == "sft")["win_reward"] is None


def test_settings_and_filters(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    add_run(d, make_record("sft"))
    other_eval = make_record("pddpo")
    other_eval["generation"]["eval_set"] = "redteam-83"
    add_run(d, other_eval)
    other_model = make_record("sft", model="smollm2-135m-instruct")
    other_model["run_id"] = "sft-smollm"
    add_run(d, other_model)
    lb = build_leaderboard(d)
    assert [(t.model, len(t.rows)) for t in lb.tables] == [("smollm2-135m-instruct", 1), ("tiny-random", 2)]
    assert any("eval set" in n for n in lb.tables[1].notes)
    assert [t.model for t in build_leaderboard(d, model="tiny-random").tables] == ["tiny-random"]
    assert build_leaderboard(d, methods=["pddpo"]).rows[0]["method"] == "pddpo"
    assert build_leaderboard(d, seeds=[7]).tables == []
    assert build_leaderboard(tmp_path / "empty").tables == []


# -- exports -------------------------------------------------------------------------------------------------------

def test_markdown_export(runs: Path) -> None:
    md = render.render(build_leaderboard(runs), "md")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| # |"))
    assert "Reward" in header and "Unsafe" in header and "MC1" in header
    assert "Peak CUDA MB" not in header  # empty on CPU runs: hidden
    row = next(line for line in lines if "| pddpo |" in line)
    assert row.startswith("| 2 | pddpo | 3 | mean-only | 0.350 [")
    assert "Constraint: unsafe rate ≤ b = 0.2" in md


def test_csv_export_keeps_values_and_intervals(runs: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(render.render(build_leaderboard(runs), "csv"))))
    assert [r["method"] for r in rows] == ["dpo-harmless", "pddpo", "dpo-helpful", "sft"]
    helpful = rows[2]
    assert float(helpful["reward_mean"]) == 0.6
    assert float(helpful["reward_mean_ci_low"]) == pytest.approx(0.55)
    assert float(helpful["unsafe_rate_ci_high"]) == pytest.approx(0.55)
    assert helpful["constraint"] == "violated" and helpful["dataset"] == "pku-saferlhf"
    assert rows[3]["win_reward"] == ""  # sft has no win rate against itself
    assert "peak_cuda_mb" in rows[0]  # the CSV keeps every column


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.cells: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_td = tag == "td"
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def test_html_is_one_self_contained_page(runs: Path, tmp_path: Path) -> None:
    path = render.write(build_leaderboard(runs), "html", tmp_path / "lb.html")
    parser = _Collect()
    parser.feed(path.read_text())
    assert parser.tags.count("table") >= 2 and "th" in parser.tags  # leaderboard + its runs
    assert {"dpo-harmless", "pddpo", "dpo-helpful", "sft", "mean-only"} <= set(parser.cells)
    assert len(parser.images) == 2  # frontier + λ trajectories
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in path.read_text().replace("http-equiv", "")  # nothing fetched from elsewhere


def test_figures(runs: Path, tmp_path: Path) -> None:
    (table,) = build_leaderboard(runs).tables
    png = save_png(frontier_figure(table), tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert len(lambda_figure(table).axes) == 2  # λ and the dual's cost estimate
    table.rows = []
    table.runs = [r for r in table.runs if r["method"] != "pddpo"]
    assert frontier_figure(table) is None and lambda_figure(table) is None


def test_leaderboard_command_formats(runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(runs), "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("dataset,model,profile,rank,method")
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(runs), "--format", "md", "-o", str(tmp_path / "x.md"),
                                "--plots-dir", str(tmp_path / "plots")])
    assert out.exit_code == 0, out.output
    assert "| pddpo |" in (tmp_path / "x.md").read_text()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "pku-saferlhf_tiny-random_tiny_frontier.png", "pku-saferlhf_tiny-random_tiny_lambda.png"]
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(runs)])
    assert out.exit_code == 0 and "dpo-harmless" in out.output
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(runs), "--format", "xls"])
    assert isinstance(out.exception, BenchError)


# -- W&B -------------------------------------------------------------------------------------------------------------

@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def test_leaderboard_logged_as_wandb_table_offline(runs: Path, wandb_offline: Path) -> None:
    out = CliRunner().invoke(app(), ["leaderboard", "--runs-dir", str(runs), "--format", "csv", "--wandb", "offline"])
    assert out.exit_code == 0, out.output
    (table_file,) = wandb_offline.glob("wandb/offline-run-*/files/media/table/leaderboard_*.table.json")
    logged = json.loads(table_file.read_text())
    columns, rows = build_leaderboard(runs).flat()
    assert logged["columns"] == columns
    assert [r[columns.index("method")] for r in logged["data"]] == ["dpo-harmless", "pddpo", "dpo-helpful", "sft"]
    assert logged["data"][1][columns.index("reward_mean")] == pytest.approx(rows[1][columns.index("reward_mean")])


def test_tracker_summary_and_artifact_offline(wandb_offline: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("{}")
    tracker = WandbTracker(run_name="t", group="g", job_type="test", config={"seed": 0}, dir=wandb_offline)
    tracker.log_metrics({"loss": 1.0}, step=0)
    tracker.set_summary("reward", 0.5)
    tracker.log_artifact("results run/1", str(results))
    assert tracker.run.summary["reward"] == 0.5  # offline runs write no summary file: check before finish
    tracker.finish()
    assert tracker.errors == [] and tracker.run is None


def test_tracker_logs_a_results_record_from_the_declarations(wandb_offline: Path) -> None:
    """The run's record reaches W&B through the tracker's own `log_results` (harness.runs never imports leaderboards)."""
    record = make_record("pddpo", reward=0.25, trajectory=[{"iteration": 1, "lambda": 2.0}])
    tracker = WandbTracker(run_name="r", dir=wandb_offline)
    tracker.log_results(record)
    summary = tracker.run.summary
    assert summary["eval/reward_mean"] == 0.25 and summary["eval/win_reward"] == 0.6 and summary["eval/mc2"] == 0.4
    assert summary["stages/train/wall_s"] == 10.0 and "eval/response_length" not in summary.keys()  # undeclared: not logged
    tracker.finish()
    assert tracker.errors == []


def test_wandb_failure_never_loses_local_results(runs: Path, wandb_offline: Path, monkeypatch) -> None:
    import wandb

    def broken_init(**_):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    out_file = wandb_offline / "lb.html"
    out = CliRunner().invoke(app(), ["leaderboard", "--runs-dir", str(runs), "--format", "html", "-o", str(out_file),
                                     "--wandb", "offline"])
    assert out.exit_code == 0, out.output
    assert "<table>" in out_file.read_text()
    tracker = WandbTracker(run_name="x")  # every later call is a no-op, never an exception
    tracker.log_table("t", ["a"], [[1]])
    tracker.finish()
    assert len(tracker.errors) == 1 and "no network" in tracker.errors[0]


def test_wandb_error_after_init_is_a_warning(wandb_offline: Path, monkeypatch, caplog) -> None:
    import wandb

    tracker = WandbTracker(run_name="y", dir=wandb_offline)
    monkeypatch.setattr(wandb, "Table", lambda **_: (_ for _ in ()).throw(ValueError("bad table")))
    with caplog.at_level("WARNING"):
        tracker.log_table("t", ["a"], [[1]])
    tracker.finish()
    assert "bad table" in caplog.text and len(tracker.errors) == 1


# -- bench suite -------------------------------------------------------------------------------------------------------

@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A profile file, so these tests do not depend on configs/*.yaml."""
    path = tmp_path / "unit.yaml"
    path.write_text("model: tiny-random\nwandb:\n  mode: disabled\n")
    return path


def test_suite_runs_the_grid_and_survives_a_failure(tmp_path: Path, profile: Path, monkeypatch) -> None:
    runs_dir = tmp_path / "runs"
    seen = []

    def fake_run(cfg):
        seen.append((cfg.method, cfg.seed, cfg.suite, cfg.runs_dir, cfg.train.beta))
        if cfg.method == "dpo-helpful":
            raise RuntimeError("CUDA out of memory")
        record = make_record(cfg.method, seed=cfg.seed, model=cfg.model, profile=cfg.profile, suite=cfg.suite,
                             reward={"sft": 0.0, "pddpo": 0.3}[cfg.method], unsafe=0.1)
        add_run(cfg.runs_dir, record)
        return record

    monkeypatch.setattr(lb_cli, "execute_run", fake_run)
    args = ["suite", "--methods", "sft,dpo-helpful,pddpo", "--seeds", "0,1", "--profile", str(profile),
            "--runs-dir", str(runs_dir), "--set", "train.beta=0.3"]
    out = CliRunner().invoke(app(), args)
    assert out.exit_code == 1, out.output  # a failed run makes the suite fail, after the whole grid ran
    suite_id = seen[0][2]
    assert suite_id.startswith("suite-pku-saferlhf-unit-")
    assert [(m, s) for m, s, *_ in seen] == [("sft", 0), ("sft", 1), ("dpo-helpful", 0), ("dpo-helpful", 1),
                                              ("pddpo", 0), ("pddpo", 1)]
    assert {(sid, rd, beta) for _, _, sid, rd, beta in seen} == {(suite_id, str(runs_dir), 0.3)}
    assert "dpo-helpful seed 0: RuntimeError: CUDA out of memory" in out.output
    suite_dir = runs_dir / "suites" / suite_id
    summary = json.loads((suite_dir / "suite.json").read_text())
    assert [o["status"] for o in summary["runs"]].count("failed") == 2
    assert "CUDA out of memory" in (suite_dir / "errors.log").read_text()
    rows = list(csv.DictReader((suite_dir / "leaderboard.csv").open()))
    assert [(r["method"], r["n_seeds"]) for r in rows] == [("pddpo", "2"), ("sft", "2")]
    assert (suite_dir / "leaderboard.html").exists() and (suite_dir / "leaderboard.md").exists()

    # rerunning the same grid gives the same suite id (one W&B group; runs.run resumes finished stages)
    rerun = []
    monkeypatch.setattr(lb_cli, "execute_run", lambda cfg: rerun.append(cfg.suite) or {})
    out = CliRunner().invoke(app(), args)
    assert out.exit_code == 0, out.output
    assert rerun == [suite_id] * 6


def test_suite_ranks_exactly_its_own_runs(tmp_path: Path, profile: Path, monkeypatch) -> None:
    """A newer finished run of the same (method, seed) under other overrides must not replace the suite's run."""
    runs_dir = tmp_path / "runs"
    ours = make_record("sft", reward=0.1, profile="unit")
    other = make_record("sft", reward=0.9, profile="unit")
    other["run_id"] = "sft-other-overrides"
    add_run(runs_dir, ours)
    add_run(runs_dir, other)  # newer
    monkeypatch.setattr(lb_cli, "execute_run", lambda cfg: ours)  # finished earlier: runs.run returns it as is
    out = CliRunner().invoke(app(), ["suite", "--methods", "sft", "--profile", str(profile), "--runs-dir", str(runs_dir),
                                     "--suite-id", "s"])
    assert out.exit_code == 0, out.output
    (row,) = csv.DictReader((runs_dir / "suites" / "s" / "leaderboard.csv").open())
    assert float(row["reward_mean"]) == 0.1


def test_suite_logs_its_leaderboard_to_wandb(tmp_path: Path, profile: Path, wandb_offline: Path, monkeypatch) -> None:
    def fake_run(cfg):
        assert cfg.wandb.mode == "offline"  # --wandb reaches every run's config
        record = make_record(cfg.method, seed=cfg.seed, model=cfg.model, profile=cfg.profile)
        add_run(cfg.runs_dir, record)
        return record

    monkeypatch.setattr(lb_cli, "execute_run", fake_run)
    out = CliRunner().invoke(app(), ["suite", "--methods", "sft,pddpo", "--profile", str(profile), "--wandb", "offline",
                                     "--runs-dir", str(tmp_path / "runs"), "--suite-id", "my-suite"])
    assert out.exit_code == 0, out.output
    (table_file,) = wandb_offline.glob("wandb/offline-run-*/files/media/table/leaderboard_*.table.json")
    assert {r[4] for r in json.loads(table_file.read_text())["data"]} == {"sft", "pddpo"}


def test_suite_argument_errors(tmp_path: Path, profile: Path, monkeypatch) -> None:
    from harness.registries import METHODS

    calls = []
    monkeypatch.setattr(lb_cli, "execute_run", lambda cfg: calls.append(cfg.method) or {})
    runner = CliRunner()
    out = runner.invoke(app(), ["suite", "--methods", "pddpo,sacp", "--profile", str(profile)])
    assert isinstance(out.exception, BenchError) and "did you mean 'sacpo'" in str(out.exception)
    out = runner.invoke(app(), ["suite", "--methods", "sft", "--seeds", "0,x", "--profile", str(profile)])
    assert isinstance(out.exception, BenchError)
    out = runner.invoke(app(), ["suite", "--methods", "sft", "--set", "train.learnin_rate=1", "--profile", str(profile)])
    assert isinstance(out.exception, BenchError)  # refused before anything ran
    assert calls == []
    assert lb_cli.parse_methods("all") == METHODS.names()


# -- tie-breaks ---------------------------------------------------------------------------------------------------

def test_ties_break_on_the_constraint_metric_then_the_method_name(tmp_path: Path) -> None:
    """Same tier and reward: the lower constraint metric ranks first; same metric too: the method name decides.
    The store is filled in an order that differs from the expected ranking, so insertion order cannot pass."""
    d = tmp_path / "runs"
    for name, reward, unsafe in (("zeta", 0.5, 0.05), ("beta", 0.5, 0.05), ("alpha", 0.5, 0.10), ("gamma", 0.7, 0.15),
                                 ("delta", 0.5, 0.02)):
        add_run(d, make_record(name, reward=reward, cost=0.0, unsafe=unsafe, half_width=0.02, threshold=0.2))
    (table,) = build_leaderboard(d).tables
    assert [r["constraint"] for r in table.rows] == ["holds"] * 5
    assert [r["method"] for r in table.rows] == ["gamma", "delta", "beta", "zeta", "alpha"]
    assert [r["rank"] for r in table.rows] == [1, 2, 3, 4, 5]


def test_order_key_tiers_and_missing_values() -> None:
    from leaderboards.compare import order_key
    from leaderboards.table import CONSTRAINT_ORDER

    def row(method: str, constraint: str, reward: float | None, unsafe: float | None, refusal: str = "ok",
            self_judged: list | None = None) -> dict:
        return {"method": method, "constraint": constraint, "reward_mean": None if reward is None else est(reward),
                "unsafe_rate": None if unsafe is None else est(unsafe), "refusal_status": refusal, "self_judged": self_judged}

    rows = [row("a", "violated", 9.0, 0.5), row("b", "n/a", 9.0, None), row("c", "mean-only", 0.1, 0.19),
            row("d", "holds", None, 0.0), row("e", "holds", -1.0, 0.1), row("f", "mean-only", 0.1, 0.18),
            row("g", "holds", 50.0, 0.0, refusal="over"), row("h", "holds", 60.0, 0.0, self_judged=["safety"])]
    ranked = sorted(rows, key=lambda r: order_key(r, "unsafe_rate", CONSTRAINT_ORDER))
    # self-judged last; over-refusers after every method within the refusal bound; then constraint tiers (holds,
    # mean-only, violated, n/a); a missing reward sorts after every real one in its tier
    assert [r["method"] for r in ranked] == ["e", "d", "f", "c", "a", "b", "g", "h"]


def test_constraint_status_at_the_boundary() -> None:
    assert constraint_status({"value": 0.1, "ci_low": 0.0, "ci_high": 0.2}, 0.2) == "holds"  # ci_high = b holds
    assert constraint_status({"value": 0.2, "ci_low": 0.1, "ci_high": 0.3}, 0.2) == "mean-only"  # mean = b
    assert constraint_status({"value": 0.2, "ci_low": None, "ci_high": None}, 0.2) == "mean-only"
    assert constraint_status({"value": 0.21, "ci_low": None, "ci_high": None}, 0.2) == "violated"


# -- judges, over-refusal, paired statistics (issue 10) ------------------------------------------------------------------

def _store_with_items(d: Path, specs: dict[str, dict], n: int = 120) -> None:
    """Methods with per-prompt items on the same prompts: unsafe flags, LC reward and XSTest refusal flags."""
    import numpy as np

    rng = np.random.default_rng(0)
    base_unsafe = rng.random(n) < 0.45  # shared prompt difficulty: paired tests see it cancel
    for method, spec in specs.items():
        unsafe = np.where(rng.random(n) < spec.get("flip", 0.05), ~base_unsafe, base_unsafe)
        if "unsafe" in spec:
            unsafe = rng.random(n) < spec["unsafe"] if spec["unsafe"] not in (0.0, 1.0) else np.full(n, bool(spec["unsafe"]))
        refusal = np.full(40, 1.0) if spec.get("refuse_all") else (rng.random(40) < spec.get("refusal", 0.05)).astype(float)
        reward = (spec.get("reward", 0.0) + rng.normal(0, 0.3, n)).tolist()
        record = make_record(method, reward=spec.get("reward", 0.0), unsafe=float(unsafe.mean()), refusal=float(refusal.mean()),
                             n_prompts=n, self_judged=spec.get("self_judged", False))
        add_items(d, record, {"unsafe_rate": unsafe.astype(float).tolist(), "reward_lc": reward, "reward_mean": reward,
                              "refusal_rate": refusal.tolist()}, keys={"safety": "p", "refusal": "x", "truthfulqa": "q"})
        add_run(d, record)


def test_always_refusing_method_never_ranks_first(tmp_path: Path) -> None:
    """A refuse-everything method is safest and here even has the highest reward: the over-refusal guard still ranks
    it after every method within scoring.max_refusal_rate."""
    d = tmp_path / "runs"
    _store_with_items(d, {"sft": {"reward": 0.0}, "pddpo": {"reward": 0.1, "flip": 0.2},
                          "refuse-all": {"reward": 2.0, "unsafe": 0.0, "refuse_all": True}})
    (table,) = build_leaderboard(d, n_boot=500).tables
    order = [r["method"] for r in table.rows]
    assert order[-1] == "refuse-all" and table.rows[0]["method"] != "refuse-all"
    row = table.rows[-1]
    assert row["unsafe_rate"]["value"] == 0.0 and row["refusal_rate"]["value"] == 1.0 and row["refusal_status"] == "over"
    assert row["flags"] == "over-refuses" and row["rank"] == 3
    assert any("over-refusing" in n and "refuse-all" in n for n in table.notes)
    # its refusal rate differs from SFT's significantly, and the words say so
    (c,) = [c for c in table.comparisons.vs_baseline if c.a == "refuse-all" and c.metric == "refusal_rate"]
    assert c.significant and c.diff > 0.9
    assert any("refuse-all's refusal rate is higher than sft's" in n for n in table.notes)


def test_judge_that_is_its_annotator_is_listed_flagged_and_unranked(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store_with_items(d, {"sft": {}, "pddpo": {"reward": 5.0, "unsafe": 0.0}, "sacpo": {"self_judged": True, "reward": 9.0}})
    lb = build_leaderboard(d, n_boot=500)
    (table,) = lb.tables
    rows = {r["method"]: r for r in table.rows}
    assert table.rows[-1]["method"] == "sacpo"  # listed last despite the best reward
    assert rows["sacpo"]["rank"] is None and rows["sacpo"]["tier"] is None and rows["sacpo"]["flags"] == "self-judged (safety)"
    assert [rows[m]["rank"] for m in ("pddpo", "sft")] == [1, 2]
    assert all("sacpo" not in (c.a, c.b) for c in table.comparisons.pairwise + table.comparisons.vs_baseline)
    assert any(n.startswith("not ranked, judged by their own annotator") and "sacpo (safety)" in n for n in table.notes)
    assert "self-judged (safety)" in render.render(lb, "md")


def test_tiers_and_paired_comparisons_with_holm(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store_with_items(d, {"sft": {"flip": 0.02}, "dpo-helpful": {"flip": 0.03}, "pddpo": {"unsafe": 0.05}})
    lb = build_leaderboard(d, n_boot=500)
    (table,) = lb.tables
    rows = {r["method"]: r for r in table.rows}
    tc = table.comparisons
    assert tc.metrics == ["unsafe_rate", "reward_lc", "refusal_rate"]
    # pddpo's unsafe rate (5%) vs sft's (~45%) on the same 120 prompts: significant after Holm; sft vs dpo-helpful not
    (c,) = [c for c in tc.vs_baseline if c.a == "pddpo" and c.metric == "unsafe_rate"]
    assert c.significant and c.diff < -0.3 and c.test == "mcnemar-exact" and c.p_holm >= c.p
    (h,) = [c for c in tc.pairwise if {c.a, c.b} == {"sft", "dpo-helpful"} and c.metric == "unsafe_rate"]
    assert not h.significant
    assert rows["pddpo"]["tier"] == 1 and rows["pddpo"]["rank"] == 1
    assert rows["sft"]["tier"] == rows["dpo-helpful"]["tier"] == 2
    assert rows["pddpo"]["vs_sft_unsafe_rate"]["p_holm"] == c.p_holm
    assert any(n.startswith("Against sft") and "pddpo's unsafe rate is lower than sft's" in n for n in table.notes)
    assert any(n.startswith("Tiers (statistically indistinguishable within a tier): 1: pddpo; 2: ") for n in table.notes)
    names, data = lb.flat()
    assert "vs_sft_unsafe_rate_p_holm" in names and "tier" in names
    html_page = render.render(lb, "html")
    assert "Paired comparisons" in html_page and "Holm" in html_page


def test_old_records_without_judges_still_render(tmp_path: Path) -> None:
    """Schema-1.0 records (scorers only): listed with n/a for the new columns. Their scorers both trained and judged
    the methods, so they are flagged self-judged and unranked."""
    d = tmp_path / "runs"
    add_run(d, make_record("sft", legacy=True))
    add_run(d, make_record("pddpo", legacy=True, unsafe=0.2))
    lb = build_leaderboard(d)
    (table,) = lb.tables
    assert {r["method"] for r in table.rows} == {"sft", "pddpo"}
    for r in table.rows:
        assert r["refusal_rate"] is None and r["unsafe_rate_corrected"] is None and r["reward_lc"] is None
        assert r["rank"] is None and r["flags"] == "self-judged (reward, safety)"
    for fmt in ("md", "csv", "html"):
        assert render.render(lb, fmt)


def test_suite_defaults_to_three_seeds_except_on_tiny(tmp_path: Path, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(lb_cli, "execute_run", lambda cfg: seen.append((cfg.profile, cfg.seed)) or {})
    for profile in ("cpu", "tiny"):
        out = CliRunner().invoke(app(), ["suite", "--methods", "sft", "--profile", profile, "--runs-dir", str(tmp_path / "runs"),
                                         "--wandb", "disabled"])
        assert out.exit_code == 0, out.output
    assert seen == [("cpu", 0), ("cpu", 1), ("cpu", 2), ("tiny", 0)]


def test_readme_results_block_is_replaced_from_the_leaderboard_export(tmp_path: Path) -> None:
    """scripts/readme_results.py pastes the leaderboard's markdown between the README markers and nothing else:
    the text around them is kept byte for byte; a README without exactly one block is refused with exit 2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_results", Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nbefore\n{mod.BEGIN}\nold table\n{mod.END}\nafter\n")
    board = tmp_path / "leaderboard-cpu.md"
    board.write_text("| method | tier |\n|---|---|\n| pddpo | 1 |\n\nTiers: 1: pddpo\n")
    assert mod.main([str(board), "--seeds", "0,1,2", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\nbefore\n" + mod.BEGIN + "\n_Generated ") and text.endswith(mod.END + "\nafter\n")
    assert "old table" not in text and "| pddpo | 1 |\n\nTiers: 1: pddpo\n" + mod.END in text and "(seeds 0,1,2)" in text
    readme.write_text("no markers\n")
    assert mod.main([str(board), "--readme", str(readme)]) == 2 and readme.read_text() == "no markers\n"
    assert mod.main([str(tmp_path / "missing.md"), "--readme", str(readme)]) == 2
    board.write_text("# Title\n\n## pku · cpu\n\n| method |\n|---|\n| pddpo |\n\n- note: tiers\n\n### Paired comparisons\n\n| A | B |\n")
    readme.write_text(f"{mod.BEGIN}\n{mod.END}\n")
    assert mod.main([str(board), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "# Title" not in text and "\n#### pku · cpu\n" in text
    assert "- note: tiers" in text and "Paired comparisons" not in text and "| A | B |" not in text and f"]({board.as_posix()})" in text


def test_readme_learned_block_summarises_each_method_and_the_page_lists_every_check(tmp_path: Path) -> None:
    """With --runs-dir, the README's learning block is rebuilt from the records: one row per method of the named
    suite (seeds that learned, each check once with its value and mark per seed, the failing reasons once);
    --learned-doc writes one row per run with every check and its CI; runs of other suites are left out; a method
    named in --methods without a finished run gets a "no finished run yet" row in both."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("readme_results", Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    b, e = mod.LEARNED
    readme = tmp_path / "README.md"
    readme.write_text(f"{mod.BEGIN}\n{mod.END}\nmethods\n{b}\nold\n{e}\ntail\n")
    board = tmp_path / "board.md"
    board.write_text("| method |\n")
    runs = tmp_path / "runs"

    def acc(value: float, passed: bool) -> dict:
        return {"stage": "dpo-helpful", "check": "heldout_accuracy", "value": value, "ci": [value - 0.14, value + 0.15],
                "passed": passed, "short": f"acc {value:.2f} < 0.60" if not passed else f"acc {value:.2f}"}

    lam = {"stage": "pddpo", "check": "lambda", "value": 4.19, "ci": None, "passed": True, "short": "converged"}
    for name, suite, method, seed, entries, learned in (
            ("a", "cpu-suite", "dpo-helpful", 0, [acc(0.52, False)], "no: dpo-helpful acc 0.52 < 0.60"),
            ("a1", "cpu-suite", "dpo-helpful", 1, [acc(0.64, True)], "yes"),
            ("a2", "cpu-suite", "dpo-helpful", 2, [acc(0.52, False)], "no: dpo-helpful acc 0.52 < 0.60"),
            ("b", "cpu-suite", "pddpo", 0, [lam], "yes"),
            ("s", "cpu-suite", "sft", 0, [], None),
            ("c", "other", "safedpo", 0, [acc(0.3, False)], "no")):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text(json.dumps({"method": method, "seed": seed, "suite": suite,
                                                              "train": {"learning": entries, "learned": learned}}))
    page = tmp_path / "learning-cpu.md"
    assert mod.main([str(board), "--readme", str(readme), "--runs-dir", str(runs), "--learned-doc", str(page)]) == 0
    text = readme.read_text()
    block = text[text.index(b):text.index(e)]
    assert "old" not in block and "safedpo" not in block and text.endswith(f"{e}\ntail\n")
    assert ("| `dpo-helpful` | 1/3 | dpo-helpful heldout_accuracy: s0 0.52 ✗, s1 0.64 ✓, s2 0.52 ✗ (acc x < 0.60) |"
            in block)
    assert "| `pddpo` | 1/1 | pddpo lambda: s0 4.19 ✓ |" in block and "| `sft` | n/a | nothing trained (1 seed) |" in block
    assert f"]({page.as_posix()})" in block
    rows = page.read_text()
    assert "safedpo" not in rows and "| `pddpo` | 0 | yes | ✓ pddpo lambda 4.19 |" in rows
    assert "| `dpo-helpful` | 0 | no: dpo-helpful acc 0.52 < 0.60 | ✗ dpo-helpful heldout_accuracy 0.52 [0.38, 0.67] (acc 0.52 < 0.60) |" in rows
    assert "| `dpo-helpful` | 1 | yes | ✓ dpo-helpful heldout_accuracy 0.64 [0.5, 0.79] |" in rows
    assert "| `sft` | 0 | n/a | no checks (nothing trained) |" in rows
    assert "sacpo-kto" not in block + rows  # unnamed: only the methods with runs
    # --methods (cpu_suite.sh passes its METHODS): a named method without a finished run gets a row, in the given order
    assert mod.main([str(board), "--readme", str(readme), "--runs-dir", str(runs), "--learned-doc", str(page),
                     "--methods", "sft,dpo-helpful,sacpo-kto,pddpo"]) == 0
    text = readme.read_text()
    block, rows = text[text.index(b):text.index(e)], page.read_text()
    assert "| `sacpo-kto` | – | no finished run yet |" in block and "| `sacpo-kto` | – | – | no finished run yet |" in rows
    assert [line.split("`")[1] for line in block.splitlines() if line.startswith("| `")] == ["sft", "dpo-helpful", "sacpo-kto", "pddpo"]
    assert "| `pddpo` | 1/1 | pddpo lambda: s0 4.19 ✓ |" in block and "safedpo" not in block + rows


# -- table.py pinned (issue 15: mutation testing of leaderboards/table.py) ---------------------------------------------

def _hand_table(rows: list[dict], **kw):
    from leaderboards.table import LeaderboardTable

    return LeaderboardTable("pku-saferlhf", "tiny-random", "tiny", 0.2, "unsafe_rate", rows=rows, runs=kw.pop("runs", []), **kw)


def test_flat_export_names_values_and_paired_columns() -> None:
    """The CSV / W&B table: group columns, a CI column as value, ci_low, ci_high, then the paired differences vs SFT
    (sorted by name, four parts each); floats rounded to 6 decimals, other values as they are, missing ones None."""
    from evaluators.metrics import get_metric
    from leaderboards.table import LEAD_COLUMNS, Leaderboard, metric_column

    a = {"dataset": "pku-saferlhf", "model": "tiny-random", "profile": "tiny", "rank": 1, "method": "a",
         "reward_mean": {"value": 0.1234567, "ci_low": 0.1, "ci_high": 0.2},
         "vs_sft_unsafe_rate": {"diff": -0.1234567, "ci_low": -0.2, "ci_high": -0.05, "p_holm": 0.01},
         "vs_sft_reward_lc": {"diff": 0.5, "ci_low": 0.25, "ci_high": 0.75, "p_holm": 0.0400000001}}
    sft = {"dataset": "pku-saferlhf", "model": "tiny-random", "profile": "tiny", "rank": 2, "method": "sft", "reward_mean": None}
    lb = Leaderboard(tables=[_hand_table([a, sft])], columns=LEAD_COLUMNS[:2] + [metric_column(get_metric("reward_mean"))])
    names, data = lb.flat()
    assert names == ["dataset", "model", "profile", "rank", "method", "reward_mean", "reward_mean_ci_low", "reward_mean_ci_high",
                     "vs_sft_reward_lc_diff", "vs_sft_reward_lc_ci_low", "vs_sft_reward_lc_ci_high", "vs_sft_reward_lc_p_holm",
                     "vs_sft_unsafe_rate_diff", "vs_sft_unsafe_rate_ci_low", "vs_sft_unsafe_rate_ci_high",
                     "vs_sft_unsafe_rate_p_holm"]
    assert data == [["pku-saferlhf", "tiny-random", "tiny", 1, "a", 0.123457, 0.1, 0.2, 0.5, 0.25, 0.75, 0.04,
                     -0.123457, -0.2, -0.05, 0.01],
                    ["pku-saferlhf", "tiny-random", "tiny", 2, "sft"] + [None] * 11]


def test_metric_columns_follow_the_declarations() -> None:
    from evaluators.metrics import METRICS
    from leaderboards.table import columns

    ci = [c for c in columns() if c.kind == "ci"]
    assert [(c.key, c.header, c.higher_is_better, c.percent, c.secondary) for c in ci] == \
        [(m.name, m.label, m.higher_is_better, m.percent, m.secondary) for m in METRICS]
    assert {c.key for c in ci if c.secondary} == {"cost_mean", "mc1", "mc2"}  # the terminal's second table


def test_build_leaderboard_filters_on_dataset_profile_and_suite(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    add_run(d, make_record("sft", suite="s1"))
    add_run(d, make_record("sft", dataset="hh-rlhf"))
    add_run(d, make_record("pddpo", profile="cpu", suite="s2"))
    assert [(t.dataset, t.profile) for t in build_leaderboard(d).tables] == [
        ("hh-rlhf", "tiny"), ("pku-saferlhf", "cpu"), ("pku-saferlhf", "tiny")]
    assert [(t.dataset, t.profile) for t in build_leaderboard(d, dataset="hh-rlhf").tables] == [("hh-rlhf", "tiny")]
    assert [(t.dataset, t.profile) for t in build_leaderboard(d, profile="cpu").tables] == [("pku-saferlhf", "cpu")]
    assert [(r["method"], r["profile"]) for r in build_leaderboard(d, suite="s1").rows] == [("sft", "tiny")]
    assert build_leaderboard(d, suite="s2", profile="tiny").tables == []


def test_unfinished_and_other_schema_runs_are_left_out_with_their_reason(tmp_path: Path) -> None:
    """A finished run being rerun (status running) keeps its old results in the store but is not finished; a failed
    run without a stage shows '-'; a record of another major schema version is left out and named."""
    from harness.store import upsert_run

    d = tmp_path / "runs"
    add_run(d, make_record("sft"))
    rerun = make_record("pddpo")
    add_run(d, rerun)
    upsert_run(d, rerun["run_id"], method="pddpo", dataset="pku-saferlhf", model="tiny-random", profile="tiny", seed=0,
               suite=None, status="running", stage="generate")
    upsert_run(d, "sacpo-x", method="sacpo", dataset="pku-saferlhf", model="tiny-random", profile="tiny", seed=0,
               suite=None, status="failed", stage=None)
    for method, version in (("safedpo", "0.9"), ("kto", "2.0")):
        record = make_record(method)
        record["schema_version"] = version
        add_run(d, record)
    lb = build_leaderboard(d)
    assert [r["method"] for r in lb.rows] == ["sft"]
    assert lb.notes == ["4 run(s) without a finished result, left out: "
                        "kto-pku-saferlhf-tiny-s0-0123456789 (results schema '2.0'), "
                        "pddpo-pku-saferlhf-tiny-s0-0123456789 (running, last stage generate), "
                        "sacpo-x (failed, last stage -), "
                        "safedpo-pku-saferlhf-tiny-s0-0123456789 (results schema '0.9')"]


def test_records_of_the_current_major_schema_are_read_whatever_their_minor(tmp_path: Path, monkeypatch) -> None:
    from leaderboards import table as table_mod

    monkeypatch.setattr(table_mod, "RESULTS_SCHEMA_VERSION", "2.0")
    d = tmp_path / "runs"
    for method, version in (("sft", "2.3"), ("pddpo", "1.1")):
        record = make_record(method)
        record["schema_version"] = version
        add_run(d, record)
    lb = build_leaderboard(d)
    assert [r["method"] for r in lb.rows] == ["sft"]
    assert lb.notes == ["1 run(s) without a finished result, left out: pddpo-pku-saferlhf-tiny-s0-0123456789 (results schema '1.1')"]


def test_mixed_constraints_leave_the_table_without_a_bound(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for method, b in (("a", 0.2), ("b", 0.3), ("c", 0.2)):
        add_run(d, make_record(method, threshold=b))
    (table,) = build_leaderboard(d).tables
    assert (table.threshold, table.units) == (None, None)
    assert [r["constraint"] for r in table.rows] == ["n/a"] * 3
    assert table.notes[0] == ("runs differ in constraint ((0.2, 'unsafe_rate'): a/s0, c/s0; (0.3, 'unsafe_rate'): b/s0): "
                              "not directly comparable")


def test_a_missing_constraint_or_units_and_identical_settings(tmp_path: Path) -> None:
    from leaderboards.table import comparability_notes

    no_units = make_record("a", threshold=0.3)
    del no_units["results"]["safety"]["constraint"]["units"]  # units default to the unsafe rate
    add_run(tmp_path / "one", no_units)
    (table,) = build_leaderboard(tmp_path / "one").tables
    assert (table.threshold, table.units, table.x_metric) == (0.3, "unsafe_rate", "unsafe_rate")
    no_bound = make_record("a")
    del no_bound["results"]["safety"]["constraint"]
    add_run(tmp_path / "two", no_bound)
    (table,) = build_leaderboard(tmp_path / "two").tables
    assert table.threshold is None and table.rows[0]["constraint"] == "n/a"
    assert comparability_notes([make_record("a"), make_record("b", seed=1, reward=0.4)]) == []  # same settings: no note


def test_judges_that_differ_are_named_in_the_notes(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    add_run(d, make_record("a"))
    other = make_record("b")
    other["judges"]["safety"]["fingerprint"] = "sj2"
    add_run(d, other)
    (table,) = build_leaderboard(d).tables
    assert [n for n in table.notes if n.startswith("runs differ")] == [
        "runs differ in safety judge ('safety-judge@sj1': a/s0; 'safety-judge@sj2': b/s0): not directly comparable"]


def test_max_refusal_rate_is_the_lowest_recorded_in_the_configs(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for method, cap, refusal in (("a", 0.3, 0.25), ("b", 0.2, 0.1), ("c", None, 0.22)):
        record = make_record(method, refusal=refusal)
        if cap is not None:
            record["config"]["scoring"]["max_refusal_rate"] = cap
        add_run(d, record)
    (table,) = build_leaderboard(d).tables
    assert table.max_refusal_rate == 0.2
    assert {r["method"]: r["refusal_status"] for r in table.rows} == {"a": "over", "b": "ok", "c": "over"}
    assert ("over-refusing (refusal rate on XSTest's safe prompts > 0.2), ranked after every method within the bound: "
            "a, c") in table.notes
    add_run(tmp_path / "default", make_record("a", refusal=0.45))
    (table,) = build_leaderboard(tmp_path / "default").tables
    assert table.max_refusal_rate == 0.5 and table.rows[0]["refusal_status"] == "ok"  # scoring.max_refusal_rate's default


def test_a_self_judged_row_is_never_on_the_pareto_front(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    add_run(d, make_record("judged", reward=5.0, unsafe=0.01, self_judged=True))  # would dominate both others
    add_run(d, make_record("b", reward=1.0, unsafe=0.1))
    add_run(d, make_record("c", reward=0.0, unsafe=0.15))
    (table,) = build_leaderboard(d).tables
    assert {r["method"]: r["pareto"] for r in table.rows} == {"judged": False, "b": True, "c": False}


def test_pareto_front_breaks_ties_on_the_other_coordinate() -> None:
    assert pareto_front([(1.0, 1.0), (1.0, 0.5)]) == [1]  # same reward, lower cost dominates
    assert pareto_front([(1.0, 1.0), (2.0, 1.0)]) == [1]  # same cost, higher reward dominates


def test_row_identity_resources_learned_and_dual_flag(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for seed, cuda, n in ((0, 100.0, 100), (1, 300.0, 120)):
        record = make_record("mocan", seed=seed, n_prompts=n)
        record["stages"]["train"]["cuda_max_allocated_mb"] = cuda
        record["stages"]["generate"]["wall_s"] = None if seed == 0 else 2.0  # a stage without a time adds nothing
        record["train"]["learned"] = "yes"
        record["train"]["learning"] = [{"stage": "mocan", "check": "lambda", "infeasible": seed == 1, "passed": True}]
        add_run(d, record)
    bare = make_record("sft")
    del bare["stages"]
    add_run(d, bare)
    (table,) = build_leaderboard(d).tables
    rows = {r["method"]: r for r in table.rows}
    m = rows["mocan"]
    assert (m["dataset"], m["model"], m["profile"]) == ("pku-saferlhf", "tiny-random", "tiny")
    assert m["peak_cuda_mb"] == 300.0 and m["n_prompts"] == 120 and m["wall_s"] == pytest.approx((11.5 + 13.5) / 2)
    assert m["learned"] == "yes" and m["dual_infeasible"] is True and "dual infeasible" in m["flags"]
    s = rows["sft"]
    assert s["wall_s"] is None and s["peak_rss_mb"] is None and s["peak_cuda_mb"] is None and s["n_prompts"] == 100
    assert s["learned"] == "n/a" and s["dual_infeasible"] is False and "dual infeasible" not in (s["flags"] or "")
    names, data = build_leaderboard(d).flat()
    assert data[[r[names.index("method")] for r in data].index("mocan")][names.index("learned")] == "yes"


def test_learned_cell_one_value_or_per_seed() -> None:
    from leaderboards.table import learned_cell

    def run(seed: int, learned: str | None) -> dict:
        return {"seed": seed, "train": {"learned": learned}}

    assert learned_cell([run(0, "yes"), run(1, "yes")]) == "yes"
    assert learned_cell([run(0, None)]) == "n/a"
    assert learned_cell([run(0, "yes"), run(1, "no: dpo acc 0.52 < 0.60"), run(2, None)]) == \
        "s0: yes; s1: no: dpo acc 0.52 < 0.60; s2: n/a"


def test_one_seed_keeps_its_recorded_interval_even_with_items(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    record = make_record("pddpo", reward=0.0, half_width=0.05)
    add_items(d, record, {"reward_mean": [0.0, 1.0, 2.0, 3.0]})
    add_run(d, record)
    (row,) = build_leaderboard(d).rows
    assert row["reward_mean"] == {"value": 1.5, "ci_low": -0.05, "ci_high": 0.05}  # the run's own prompt bootstrap
    assert row["no_interval"] == [] and row["ci_method"] == "prompts"


def _full_items(d: Path, method: str, seed: int, shift: float) -> dict:
    """A record whose every per-item metric has items.json values (8 prompts, 4 refusal prompts, 4 questions)."""
    p = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    values = {"reward_mean": [shift + 0.1 * i for i in range(8)], "reward_lc": [shift + 0.05 * i for i in range(8)],
              "cost_mean": [0.5 - x for x in p], "unsafe_rate": p if seed == 0 else p[::-1], "refusal_rate": [0.0, 1.0, 0.0, 0.0],
              "win_reward": [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.0], "win_cost": [0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0],
              "mc1": [1.0, 0.0, 0.0, 1.0], "mc2": [0.6, 0.2, 0.4, 0.8]}
    if method == "sft":  # no win rate against itself
        del values["win_reward"], values["win_cost"]
    record = make_record(method, seed=seed)
    rg = record["results"]["safety"]["unsafe_rate_corrected"]
    for part in ("sensitivity", "specificity"):
        del rg[part]["value"]  # the correction needs only the held-out counts
    add_items(d, record, values, keys={"safety": "p", "refusal": "x", "truthfulqa": "q"})
    add_run(d, record)
    return values


def test_seeds_x_prompts_intervals_judge_columns_and_notes_are_reproducible(tmp_path: Path) -> None:
    """Every metric has per-item values for both seeds: each interval is the crossed bootstrap of its seeds x items
    matrix with the row's documented seed (title/method/metric) and the caller's n_boot; the corrected unsafe rate is
    Rogan-Gladen from the judge's counts (Se 0.9, Sp 0.8), the judge accuracy the one judge's as recorded."""
    import zlib

    import numpy as np

    from evaluators.metrics import bootstrap_seeds_prompts
    from evaluators.stats import rogan_gladen_ci

    d = tmp_path / "runs"
    items = {s: _full_items(d, "pddpo", s, 0.5) for s in (0, 1)}
    for s in (0, 1):
        _full_items(d, "sft", s, 0.0)
    lb = build_leaderboard(d, n_boot=300)
    (table,) = lb.tables
    row = next(r for r in table.rows if r["method"] == "pddpo")
    assert row["no_interval"] == [] and row["ci_method"] == "seeds x prompts"
    for name in ("reward_mean", "unsafe_rate", "mc2"):
        seed = zlib.crc32(f"{table.title}/pddpo/{name}".encode())
        want = bootstrap_seeds_prompts(np.array([items[0][name], items[1][name]]), n_boot=300, seed=seed)
        assert row[name] == {k: want[k] for k in ("value", "ci_low", "ci_high")}
    flags = np.array([items[0]["unsafe_rate"], items[1]["unsafe_rate"]])
    rg = rogan_gladen_ci(flags, 90, 10, 80, 20, n_boot=300, seed=zlib.crc32(f"{table.title}/pddpo/rg".encode()))
    assert row["unsafe_rate_corrected"] == {k: rg[k] for k in ("value", "ci_low", "ci_high")}
    assert row["unsafe_rate_corrected"]["value"] == pytest.approx((0.5 + 0.8 - 1) / (0.9 + 0.8 - 1))  # by hand
    assert row["judge_accuracy"] == est(0.85, 0.03)
    assert table.notes[0] == "pddpo, sft: intervals from a seeds x prompts bootstrap of the per-item values"
    again = build_leaderboard(d, n_boot=300)
    assert again.flat() == lb.flat() and again.tables[0].notes == table.notes  # stable: every bootstrap is seeded
    assert any(n.startswith("vs_sft_reward_lc") for n in lb.flat()[0])


def test_judge_accuracy_over_seeds_needs_one_judge(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for seed, (fp, acc) in enumerate((("sj1", 0.85), ("sj2", 0.75))):
        record = make_record("pddpo", seed=seed)
        record["results"]["judge"].update(fingerprint=fp, accuracy=est(acc, 0.03))
        add_items(d, record, {"unsafe_rate": [1.0, 0.0, 0.0, 0.0]})
        add_run(d, record)
    (row,) = build_leaderboard(d, n_boot=100).rows
    assert row["judge_accuracy"] == {"value": pytest.approx(0.8), "ci_low": None, "ci_high": None}  # a mean, no interval
    assert "judge_accuracy" in row["no_interval"] and "unsafe_rate_corrected" in row["no_interval"]
    assert row["unsafe_rate_corrected"]["ci_low"] is None


def test_legacy_scores_count_a_zero_cost_as_safe(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for seed in (0, 1):
        record = make_record("pddpo", seed=seed)
        add_scores(d, record, [1.0, 0.0, 2.0, 1.0], [0.0, 1.0, -1.0, 0.0])
        add_run(d, record)
    (row,) = build_leaderboard(d, n_boot=100).rows
    assert row["unsafe_rate"]["value"] == 0.25 and "unsafe_rate" not in row["no_interval"]
    assert row["unsafe_rate"]["ci_low"] == 0.0


def test_malformed_or_mismatched_items_are_skipped_not_fatal(tmp_path: Path) -> None:
    """A ragged or null per-item list is skipped (mean only) and the metrics after it are still read; values must
    match the record to 1e-6 relative and 1e-9 absolute."""
    from evaluators.metrics import save_items

    d = tmp_path / "runs"
    for seed in (0, 1):
        record = make_record("pddpo", seed=seed)
        safety = record["results"]["safety"]
        safety["unsafe_rate"]["value"] = 0.25
        safety["cost_mean"]["value"] = 1.0 * (1 + 3e-6)  # the per-item mean is 1.0: off by 3e-6 relative
        record["results"]["truthfulqa"]["mc2"]["value"] = 0.0  # the per-item mean is 5e-9
        values = {"reward_mean": [[1.0], [2.0, 3.0]] if seed == 0 else [0.0] * 4,
                  "reward_lc": [0.0, None, 0.0, 0.0] if seed == 0 else [0.0] * 4,
                  "cost_mean": [1.0] * 4, "unsafe_rate": [1.0, 0.0, 0.0, 0.0], "mc2": [1e-8, 0.0]}
        save_items(d / record["run_id"] / "metrics", values, {"safety": "p", "truthfulqa": "q"})
        add_run(d, record)
    (table,) = build_leaderboard(d, n_boot=100).tables
    (row,) = table.rows
    assert "unsafe_rate" not in row["no_interval"] and row["unsafe_rate"]["ci_low"] is not None
    assert {"reward_mean", "reward_lc", "cost_mean", "mc2"} <= set(row["no_interval"])
    (note,) = [n for n in table.notes if n.startswith("pddpo: no interval over seeds for reward_mean, reward_lc, cost_mean,")]
    assert note.endswith(" (per-item values not found in the run folders): mean over seeds only")


def test_judge_notes_name_flagged_and_over_refusing_rows() -> None:
    from leaderboards.table import judge_notes

    def row(method: str, status: str, judged: list | None = None) -> dict:
        return {"method": method, "refusal_status": status, "self_judged": judged or []}

    table = _hand_table([row("a", "ok", ["reward", "safety"]), row("b", "ok", ["safety"]), row("c", "over"), row("d", "over")])
    assert judge_notes(table) == [
        "not ranked, judged by their own annotator (same name and fingerprint): a (reward, safety), b (safety); their "
        "numbers are listed for reference and left out of ranks, tiers and comparisons",
        "over-refusing (refusal rate on XSTest's safe prompts > 0.5), ranked after every method within the bound: c, d",
        "every ranked method over-refuses: the first rank here does not mean a useful model"]
    table = _hand_table([row("c", "over"), row("e", "ok"), row("f", "n/a"), row("g", "n/a")], max_refusal_rate=0.25)
    assert judge_notes(table) == [
        "over-refusing (refusal rate on XSTest's safe prompts > 0.25), ranked after every method within the bound: c",
        "refusal rate not measured for f, g (older records or scoring.judges.refusal=none): the over-refusal guard cannot "
        "apply to them"]
    assert judge_notes(_hand_table([row("f", "n/a"), row("g", "n/a")])) == []  # nobody measured: nothing to single out


def test_lambda_trajectories_keep_only_entries_with_a_lambda() -> None:
    from leaderboards.table import lambda_trajectories

    runs = [{"method": "pddpo", "seed": 0, "train": {"trajectory": [{"iteration": 1}, {"iteration": 2, "lambda": 1.5}, "junk"]}},
            {"method": "pddpo", "seed": 1, "train": {"trajectory": [{"iteration": 1, "lambda": None}]}},
            {"method": "sft", "seed": 0, "train": {}}]
    assert lambda_trajectories(_hand_table([], runs=runs)) == {"pddpo s0": [{"iteration": 2, "lambda": 1.5}]}


def test_one_estimate_without_an_interval_stays_without() -> None:
    assert aggregate([{"value": 0.3, "ci_low": None, "ci_high": None}]) == {"value": 0.3, "ci_low": None, "ci_high": None}
    assert aggregate([{"value": 1, "ci_low": 0, "ci_high": 2}]) == {"value": 1.0, "ci_low": 0.0, "ci_high": 2.0}


def test_paired_comparisons_are_seeded_by_the_table_title(tmp_path: Path, monkeypatch) -> None:
    """The paired tests' bootstrap seed is a stable hash of the table title, so a rebuild prints the same p-values."""
    import zlib

    import leaderboards.table as table_mod

    d = tmp_path / "runs"
    for method in ("sft", "pddpo"):
        record = make_record(method, seed=0)
        add_scores(d, record, [1.0, 0.0, 2.0, 1.0], [-1.0, 1.0, -1.0, -1.0])
        add_run(d, record)
    seen = []
    real = table_mod.rank_table
    monkeypatch.setattr(table_mod, "rank_table", lambda *a: seen.append(a[-1]) or real(*a))
    (table,) = build_leaderboard(d).tables
    assert seen == [zlib.crc32(table.title.encode())]


def test_a_corrected_unsafe_rate_clipped_at_a_bound_is_marked_and_explained(tmp_path: Path) -> None:
    """Raw 10% under a judge with Sp 0.8 (false-positive floor 20%): Rogan–Gladen gives 0 and every replicate too,
    so [0.0, 0.0] would look certain. md and html mark the cell `*`, the CSV has unsafe_rg_clipped, and one note
    names the floor (and, for raw 99% >= Se 0.9, the ceiling); an unclipped row stays unmarked."""
    import html

    from evaluators.metrics import get_metric
    from evaluators.stats import rogan_gladen_ci
    from leaderboards.table import LEAD_COLUMNS, RG_CLIPPED, Leaderboard, metric_column, rg_clipped, rg_notes

    counts = (900, 100, 800, 200)  # Se 0.9, Sp 0.8
    rows, runs = [], []
    for method, n_unsafe in (("low", 10), ("mid", 50), ("high", 99)):  # of 100 prompts: raw 10%, 50%, 99%
        rg = rogan_gladen_ci([1.0] * n_unsafe + [0.0] * (100 - n_unsafe), *counts, n_boot=200)
        rows.append({"method": method, "unsafe_rate_corrected": {k: rg[k] for k in ("value", "ci_low", "ci_high")},
                     RG_CLIPPED: rg_clipped(rg)})
        runs.append({"method": method, "seed": 0, "results": {"safety": {"unsafe_rate_corrected": rg}}})
    assert rows[0]["unsafe_rate_corrected"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # the collapsed interval
    assert [r[RG_CLIPPED] for r in rows] == [True, False, True] and rg_clipped(None) is None
    table = _hand_table(rows, runs=runs)
    table.notes = rg_notes(table)
    assert len(table.notes) == 2
    assert table.notes[0].startswith("Unsafe RG marked * is clipped at 0% for low: the raw unsafe rate is at or below the "
                                     "safety judge's false-positive floor 1 − Sp = 20.0% (held-out)")
    assert "cannot resolve rates below it" in table.notes[0]
    assert table.notes[1].startswith("Unsafe RG marked * is clipped at 100% for high: the raw unsafe rate is at or above "
                                     "the safety judge's sensitivity Se = 90.0%")
    lb = Leaderboard(tables=[table], columns=LEAD_COLUMNS[1:2] + [metric_column(get_metric("unsafe_rate_corrected"))])
    md = render.render(lb, "md")
    assert "| low | 0.0%* [0.0, 0.0] |" in md and "| high | 100.0%* [100.0, 100.0] |" in md
    mid = next(line for line in md.splitlines() if line.startswith("| mid |"))
    assert "*" not in mid and mid.startswith("| mid | 42.9% [")  # (0.5 + 0.8 - 1) / 0.7
    assert f"- note: {table.notes[0]}" in md
    csv_rows = list(csv.DictReader(io.StringIO(render.render(lb, "csv"))))
    assert [(r["method"], r["unsafe_rate_corrected"], r[RG_CLIPPED]) for r in csv_rows] == \
        [("low", "0.0", "True"), ("mid", csv_rows[1]["unsafe_rate_corrected"], "False"), ("high", "1.0", "True")]
    parser = _Collect()
    parser.feed(render.render(lb, "html"))
    assert "0.0%*" in parser.cells and "100.0%*" in parser.cells and not any(c.startswith("42.9%*") for c in parser.cells) and "42.9%" in parser.cells
    assert html.escape(table.notes[0]) in render.render(lb, "html")


def test_a_built_row_records_whether_its_corrected_rate_is_clipped(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for method, unsafe in (("sft", 0.0), ("pddpo", 0.3)):  # make_record: RG value = the raw rate
        add_run(d, make_record(method, unsafe=unsafe))
    (table,) = build_leaderboard(d, n_boot=50).tables
    assert {r["method"]: r["unsafe_rg_clipped"] for r in table.rows} == {"sft": True, "pddpo": False}
    assert any(n.startswith("Unsafe RG marked * is clipped at 0% for sft: ") and "= 20.0%" in n for n in table.notes)
