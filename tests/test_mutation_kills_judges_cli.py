"""`bench judge train|eval` (evaluators/judges/cli.py) on hand-built cards: the `_ci` / `_v` cells, every cell, column
and justification of the terminal table (`print_card`) and of the markdown table (`markdown_table`), the calibration
line, the "does NOT beat every baseline" line (printed exactly when a baseline reaches the judge's accuracy, a tie
included), the judge selection (`_names`), the config split into run and `judge.` overrides (`_config`), and the
commands through `bench judge ...` with `cached_judge` replaced by a fake that hands back a hand-built card at once:
the retrain flag, the settings and config it receives, the per-judge line, the `--json` cards and the `.md` table
beside them, and each bad input's exit code and one-line error. No judge is trained and no data read. Fast; in
`make mutation`'s test selection (issue 29 item 8)."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli_entry import entry_code
from evaluators.judges import cli as judge_cli
from evaluators.judges import core
from evaluators.judges.core import JudgeSettings
from harness.errors import BenchError

ALL = ["safety-judge", "reward-judge", "refusal-judge", "truthfulness-judge"]
TINY = {"members": "tfidf+surface", "max_train_per_source": 40, "max_calib_per_source": 20, "max_test_per_source": 20, "n_boot": 100}
HEAD = ["source", "labels", "n", "accuracy [CI]", "pairwise", "length", "random", "majority", "tfidf-lr", "other", "ECE",
        "sens (tp/fn)", "spec (tn/fp)"]
LEFT = {"source", "labels"}
MD_HEAD = ("| judge | held-out source (labels) | n | accuracy [95% CI] | pairwise | length | random | majority | TF-IDF LR | "
           "other baseline | ECE | sens. (tp/fn) | spec. (tn/fp) |")
MD_RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def _ci(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def _card(name: str = "safety-judge") -> dict:
    """A card shaped like `train_judge`'s: a pointwise source with pairs (pku), a pairs-only one whose TF-IDF baseline
    ties the judge (beavertails), and one with extra baselines, one without a value and one above the judge (each
    baseline that cannot be compared comes before the one that reaches the judge, so none is skipped)."""
    return {
        "name": name, "role": "judge", "backbone": "tfidf+surface", "threshold": 0.5, "primary_heldout": "pku",
        "calibration": {"method": "platt", "n": 40, "ece_before": 0.1234, "ece_after": 0.0456},
        "trained_on": [{"source": "pku", "split": "judge-train", "n": 40}, {"source": "hh-harmless-base", "split": "judge-train pairs", "n": 12}],
        "train": {"wall_s": 1.5, "rows": 40, "calib_rows": 20},
        "heldout": {
            "pku": {"labels": "human", "n": 20, "positives": 8, "accuracy": _ci(0.85, 0.7, 0.95), "ece": 0.0871,
                    "sensitivity": {"value": 0.8, "tp": 8, "fn": 2}, "specificity": {"value": 0.9, "tn": 9, "fp": 1},
                    "pairwise_accuracy": {**_ci(0.6124, 0.5, 0.7), "n": 16},
                    "baselines": {"length": _ci(0.55, 0.3, 0.7), "random": _ci(0.45, 0.25, 0.65),
                                  "majority": {**_ci(0.6, 0.4, 0.8), "label": 0}, "tfidf_lr": _ci(0.75, 0.55, 0.9)},
                    "pairwise_baselines": {"length": _ci(0.99, 0.9, 1.0)}},  # not a baseline of the accuracy: never compared
            "beavertails": {"labels": "benchmark", "n": 120, "accuracy": _ci(0.6, 0.4333, 0.7667),
                            "pairwise_accuracy": {**_ci(0.6, 0.4333, 0.7667), "n": 120},
                            "baselines": {"length": _ci(0.55, 0.45, 0.65), "random": _ci(0.5, 0.4, 0.6), "majority": None,
                                          "tfidf_lr": _ci(0.6, 0.5, 0.7)}},
            "do-not-answer": {"labels": "human", "n": 12, "accuracy": _ci(0.75, 0.5, 0.9167), "ece": 0.2,
                              "sensitivity": {"value": 1.0, "tp": 6, "fn": 0}, "specificity": {"value": 0.5, "tn": 3, "fp": 3},
                              "baselines": {"length": _ci(0.5833, 0.3, 0.8), "random": _ci(0.4167, 0.2, 0.6),
                                            "majority": {**_ci(0.5, 0.3, 0.7), "label": 1}, "tfidf_lr": _ci(0.6667, 0.4, 0.9),
                                            "extra_rule": {"value": None}, "string_match": _ci(0.9, 0.7, 1.0)}},
        },
    }


ROWS = {  # the terminal cells of _card(), by hand
    "pku": ["pku", "human", "20", "0.850 [0.700, 0.950]", "0.612", "0.550", "0.450", "0.600", "0.750", "-", "0.087",
            "0.800 (8/2)", "0.900 (9/1)"],
    "beavertails": ["beavertails", "benchmark", "120", "0.600 [0.433, 0.767]", "-", "0.550", "0.500", "-", "0.600", "-", "-", "-", "-"],
    "do-not-answer": ["do-not-answer", "human", "12", "0.750 [0.500, 0.917]", "-", "0.583", "0.417", "0.500", "0.667",
                      "extra_rule -, string_match 0.900", "0.200", "1.000 (6/0)", "0.500 (3/3)"],
}
CAL_LINE = ("calibration: platt on 40 judge-calib rows, ECE 0.123 -> 0.046; primary held-out source: pku; threshold 0.5; "
            "trained on pku/judge-train 40, hh-harmless-base/judge-train pairs 12")
BELOW = "does NOT beat every baseline on: beavertails, do-not-answer"


def _md_rows(name: str) -> list[str]:
    return [f"| `{name}` | pku (human) | 20 | 0.850 [0.700, 0.950] | 0.612 | 0.550 | 0.450 | 0.600 | 0.750 | – | 0.087 | 0.800 (8/2) | 0.900 (9/1) |",
            f"| `{name}` | beavertails (**benchmark, not human**) | 120 | 0.600 [0.433, 0.767] | – | 0.550 | 0.500 | – | 0.600 | – | – | – | – |",
            f"| `{name}` | do-not-answer (human) | 12 | 0.750 [0.500, 0.917] | - | 0.583 | 0.417 | 0.500 | 0.667 | "
            "extra rule -, string match 0.900 | 0.200 | 1.000 (6/0) | 0.500 (3/3) |"]


def _console(monkeypatch) -> io.StringIO:
    """The module's console, captured (wide: no cell or line is wrapped)."""
    buf = io.StringIO()
    monkeypatch.setattr(judge_cli, "console", Console(file=buf, width=400, force_terminal=False, no_color=True))
    return buf


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def _table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header cells, body rows' raw cells, padding kept) of the one rich table in `lines`."""
    head = [c.strip() for c in next(ln for ln in lines if ln.startswith("┃")).strip("┃").split("┃")]
    body = [ln.strip("│").split("│") for ln in lines if ln.startswith("│")]
    return head, body


