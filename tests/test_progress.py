"""Quiet by default: library output goes to the run's log file, the terminal shows one line per stage; `-q` shows only
the result; `bench list methods NAME` imports neither torch nor trl."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from harness.progress import StageLines, captured, stage_eta, terminal

TQDM = re.compile(r"\d+%\|")  # a tqdm bar: " 33%|███▎      | 1/3 [...]"


def _bench(*args: str, env_over: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BENCH_QUIET"}  # conftest sets it for in-process tests
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=900,
                          env={**env, **(env_over or {})})


def test_captured_sends_prints_fds_and_bars_to_the_log_and_keeps_warnings_on_the_terminal(tmp_path, capfd):
    log_path = tmp_path / "run" / "run.log"
    with captured(log_path):
        print("{'loss': 0.69}")
        sys.stderr.write(" 33%|███▎      | 1/3\n")
        os.write(1, b"from C code\n")
        os.write(2, b"Loading weights\n")
        logging.getLogger("bench").warning("the tracker is unavailable")
        terminal().write("a stage line\n")
        terminal().flush()
    print("after the stage")
    out, err = capfd.readouterr()
    log = log_path.read_text()
    for text in ("{'loss': 0.69}", "33%|", "from C code", "Loading weights"):
        assert text in log and text not in out + err
    assert "a stage line" in out and "after the stage" in out and "after the stage" not in log
    assert "warning: the tracker is unavailable" in out + err  # the project's own warnings still reach the user


def test_stage_eta_is_the_median_of_earlier_runs_of_that_method_dataset_and_profile(tmp_path):
    for rid, wall in (("pddpo-pku-tiny-s0-a", 10.0), ("pddpo-pku-tiny-s1-b", 30.0), ("pddpo-pku-tiny-s2-c", 20.0),
                      ("pddpo-fixed-pku-tiny-s0-d", 999.0), ("pddpo-pku-cpu-s0-e", 999.0)):
        (tmp_path / rid / "train").mkdir(parents=True)
        (tmp_path / rid / "train" / "done.json").write_text(json.dumps({"wall_s": wall}))
    assert stage_eta(tmp_path, "pddpo-pku-tiny-s", "train") == 20.0
    assert stage_eta(tmp_path, "pddpo-pku-tiny-s", "score") is None


def test_stage_lines_one_line_per_stage_with_its_time_and_none_when_quiet(capsys):
    lines = StageLines()
    lines("train", "running")
    lines("generate", "skipped (done)")
    lines("score", "running")
    lines.close(failed=True)
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[:3] for ln in out] == [["train", "done", "in"], ["generate", "skipped", "(done)"], ["score", "stopped", "after"]]
    assert re.fullmatch(r"\s+train\s+done in \d+:\d\d", out[0])
    quiet = StageLines(quiet=True)
    quiet("train", "running")
    quiet.close()
    assert capsys.readouterr().out == ""


@pytest.mark.slow  # a real tiny training run in a subprocess: about a minute on 2 shared cores
def test_a_tiny_run_shows_stage_lines_and_logs_the_trainer_to_its_run_folder(tmp_path, data_dir):
    out = _bench("run", "--method", "dpo-helpful", "--profile", "tiny", "--runs-dir", str(tmp_path), "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    shown = out.stdout + out.stderr
    assert "{'loss'" not in shown and not TQDM.search(shown) and "Loading weights" not in shown, shown
    for stage in ("train", "generate", "score", "metrics"):
        assert re.search(rf"^\s+{stage}\s+done in \d+:\d\d$", out.stdout, re.M), out.stdout
    [log] = tmp_path.glob("dpo-helpful-*/run.log")
    assert "{'loss'" in log.read_text()  # the Trainer's logs are kept, in the run folder


@pytest.mark.slow  # a tiny sft run in a subprocess
def test_quiet_shows_only_the_result(tmp_path, data_dir):
    out = _bench("-q", "run", "--method", "sft", "--profile", "tiny", "--runs-dir", str(tmp_path), "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip() == "", out.stderr
    assert "reward_mean" in out.stdout and "results:" in out.stdout  # the result
    for noise in ("done in", "running", "INFO", "Loading weights", "%|", "method=sft"):
        assert noise not in out.stdout, out.stdout


def test_list_methods_name_imports_neither_torch_nor_trl_and_answers_within_a_generous_bound():
    """In a fresh process (this one has torch loaded): the CLI prints every built-in method's config fields; then
    sys.modules is read. A method file that imports torch (or a helper that does) at its top fails here."""
    import time

    from harness.registries import METHODS

    names = [n for n in METHODS.names() if METHODS.is_builtin(n)]
    assert {"pddpo", "pddpo-online", "safe-rlhf", "ppo-shaping", "mocan", "pecan", "sft"} <= set(names), names
    code = ("import sys; from typer.testing import CliRunner; from harness.cli import app\n"
            f"for name in {names!r}:\n"
            "    r = CliRunner().invoke(app, ['list', 'methods', name]); assert r.exit_code == 0 and 'field' in r.output, r.output\n"
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout
    assert time.perf_counter() - start < 60  # generous (shared cores); the import check is the real test


def test_stage_lines_show_elapsed_and_eta_on_a_terminal(tmp_path, monkeypatch):
    class Tty:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    tty = Tty()
    monkeypatch.setattr("harness.progress.terminal", lambda: tty)
    lines = StageLines(eta=lambda stage: 90.0)
    lines("train", "running")
    import time

    time.sleep(0.2)
    lines.close()
    assert "\r\x1b[K  train    running 0:00, ETA 1:30 (earlier runs: 1:30)" in tty.text
    assert tty.text.endswith("\r\x1b[K  train    done in 0:00\n")

