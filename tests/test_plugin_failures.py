"""A plugin that fails inside a run: a method plugin that raises or calls `sys.exit`, and a scorer plugin that raises
at the score stage. Each gives one line naming the plugin, the stage and the error, exit 1, the run marked failed in
the store, its finished stages kept and the traceback in the run's `run.log` (`bench --debug` prints it too).

The plugins are registered in-process, the way an installed entry point would appear (not built-in), and `bench`
runs in-process through `harness.cli.entry` on the tiny profile.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_entry import entry_code

from harness.registries import METHODS, SCORERS
from harness.store import list_runs
from methods.base import TrainResult


@dataclass
class _NoConfig:
    note: str = "x"


class RaisingMethod:
    config_class = _NoConfig

    def __init__(self, config):
        self.config = config

    def train(self, ctx):
        raise RuntimeError("method bug in train")


class ExitingMethod(RaisingMethod):
    def train(self, ctx):
        sys.exit(3)


class KeepSFT(RaisingMethod):
    """Trains nothing: the SFT policy is the result, so the run reaches the score stage in seconds."""

    def train(self, ctx):
        return TrainResult(model_path=None, models_trained=0, networks_held=["policy"])


class RaisingJudge:
    name, kind, role, is_binary = "boom-judge", "reward", "judge", False

    def __init__(self, cfg=None, **_):
        self.fingerprint, self.card = "boom-judge:v0", {}

    def score(self, prompts, responses):
        raise ValueError("scorer bug while scoring")


@dataclass
class _BrokenConfig:
    beta: float = 0.1

    def __post_init__(self):
        raise KeyError("beta_schedule")  # a plugin bug, not a value the user gave


class BrokenConfigMethod(RaisingMethod):
    config_class = _BrokenConfig


class UnbuildableJudge(RaisingJudge):
    def __init__(self, cfg=None, **_):
        raise OSError("judge weights missing from the plugin package")


@pytest.fixture()
def plugins(monkeypatch):
    for reg in (METHODS, SCORERS):
        reg.load_plugins()  # so the entries below are not read over by a later load
    for name, cls in (("raising-plugin", RaisingMethod), ("exiting-plugin", ExitingMethod), ("keep-sft-plugin", KeepSFT),
                      ("broken-config-plugin", BrokenConfigMethod)):
        monkeypatch.setitem(METHODS._entries, name, cls)
    monkeypatch.setitem(SCORERS._entries, "boom-judge", RaisingJudge)
    monkeypatch.setitem(SCORERS._entries, "unbuildable-judge", UnbuildableJudge)


def bench(argv: list[str], capsys) -> tuple[int, str]:
    return entry_code(argv), capsys.readouterr().err


FAST = ["--set", "scoring.judges.refusal=none", "--set", "eval.truthfulqa_mc=false"]  # no XSTest generation, no MC scoring
CASES = [
    ("raising-plugin", [], "train", ["method plugin 'raising-plugin'", "raised RuntimeError: method bug in train"]),
    ("exiting-plugin", [], "train", ["method plugin 'exiting-plugin'", "called sys.exit(3)"]),
    ("keep-sft-plugin", ["--set", "scoring.judges.reward=boom-judge", *FAST], "score",
     ["scorer plugin 'boom-judge'", "raised ValueError: scorer bug while scoring"]),
    ("keep-sft-plugin", ["--set", "scoring.judges.reward=unbuildable-judge", *FAST], "score",  # fails while being built
     ["scorer plugin 'unbuildable-judge'", "raised OSError: judge weights missing from the plugin package"]),
]


@pytest.mark.parametrize("method,extra,stage,words", CASES, ids=[c[0] if c[0] != "keep-sft-plugin" else c[3][0].split("'")[1] for c in CASES])
def test_a_failing_plugin_gives_one_line_exit_1_and_a_failed_run(method, extra, stage, words, plugins, tmp_path, data_dir, capsys):
    runs_dir = tmp_path / "runs"
    argv = ["run", "--method", method, "--profile", "tiny", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir), *extra]
    code, err = bench(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s]" not in ln]  # the model loader's progress bars aside
    assert code == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in [f"the {stage} stage", *words, "run.log", "--debug", "marked failed"]:
        assert w in lines[0], (w, lines[0])
    (row,) = list_runs(runs_dir)
    assert row["status"] == "failed" and row["method"] == method
    run_dir = runs_dir / row["run_id"]
    log = (run_dir / "run.log").read_text()
    assert "Traceback" in log and words[-1].split(": ")[-1].removeprefix("called ") in log
    finished = [s for s in ("train", "generate", "score", "metrics") if (run_dir / s / "done.json").exists()]
    assert finished == {"train": [], "score": ["train", "generate"]}[stage]  # finished stages are kept
    assert not (run_dir / "results.json").exists()


def test_debug_prints_the_traceback_above_the_line(plugins, tmp_path, data_dir, capsys):
    argv = ["--debug", "run", "--method", "raising-plugin", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)]
    code, err = bench(argv, capsys)
    assert code == 1 and "Traceback (most recent call last)" in err and "RuntimeError: method bug in train" in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert "method plugin 'raising-plugin'" in last and "the train stage" in last


def test_a_rerun_after_the_fix_resumes_from_the_finished_stages(plugins, tmp_path, data_dir, capsys, monkeypatch):
    argv = ["run", "--method", "keep-sft-plugin", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir),
            "--set", "scoring.judges.reward=boom-judge", *FAST]
    assert bench(argv, capsys)[0] == 1
    (row,) = list_runs(tmp_path / "runs")
    train_marker = Path(tmp_path / "runs" / row["run_id"] / "train" / "done.json").read_text()
    monkeypatch.setattr(RaisingJudge, "score", lambda self, prompts, responses: [0.5] * len(responses))  # the plugin, fixed
    code, err = bench(argv, capsys)
    assert code == 0, err
    (row,) = list_runs(tmp_path / "runs")
    assert row["status"] == "finished"
    assert Path(tmp_path / "runs" / row["run_id"] / "train" / "done.json").read_text() == train_marker


def test_a_plugin_config_that_fails_before_the_run_is_one_line_and_nothing_is_made(plugins, tmp_path, data_dir, capsys):
    runs_dir = tmp_path / "runs"
    argv = ["run", "--method", "broken-config-plugin", "--profile", "tiny", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    code, err = bench(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    for w in ("method plugin 'broken-config-plugin'", "while its config was built", "raised KeyError: 'beta_schedule'", "--debug"):
        assert w in lines[0], (w, lines[0])
    assert not runs_dir.exists() or not [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