def _check_row(raw: list[str], want: list[str]) -> None:
    """The cells equal `want`; source / labels are left-justified, every other column right-justified."""
    assert [c.strip() for c in raw] == want
    for col, cell, text in zip(HEAD, raw, want):
        if col in LEFT:
            assert cell.startswith(" " + text), (col, cell)
        else:
            assert cell.endswith(text + " "), (col, cell)


# -- cells ---------------------------------------------------------------------------------------------------------


def test_ci_and_v_cells() -> None:
    assert judge_cli._ci(_ci(0.85, 0.7, 0.95)) == "0.850 [0.700, 0.950]"
    assert judge_cli._ci(_ci(1, 0.12345, 0.98765)) == "1.000 [0.123, 0.988]"
    assert judge_cli._ci(None) == "-" and judge_cli._ci({}) == "-" and judge_cli._ci({"value": None, "ci_low": 0.1}) == "-"
    assert judge_cli._ci(0.9) == "-" and judge_cli._ci([0.9, 0.8, 1.0]) == "-"  # not a block
    assert judge_cli._ci({"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}) == "0.000 [0.000, 0.000]"  # zero is a value
    assert judge_cli._v({"value": 0.6124}) == "0.612" and judge_cli._v({"value": 0}) == "0.000"
    assert judge_cli._v({"value": np.float64(0.5)}) == "0.500"
    assert judge_cli._v(None) == "-" and judge_cli._v({}) == "-" and judge_cli._v({"value": None}) == "-"
    assert judge_cli._v(0.5) == "-" and judge_cli._v("0.5") == "-"


# -- the terminal table ----------------------------------------------------------------------------------------------


def test_print_card_table_calibration_line_and_does_not_beat(monkeypatch) -> None:
    buf = _console(monkeypatch)
    judge_cli.print_card(_card())
    lines = _lines(buf.getvalue())
    assert lines[0] == "safety-judge (tfidf+surface): held-out accuracy, 95% bootstrap CIs"  # title, left-justified
    head, body = _table(lines)
    assert head == HEAD
    assert len(body) == 3
    for raw, src in zip(body, ["pku", "beavertails", "do-not-answer"]):
        _check_row(raw, ROWS[src])
    after = [ln for ln in lines if ln and ln[0] not in "┏┃┡│└┗━"][1:]  # the lines after the title and the table
    assert after == [CAL_LINE, BELOW]


def test_print_card_beats_every_baseline_prints_no_warning(monkeypatch) -> None:
    card = _card("reward-judge")
    del card["heldout"]["beavertails"], card["heldout"]["do-not-answer"]
    buf = _console(monkeypatch)
    judge_cli.print_card(card)
    out = buf.getvalue()
    assert "does NOT beat" not in out and CAL_LINE in out
    _check_row(_table(_lines(out))[1][0], ROWS["pku"])
    # one baseline a hair above the judge: the warning, naming that source only
    card["heldout"]["pku"]["baselines"]["random"]["value"] = 0.8501
    buf = _console(monkeypatch)
    judge_cli.print_card(card)
    assert _lines(buf.getvalue())[-1] == "does NOT beat every baseline on: pku"
    # an extra (other) baseline reaching the judge counts as well
    card["heldout"]["pku"]["baselines"]["random"]["value"] = 0.45
    card["heldout"]["pku"]["baselines"]["string_match"] = {"value": 0.85}
    buf = _console(monkeypatch)
    judge_cli.print_card(card)
    assert _lines(buf.getvalue())[-1] == "does NOT beat every baseline on: pku"


def test_print_card_of_a_sparse_card(monkeypatch) -> None:
    """Missing keys: '-' cells, a 'benchmark' label, the calibration line's defaults; an accuracy that is not a block is
    never compared with the baselines."""
    card = {"name": "edge-judge", "heldout": {
        "odd": {"accuracy": 0.9, "sensitivity": None, "ece": 0, "pairwise_accuracy": {"value": 0.5},
                "baselines": {"length": {"value": 0.95}}},
        "bare": {"labels": "human", "n": 3, "accuracy": {"value": None}, "baselines": None},
    }}
    buf = _console(monkeypatch)
    judge_cli.print_card(card)
    lines = _lines(buf.getvalue())
    assert lines[0] == "edge-judge (None): held-out accuracy, 95% bootstrap CIs"
    head, body = _table(lines)
    assert head == HEAD
    _check_row(body[0], ["odd", "benchmark", "-", "-", "0.500", "0.950", "-", "-", "-", "-", "-", "-", "-"])
    _check_row(body[1], ["bare", "human", "3", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"])
    assert lines[-1] == ("calibration: None on None judge-calib rows, ECE nan -> nan; primary held-out source: None; "
                         "threshold None; trained on")
    assert "does NOT beat" not in buf.getvalue()


# -- the markdown table ----------------------------------------------------------------------------------------------


def test_markdown_table_of_two_judges() -> None:
    text = judge_cli.markdown_table({"safety-judge": _card("safety-judge"), "refusal-judge": _card("refusal-judge")})
    assert text == "\n".join([MD_HEAD, MD_RULE, *_md_rows("safety-judge"), *_md_rows("refusal-judge")]) + "\n"
    assert judge_cli.markdown_table({}) == MD_HEAD + "\n" + MD_RULE + "\n"


def test_markdown_table_of_a_sparse_card() -> None:
    card = {"heldout": {"odd": {"n": 5, "accuracy": 0.9, "sensitivity": None, "ece": 0, "pairwise_accuracy": {"value": 0.5},
                                "baselines": {"length": {"value": 0.95}, "majority": {"value": None}}},
                        "bare": {"labels": "human", "n": 3, "accuracy": {"value": None}, "baselines": None,
                                 "sensitivity": {"value": 0.25, "tp": 1, "fn": 3}, "ece": np.float64(0.125)}}}
    assert judge_cli.markdown_table({"j": card}).splitlines()[2:] == [
        "| `j` | odd (**benchmark, not human**) | 5 | - | – | 0.950 | - | - | - | – | – | – | – |",
        "| `j` | bare (human) | 3 | - | - | - | - | – | - | – | 0.125 | 0.250 (1/3) | – |"]


# -- judge names and config ----------------------------------------------------------------------------------------


def test_names() -> None:
    assert judge_cli._names(None) == ALL
    assert judge_cli._names("refusal-judge") == ["refusal-judge"]
    with pytest.raises(BenchError) as ex:
        judge_cli._names("nope")
    assert str(ex.value) == "unknown judge 'nope': choose one of safety-judge, reward-judge, refusal-judge, truthfulness-judge"
    with pytest.raises(BenchError):
        judge_cli._names("")


def test_config_splits_run_and_judge_overrides(tmp_path, monkeypatch) -> None:
    cfg, judge_over = judge_cli._config("tiny", tmp_path / "d", ["seed=7", " judge.n_boot=50", "judge.members=tfidf+surface",
                                                                  "generation.max_new_tokens=5"])
    assert judge_over == {"n_boot": 50, "members": "tfidf+surface"}
    assert cfg.profile == "tiny" and cfg.seed == 7 and cfg.generation.max_new_tokens == 5
    assert cfg.data.data_dir == str(tmp_path / "d")
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    cfg, judge_over = judge_cli._config("cpu", None, None)
    assert judge_over == {} and cfg.profile == "cpu" and cfg.data.data_dir is None and cfg.seed == 0
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "env"))
    cfg, judge_over = judge_cli._config("tiny", None, [])
    assert judge_over == {} and cfg.data.data_dir == str(tmp_path / "env")
    with pytest.raises(BenchError) as ex:
        judge_cli._config("tiny", None, ["judge.seed"])
    assert str(ex.value) == "--set 'judge.seed': expected key=value, e.g. --set train.learning_rate=1e-5"


# -- the commands ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def fake(monkeypatch):
    """`cached_judge` answering at once with `_card(name)` (np floats in it, as a trained card has); its calls recorded.
    The clock: each judge takes 2.6 s of wall time."""
    calls = []

    def cached_judge(name, cfg=None, settings=None, retrain=False, data_dir=None):
        calls.append(SimpleNamespace(name=name, cfg=cfg, settings=settings, retrain=retrain, data_dir=data_dir))
        card = _card(name)
        card["threshold"] = np.float32(0.5)
        if name == "reward-judge":
            del card["train"]
        return SimpleNamespace(card=card, path=Path(f"/cache/judges/{name}-abc"))

    ticks = itertools.chain.from_iterable((100.0 * k, 100.0 * k + 2.6) for k in itertools.count(1))  # start, end
    monkeypatch.setattr(core, "cached_judge", cached_judge)
    monkeypatch.setattr(judge_cli, "time", SimpleNamespace(time=lambda: next(ticks)))
    return calls


def _bench(args: list[str]):
    from harness.cli import app

    return CliRunner().invoke(app, ["judge", *args])


def _judge_line(name: str) -> str:
    if name == "reward-judge":
        return f"{name}: None training rows, fit in None s (this command 3 s); saved /cache/judges/{name}-abc"
    return f"{name}: 40 training rows, fit in 1.5 s (this command 3 s); saved /cache/judges/{name}-abc"


def test_eval_one_judge_with_json_writes_cards_and_table(fake, tmp_path, monkeypatch) -> None:
    buf = _console(monkeypatch)
    out = tmp_path / "a" / "b" / "cards.json"
    res = _bench(["eval", "-j", "refusal-judge", "-p", "tiny", "--data-dir", str(tmp_path / "d"), "--set", "judge.n_boot=7",
                  "--set", "seed=3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert [c.name for c in fake] == ["refusal-judge"]
    call = fake[0]
    assert call.retrain is False and call.data_dir is None
    assert call.settings == dataclasses.replace(JudgeSettings(), **{**TINY, "n_boot": 7})
    assert call.cfg.profile == "tiny" and call.cfg.seed == 3 and call.cfg.data.data_dir == str(tmp_path / "d")
    want = _card("refusal-judge")
    assert out.read_text() == json.dumps({"refusal-judge": want}, indent=2)
    assert out.with_suffix(".md").read_text() == "\n".join([MD_HEAD, MD_RULE, *_md_rows("refusal-judge")]) + "\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["cards.json", "cards.md"]
    lines = _lines(buf.getvalue())
    assert lines[0] == "refusal-judge (tfidf+surface): held-out accuracy, 95% bootstrap CIs"
    _check_row(_table(lines)[1][0], ROWS["pku"])
    tail = [ln for ln in lines if ln and ln[0] not in "┏┃┡│└┗━"][1:]
    assert tail == [CAL_LINE, BELOW, _judge_line("refusal-judge"), f"cards written to {out} (table: {out.with_suffix('.md')})"]
    assert lines[-2] == ""  # a blank line after each judge
    # a second write into the same (now existing) folder
    res = _bench(["eval", "--judge", "safety-judge", "--profile", "tiny", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert list(json.loads(out.read_text())) == ["safety-judge"]


def test_train_all_judges_retrain_and_no_json(fake, tmp_path, monkeypatch) -> None:
    buf = _console(monkeypatch)
    monkeypatch.chdir(tmp_path)
    res = _bench(["train", "--retrain", "--set", "judge.seed=4"])
    assert res.exit_code == 0, res.output
    assert [c.name for c in fake] == ALL and all(c.retrain is True for c in fake)
    assert all(c.cfg.profile == "cpu" and c.settings.seed == 4 for c in fake)  # the default profile
    assert fake[1].settings == dataclasses.replace(JudgeSettings(), members="tfidf+surface+overlap", seed=4)
    text = buf.getvalue()
    titles = [ln for ln in _lines(text) if ln.endswith(": held-out accuracy, 95% bootstrap CIs")]
    assert titles == [f"{n} (tfidf+surface): held-out accuracy, 95% bootstrap CIs" for n in ALL]
    assert [ln for ln in _lines(text) if ln.endswith("-abc")] == [_judge_line(n) for n in ALL]
    assert "cards written" not in text and list(tmp_path.iterdir()) == []
    fake.clear()
    res = _bench(["train", "-j", "truthfulness-judge", "-p", "tiny"])
    assert res.exit_code == 0, res.output
    assert [(c.name, c.retrain) for c in fake] == [("truthfulness-judge", False)]
    assert fake[0].settings == dataclasses.replace(JudgeSettings(), **TINY)


def test_eval_all_judges_json_keeps_their_order(fake, tmp_path, monkeypatch) -> None:
    _console(monkeypatch)
    out = tmp_path / "cards.json"
    res = _bench(["eval", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert [(c.name, c.retrain) for c in fake] == [(n, False) for n in ALL]
    cards = {n: _card(n) for n in ALL}
    del cards["reward-judge"]["train"]
    assert out.read_text() == json.dumps(cards, indent=2)
    assert tmp_path.joinpath("cards.md").read_text() == "\n".join([MD_HEAD, MD_RULE, *(r for n in ALL for r in _md_rows(n))]) + "\n"


def test_bad_input_exits_2_with_one_line_and_trains_nothing(fake, tmp_path, capsys) -> None:
    cases = [
        (["judge", "eval", "-j", "nope"],
         "error: unknown judge 'nope': choose one of safety-judge, reward-judge, refusal-judge, truthfulness-judge"),
        (["judge", "train", "-j", "nope", "--retrain"],
         "error: unknown judge 'nope': choose one of safety-judge, reward-judge, refusal-judge, truthfulness-judge"),
        (["judge", "eval", "--set", "judge.seed"], "error: --set 'judge.seed': expected key=value, e.g. --set train.learning_rate=1e-5"),
    ]
    for argv, line in cases:
        assert entry_code(argv) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [line]
    assert entry_code(["judge", "eval", "--retrain"]) == 2  # only `train` retrains
    (line,) = capsys.readouterr().err.splitlines()  # click names the program as it was started: not pinned
    assert line.startswith("error: No such option: --retrain (see `") and line.endswith(" judge eval --help`)")
    assert fake == []


def test_commands_and_options() -> None:
    """The two commands and their options' names and defaults, as `bench judge --help` lists them."""
    import typer

    group = typer.main.get_command(judge_cli.judge_app)
    assert sorted(group.commands) == ["eval", "train"]
    opts = {c: {p.name: (sorted(p.opts), p.default) for p in group.commands[c].params} for c in ("eval", "train")}
    common = {"judge": (["--judge", "-j"], None), "profile": (["--profile", "-p"], "cpu"), "data_dir": (["--data-dir"], None),
              "overrides": (["--set"], None), "json_out": (["--json"], None)}
    assert opts["eval"] == common
    assert opts["train"] == {**common, "retrain": (["--retrain"], False)}
    res = CliRunner().invoke(judge_cli.judge_app, [])  # no command: the help, listing both
    assert "train" in res.output and "eval" in res.output and "Usage" in res.output and "Missing command" not in res.output
