"""Harmful-request compliance (issue 25 item 2): the declared metric on hand-built decisions, the harmful prompt set
(BeaverTails-Evaluation + Safe-RLHF red-team) kept apart from every judge's training rows, and the refusal judge's
Do-Not-Answer check. The tiny run's record carrying the metric is checked in tests/test_runs.py."""

from __future__ import annotations

import pytest

from harness.config import load_config


def test_harmful_compliance_is_the_share_not_refused_with_its_bootstrap_ci_overall_and_per_category():
    from evaluators.metrics import get_metric, higher_is_better, refusal_set_metrics

    # 4 harmful requests: the refusal judge refused only the last of category a; both of b complied
    refused, cats = [0, 0, 1, 0], ["a", "a", "a", "b"]
    items: dict[str, list[float]] = {}
    block = refusal_set_metrics("harmful", refused, cats, n_boot=2000, seed=0, items=items)
    hc = block["harmful_compliance"]
    assert hc["value"] == pytest.approx(0.75) and block["n_prompts"] == 4
    # percentile bootstrap of the mean of (1, 1, 0, 1): P(mean = 0) = 0.25^4 < 2.5% < P(mean <= 1/4) = 0.051, and
    # P(mean = 1) = 0.75^4 = 0.32 > 2.5%: the 95% interval is [0.25, 1.0]
    assert (hc["ci_low"], hc["ci_high"]) == (pytest.approx(0.25), pytest.approx(1.0))
    assert items == {"harmful_compliance": [1.0, 1.0, 0.0, 1.0]}  # the per-item values the leaderboard pools over seeds
    per = block["per_category"]
    assert per["a"]["n"] == 3 and per["a"]["harmful_compliance"]["value"] == pytest.approx(2 / 3)
    assert per["b"] == {"n": 1, "harmful_compliance": {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}}
    m = get_metric("harmful_compliance")  # declared once: lower is better, a bounded rate, at results.harmful
    assert m.path == ("harmful", "harmful_compliance") and m.bounded and higher_is_better()["harmful_compliance"] is False
    with pytest.raises(ValueError, match="categories"):
        refusal_set_metrics("harmful", refused, cats[:3], n_boot=10, seed=0)


def _cfg(data_dir, n: int):
    return load_config("tiny", [f"data.data_dir={data_dir}", f"data.max_harmful_prompts={n}"])


def test_harmful_prompt_set_is_a_stable_hashed_subset_disjoint_from_every_judges_training_prompts(data_dir):
    from harness.datasets.common import normalize_prompt
    from harness.datasets.judge_data import judge_training_prompts
    from harness.datasets.prompt_sets import load_harmful_prompts

    every = load_harmful_prompts(_cfg(data_dir, 0))
    assert len(every) == 783 and len({p.prompt for p in every}) == 783  # 700 BeaverTails-Evaluation + 83 red-team
    assert sum(p.category.startswith("beavertails/") for p in every) == 700
    assert len({p.category for p in every}) == 14 + 8
    trained = judge_training_prompts(data_dir)
    assert len(trained) > 10_000 and not {normalize_prompt(p.prompt) for p in every} & trained
    sub = [p.prompt for p in load_harmful_prompts(_cfg(data_dir, 30))]
    assert sub == [p.prompt for p in load_harmful_prompts(_cfg(data_dir, 31))][:30]  # a prefix of one fixed order
    assert len({p.split("/")[0] for p in (x.category for x in load_harmful_prompts(_cfg(data_dir, 30)))}) == 2


def test_a_harmful_prompt_a_judge_trains_on_is_dropped(data_dir, monkeypatch):
    """Hand-built: pretend a judge trains on one BeaverTails prompt; the loader must leave it out."""
    from harness.datasets import judge_data
    from harness.datasets.common import normalize_prompt
    from harness.datasets.prompt_sets import load_beavertails, load_harmful_prompts

    cfg = _cfg(data_dir, 0)
    leaked = load_beavertails(cfg).prompts["eval"][7].prompt
    monkeypatch.setattr(judge_data, "judge_training_prompts", lambda _d: {normalize_prompt(leaked)})
    got = [p.prompt for p in load_harmful_prompts(cfg)]
    assert leaked not in got and len(got) == 782


def test_do_not_answer_action_labels_map_only_refuse_and_comply(data_dir):
    from harness.datasets.judge_data import DNA_ACTION_REFUSAL, do_not_answer_refusals

    rows = do_not_answer_refusals(data_dir)
    # README counts over the 6 models: action 0 (refuses) and 5 (follows the instruction); 1-4 carry no refusal label
    assert sum(r.label for r in rows) > 1000 and 100 < sum(1 - r.label for r in rows) < 300
    assert DNA_ACTION_REFUSAL == {0: 1, 5: 0} and {r.split for r in rows} == {"judge-test"}
    refusals = [r.response for r in rows if r.label == 1]
    assert sum(r.lower().lstrip().startswith(("i'm sorry", "i am sorry", "sorry", "i cannot", "i can't", "as an ai")) for r in refusals) > len(refusals) / 2
