"""Judge roles, thresholds, decisions and records (evaluators/judging.py) on hand-built scorers and records: the
exact behaviour, so a wrong comparison, default or filter fails. Fast; in `make mutation`'s test selection
(issue 29 item 8)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from evaluators import judging
from harness.config import DEFAULT_JUDGES
from harness.errors import BenchError


def _cfg(judges):
    return SimpleNamespace(scoring=SimpleNamespace(judges=judges))


def _scorer(card=None, **kw):
    return SimpleNamespace(card=card, fingerprint=kw.pop("fingerprint", "fp0"), **kw)


def test_judge_names_merge_the_defaults_and_turn_roles_off() -> None:
    assert judging.ROLES == tuple(DEFAULT_JUDGES)
    assert judging.judge_names(_cfg(None)) == DEFAULT_JUDGES
    got = judging.judge_names(_cfg({"safety": "my-judge", "reward": " None ", "refusal": "", "truthfulness": "OFF"}))
    assert got == {"safety": "my-judge", "reward": None, "refusal": None, "truthfulness": None}
    assert judging.judge_names(_cfg({"refusal": "off"})) == {**DEFAULT_JUDGES, "refusal": None}
    assert judging.judge_names(_cfg({"reward": "nonesuch"}))["reward"] == "nonesuch"


def test_judge_names_refuse_an_unknown_role_naming_it_and_the_roles() -> None:
    with pytest.raises(BenchError) as ex:
        judging.judge_names(_cfg({"zeta": "x", "alpha": "y", "safety": "z"}))
    msg = str(ex.value)
    assert msg == ("scoring.judges: unknown role(s) alpha, zeta; roles are safety, reward, refusal, truthfulness "
                   "(e.g. --set scoring.judges.safety=safety-judge)")


def test_cost_role() -> None:
    assert judging.cost_role("truthfulqa") == "truthfulness"
    assert judging.cost_role("pku_saferlhf") == "safety" and judging.cost_role("") == "safety"


def test_threshold_and_decisions_are_strictly_above() -> None:
    assert judging.threshold(_scorer(None)) == 0.0 and judging.threshold(SimpleNamespace()) == 0.0
    assert judging.threshold(_scorer({})) == 0.0
    calibrated = _scorer({"threshold": "0.5"})
    assert judging.threshold(calibrated) == 0.5 and isinstance(judging.threshold(calibrated), float)
    assert judging.decisions(calibrated, [0.2, 0.5, 0.51, 0.9]) == [0.0, 0.0, 1.0, 1.0]
    assert judging.decisions(_scorer(None), [-1.0, 0.0, 0.3]) == [0.0, 0.0, 1.0]


CARD = {"primary_heldout": "pku", "threshold": 0.5,
        "heldout": {"pku": {"n": 10, "accuracy": 0.8, "pairwise_accuracy": 0.7, "sensitivity": {"value": 0.75, "tp": 3, "fn": 1},
                            "specificity": {"value": 5 / 6, "tn": 5, "fp": 1}, "ece": 0.1, "other": 1},
                    "beaver": {"n": 4, "accuracy": 0.5}}}


def test_heldout_picks_the_primary_source_or_the_only_one() -> None:
    assert judging.heldout(_scorer(CARD)) == {"source": "pku", **CARD["heldout"]["pku"]}
    only = {"heldout": {"beaver": {"n": 4}}}
    assert judging.heldout(_scorer(only)) == {"source": "beaver", "n": 4}
    two_no_primary = {"heldout": CARD["heldout"]}
    assert judging.heldout(_scorer(two_no_primary)) is None
    assert judging.heldout(_scorer({"primary_heldout": "gone", "heldout": CARD["heldout"]})) is None
    assert judging.heldout(_scorer({"heldout": {"x": 3}})) is None  # not a block
    assert judging.heldout(_scorer(None)) is None and judging.heldout(_scorer({})) is None
    assert judging.heldout(SimpleNamespace()) is None  # a scorer without a card


def test_confusion_counts_of_the_primary_source() -> None:
    assert judging.confusion_counts(_scorer(CARD)) == (3, 1, 5, 1)
    no_counts = {"heldout": {"a": {"sensitivity": {"value": 0.5}, "specificity": {"tn": 1, "fp": 0}}}}
    assert judging.confusion_counts(_scorer(no_counts)) is None
    bad = {"heldout": {"a": {"sensitivity": {"tp": "x", "fn": 1}, "specificity": {"tn": 1, "fp": 0}}}}
    assert judging.confusion_counts(_scorer(bad)) is None
    none_block = {"heldout": {"a": {"sensitivity": None, "specificity": None}}}
    assert judging.confusion_counts(_scorer(none_block)) is None
    assert judging.confusion_counts(_scorer(None)) is None


def test_describe_keeps_the_listed_heldout_fields_only() -> None:
    judge = _scorer(CARD, role="judge", kind="classifier", fingerprint="abc")
    assert judging.describe("safety-judge", judge) == {
        "name": "safety-judge", "fingerprint": "abc", "role": "judge", "kind": "classifier", "threshold": 0.5,
        "heldout": {"source": "pku", "n": 10, "accuracy": 0.8, "pairwise_accuracy": 0.7, "sensitivity": CARD["heldout"]["pku"]["sensitivity"],
                    "specificity": CARD["heldout"]["pku"]["specificity"], "ece": 0.1}}
    plain = judging.describe("rm", _scorer(None, fingerprint="f"))
    assert plain == {"name": "rm", "fingerprint": "f", "role": "annotator", "kind": None, "threshold": 0.0, "heldout": None}


def test_same_and_self_judged_need_name_and_fingerprint() -> None:
    j = {"name": "a", "fingerprint": "1"}
    assert judging.same(j, dict(j)) is True
    assert judging.same(j, {"name": "a", "fingerprint": "2"}) is False
    assert judging.same(j, {"name": "b", "fingerprint": "1"}) is False
    assert judging.same(None, j) is False and judging.same(j, None) is False and judging.same({}, {}) is False
    judges = {"safety": j, "reward": {"name": "r", "fingerprint": "9"}, "refusal": {"name": "z", "fingerprint": "1"}}
    annotators = {"cost": {"name": "a", "fingerprint": "1"}, "reward": {"name": "r", "fingerprint": "8"}}
    assert judging.self_judged(judges, annotators) == ["safety"]
    both = {"reward": {"name": "r", "fingerprint": "9"}, "cost": j}
    assert judging.self_judged(judges, both) == ["reward", "safety"]
    assert judging.self_judged(None, annotators) == [] and judging.self_judged(judges, None) == []


def test_record_judges_new_and_old_schema() -> None:
    new = {"judges": {"safety": {"name": "j"}}, "annotators": {"cost": {"name": "c"}}, "scorers": {"x": {}}}
    assert judging.record_judges(new) == ({"safety": {"name": "j"}}, {"cost": {"name": "c"}})
    assert judging.record_judges({"judges": None, "annotators": None}) == ({}, {})
    assert judging.record_judges({"judges": {"s": {}}}) == ({"s": {}}, {})
    old = {"dataset": "truthfulqa", "scorers": {"cost": {"name": "c"}, "reward": {"name": "r"}, "note": "text"}}
    assert judging.record_judges(old) == ({"truthfulness": {"name": "c"}, "reward": {"name": "r"}},
                                          {"cost": {"name": "c"}, "reward": {"name": "r"}})
    old_pku = {"scorers": {"cost": {"name": "c"}}}
    assert judging.record_judges(old_pku) == ({"safety": {"name": "c"}}, {"cost": {"name": "c"}})
    assert judging.record_judges({}) == ({}, {})
