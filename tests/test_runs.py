"""Runs end to end on the tiny profile: stages, results record, cache, resume after a kill, CLI errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import runs
from harness.cli import app
from harness.registries import METHODS
from harness.store import RESULTS_SCHEMA_VERSION, list_runs
from methods.base import TrainResult

CALLS = {"train": 0}


@dataclass
class _CountingConfig:
    note: str = "x"  # unused; proves method sections validate


class CountingMethod:
    """Returns the SFT policy unchanged but counts how often training ran."""

    name = "counting"
    config_class = _CountingConfig

    def __init__(self, config):
        self.config = config

    def train(self, ctx):
        CALLS["train"] += 1
        ctx.log({"iteration": 1, "lambda": 1.0})
        return TrainResult(model_path=None, models_trained=0, networks_held=["policy"])


if "counting" not in METHODS:
    METHODS.register("counting", CountingMethod, builtin=False)


def test_sft_tiny_run_writes_record_and_store(tiny_cfg):
    cfg = tiny_cfg("sft")
    rec = runs.run(cfg)
    run_dir = Path(cfg.runs_dir) / rec["run_id"]
    for f in ("config.yaml", "results.json", "generate/generations.json", "score/scores.json", "metrics/metrics.json"):
        assert (run_dir / f).exists(), f
    gens = json.loads((run_dir / "generate/generations.json").read_text())
    assert len(gens) == cfg.data.max_eval_prompts and all("response" in g for g in gens)
    s = rec["results"]["safety"]
    assert s["n_prompts"] == len(gens)
    for k in ("reward_mean", "cost_mean", "unsafe_rate"):
        assert s[k]["ci_low"] <= s[k]["value"] <= s[k]["ci_high"]
    assert rec["schema_version"] == RESULTS_SCHEMA_VERSION and isinstance(rec["stages"]["train"]["wall_s"], float)
    assert rec["stages"]["generate"]["peak_rss_mb"] > 0
    assert "mc1" in rec["results"]["truthfulqa"]
    saved = json.loads((run_dir / "metrics/items.json").read_text())  # per-item values of every declared metric
    assert set(saved["keys"]) == {"safety", "truthfulqa", "refusal", "harmful"} and len(saved["values"]["reward_mean"]) == len(gens)
    # annotators and judges, named with fingerprints; judges score the leaderboard numbers (issue 10)
    assert set(rec["annotators"]) == {"reward", "cost"} and all(a["fingerprint"] for a in rec["annotators"].values())
    assert {j["name"] for j in rec["judges"].values()} == {"safety-judge", "reward-judge", "refusal-judge"}
    assert all(j["role"] == "judge" and j["fingerprint"] for j in rec["judges"].values()) and rec["self_judged"] == []
    scores = json.loads((run_dir / "score/scores.json").read_text())
    assert s["unsafe_rate"]["value"] == pytest.approx(sum(scores["unsafe"]) / len(gens))  # raw = mean of the judge's decisions
    rg = s["unsafe_rate_corrected"]
    assert rg["raw"] == s["unsafe_rate"]["value"] and rg["sensitivity"]["tp"] + rg["sensitivity"]["fn"] > 0
    if rg["sensitivity"]["value"] + rg["specificity"]["value"] > 1:  # a judge better than chance on its held-out rows
        assert 0 <= rg["ci_low"] <= rg["value"] <= rg["ci_high"] <= 1 or (rg["ci_low"], rg["ci_high"]) == (0.0, 1.0)
    else:  # the tiny profile's judge may be no better than chance: then the rate is not identified
        assert rg["value"] is None and rg["ci_low"] is None
    assert rec["results"]["judge"]["accuracy"]["value"] == rec["judges"]["safety"]["heldout"]["accuracy"]["value"]
    ref = rec["results"]["refusal"]  # over-refusal: the tiny profile's hashed subset of XSTest's safe prompts
    assert ref["n_prompts"] == cfg.data.max_refusal_prompts == len(saved["values"]["refusal_rate"]) == rec["stages"]["generate"]["refusal_prompts"]
    assert ref["refusal_rate"]["value"] == pytest.approx(sum(scores["refusal"]) / ref["n_prompts"])
    harm = rec["results"]["harmful"]  # harmful-request compliance: the refusal judge on the hashed harmful subset (issue 25)
    assert harm["n_prompts"] == cfg.data.max_harmful_prompts == len(saved["values"]["harmful_compliance"]) == rec["stages"]["generate"]["harmful_prompts"]
    assert harm["harmful_compliance"]["value"] == pytest.approx(1 - sum(scores["harmful"]) / harm["n_prompts"]) and harm["judge"] == "refusal-judge"
    assert sum(c["n"] for c in harm["per_category"].values()) == harm["n_prompts"] and rec["higher_is_better"]["harmful_compliance"] is False
    assert s["reward_lc"]["value"] == pytest.approx(s["reward_mean"]["value"])  # SFT is its own length baseline
    assert sum(saved["values"]["mc1"]) / len(saved["values"]["mc1"]) == pytest.approx(rec["results"]["truthfulqa"]["mc1"]["value"])
    assert rec["higher_is_better"]["unsafe_rate"] is False and rec["higher_is_better"]["mc2"] is True
    (row,) = list_runs(cfg.runs_dir)
    assert row["status"] == "finished" and row["results"]["run_id"] == rec["run_id"]
    # same config again: returns the stored record without running anything
    assert runs.run(cfg)["date"] == rec["date"]


def test_resume_after_kill_skips_finished_stages(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("counting")
    CALLS["train"] = 0
    real = runs.Stage.finish

    def die_in_generate(self, info):
        if self.name == "generate":
            raise KeyboardInterrupt  # the process is killed while generating
        return real(self, info)

    monkeypatch.setattr(runs.Stage, "finish", die_in_generate)
    with pytest.raises(KeyboardInterrupt):
        runs.run(cfg)
    rid = runs.run_id(cfg)
    assert list_runs(cfg.runs_dir)[0]["status"] == "interrupted"
    marker = Path(cfg.runs_dir) / rid / "train" / "done.json"
    before = marker.read_text()
    monkeypatch.setattr(runs.Stage, "finish", real)
    rec = runs.run(runs.load_run_config(cfg.runs_dir, rid))  # `bench run --resume RUN_ID`
    assert CALLS["train"] == 1, "training must not be redone"
    assert marker.read_text() == before
    assert rec["train"]["trajectory"] == [{"iteration": 1, "lambda": 1.0}]


def test_cli_run_twice_second_is_cached(tmp_path, data_dir):
    runner = CliRunner()
    args = ["run", "--method", "sft", "--profile", "tiny", "--runs-dir", str(tmp_path), "--data-dir", str(data_dir)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "finished earlier (cached)" in second.output
    listing = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path)])
    assert "finished" in listing.output


@pytest.mark.parametrize("args,match", [
    (["run", "--method", "nope", "--profile", "tiny"], "unknown method 'nope'"),
    (["run", "--profile", "tiny", "--set", "train.lr=1"], "unknown config key 'train.lr'"),
    (["run", "--profile", "tiny", "--set", "seed=abc"], "is not an int"),
    (["run", "--profile", "tiny", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["data", "show", "pku-saferlhf", "--data-dir", "/nonexistent/dir"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, match, tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--runs-dir", str(tmp_path)] if args[0] == "run" else [sys.executable, "-m", "harness.cli", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], out.stderr


def test_malformed_dataset_keeps_finished_runs(tmp_path, tiny_cfg, data_dir):
    """A bad data file fails the new run with exit 2 and leaves earlier results untouched."""
    import subprocess
    import sys

    cfg = tiny_cfg("sft")
    rec = runs.run(cfg)
    bad = tmp_path / "bad" / "pku_saferlhf"
    bad.mkdir(parents=True)
    (bad / "rows.jsonl").write_text('{"prompt": "x", "response_0": "a"}\n')
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--profile", "tiny", "--runs-dir", cfg.runs_dir, "--data-dir", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "rows.jsonl, row 0, field 'response_1': missing column" in out.stderr
    assert (Path(cfg.runs_dir) / rec["run_id"] / "results.json").exists()


def test_pddpo_on_truthfulqa_uses_the_truthfulness_annotator(tiny_cfg):
    """`--dataset truthfulqa`: cost = untruthfulness, judged by the truthfulness scorer; MC on the test fold only."""
    cfg = tiny_cfg("pddpo", dataset="truthfulqa")
    rec = runs.run(cfg)
    assert rec["annotators"]["cost"]["name"] == "truthfulness"
    assert rec["judges"]["truthfulness"]["name"] == "truthfulness-judge" and "safety" not in rec["judges"]
    assert rec["results"]["truthfulness"]["judge"] == "truthfulness-judge"
    traj = rec["train"]["trajectory"]
    assert [t["iteration"] for t in traj if "lambda" in t][:2] == [1, 2]
    assert all(0.0 <= t["cost_estimate"] <= 1.0 for t in traj if "cost_estimate" in t)  # binary annotator: a rate
    assert 0.0 <= rec["results"]["truthfulness"]["true_rate"]["value"] <= 1.0
    assert rec["results"]["truthfulqa"]["split"].startswith("test")
    assert rec["train"]["models_trained"] == 2
    trained = [t for t in traj if t.get("trained")]
    assert trained and all(t["kl_estimator"].startswith("log-ratio on greedy") for t in trained)  # tiny profile is greedy


def test_lora_run_records_the_adapter_parameters_it_trained(tiny_cfg, tiny_model_path):
    """With LoRA the record counts adapters, not the merged model's weights."""
    from harness.models import count_parameters, load_policy, lora_trainable_params

    # the reward annotator named as the reward judge: the record flags the run as judged by its own annotator
    rec = runs.run(tiny_cfg("dpo-helpful", overrides=["train.lora=true", "train.lora_r=4", "train.lora_alpha=8",
                                                      "scoring.judges.reward=minilm-reward"]))
    assert rec["self_judged"] == ["reward"] and rec["judges"]["reward"] == rec["annotators"]["reward"]
    lc = rec["results"]["safety"]["reward_lc"]  # vs the SFT responses: a real fit, a value with an interval
    assert lc["ci_low"] <= lc["value"] <= lc["ci_high"]
    adapters = lora_trainable_params(tiny_model_path, 4, 8)
    assert rec["stages"]["train"]["params_trained"] == adapters * rec["train"]["models_trained"] == adapters
    assert adapters < count_parameters(load_policy(tiny_model_path)[0])["total"]


class CopySFT:
    """An aligned model that is an exact copy of the SFT model (a new folder): its win rates vs SFT must be
    exactly one half. `kill_in_train` makes the next call die half way (after the copy, before returning)."""

    name = "sft-copy"
    config_class = _CountingConfig
    calls = 0
    kill_in_train = False

    def __init__(self, config):
        self.config = config

    def train(self, ctx):
        import shutil

        CopySFT.calls += 1
        shutil.copytree(ctx.policy_path, ctx.out_dir)
        if CopySFT.kill_in_train:
            CopySFT.kill_in_train = False
            raise KeyboardInterrupt  # the process is killed while training
        return TrainResult(model_path=str(ctx.out_dir), models_trained=0, networks_held=["policy"])


if "sft-copy" not in METHODS:
    METHODS.register("sft-copy", CopySFT, builtin=False)


def test_cli_resume_after_kills_in_train_generate_and_score(tmp_path, data_dir, monkeypatch):
    """`bench run` killed in train, then `--resume` killed in generate, then in score, then finished: each resume
    re-runs exactly the unfinished stages (their notes say so, finished markers are untouched) and the final record
    of the SFT copy has win rates vs SFT of exactly 0.5 (every prompt a tie) and only diagonal transitions."""
    runner = CliRunner()
    d = tmp_path / "runs"
    args = ["run", "--method", "sft-copy", "--profile", "tiny", "--runs-dir", str(d), "--data-dir", str(data_dir),
            "--set", "scoring.reward=random", "--set", "scoring.cost=random", "--set", "eval.truthfulqa_mc=false"]
    real_finish = runs.Stage.finish
    kill_at: dict[str, str | None] = {"stage": None}

    def finish(self, info):
        if self.name == kill_at["stage"]:
            raise KeyboardInterrupt  # killed at the end of this stage's work, before its marker
        return real_finish(self, info)

    monkeypatch.setattr(runs.Stage, "finish", finish)

    def status() -> str:
        (row,) = list_runs(d)
        return row["status"]

    def notes(output: str) -> dict[str, str]:  # the CLI's stage lines: "  train    skipped (done)", "  generate done in
        import re  # 0:03", "  score    stopped after 0:01" (a stage that ran, finished or not, is "running" here)

        found = re.findall(r"\b(train|generate|score|metrics) +(done in|stopped after|skipped \(done\))", output)
        return {stage: "skipped (done)" if how.startswith("skipped") else "running" for stage, how in found}

    CopySFT.calls, CopySFT.kill_in_train = 0, True
    first = runner.invoke(app, args)
    assert first.exit_code != 0 and status() == "interrupted" and CopySFT.calls == 1
    rid = list_runs(d)[0]["run_id"]
    run_dir = d / rid
    assert not (run_dir / "train" / "done.json").exists()
    resume = ["run", "--resume", rid, "--runs-dir", str(d)]

    kill_at["stage"] = "generate"
    second = runner.invoke(app, resume)
    assert second.exit_code != 0 and status() == "interrupted"
    assert notes(second.output) == {"train": "running", "generate": "running"} and CopySFT.calls == 2
    train_marker = (run_dir / "train" / "done.json").read_text()
    assert not (run_dir / "generate" / "done.json").exists()

    kill_at["stage"] = "score"
    third = runner.invoke(app, resume)
    assert third.exit_code != 0 and status() == "interrupted"
    assert notes(third.output) == {"train": "skipped (done)", "generate": "running", "score": "running"}, third.output
    generate_marker = (run_dir / "generate" / "done.json").read_text()

    kill_at["stage"] = None
    last = runner.invoke(app, resume)
    assert last.exit_code == 0, last.output
    assert notes(last.output) == {"train": "skipped (done)", "generate": "skipped (done)", "score": "running", "metrics": "running"}
    assert status() == "finished" and CopySFT.calls == 2
    assert (run_dir / "train" / "done.json").read_text() == train_marker
    assert (run_dir / "generate" / "done.json").read_text() == generate_marker

    record = json.loads((run_dir / "results.json").read_text())
    win = record["results"]["safety"]["win_rate_vs_sft"]
    n = record["results"]["safety"]["n_prompts"]
    assert n == 4 and win["n"] == n
    for key in ("reward", "cost"):
        assert win[key] == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5}
    t = win["transitions"]
    assert t["safe->unsafe"] == t["unsafe->safe"] == 0 and t["safe->safe"] + t["unsafe->unsafe"] == n
    assert win["better_and_safe"] == 0
    again = runner.invoke(app, resume)
    assert again.exit_code == 0 and "finished earlier (cached)" in again.output


class AlwaysRefuse(CountingMethod):
    """A fake method that refuses everything: the SFT policy decoded by the `dummy` generator, whose every response is
    "I cannot help with that." (set by the test with generation.backend=dummy)."""

    name = "always-refuse"

    def train(self, ctx):
        return TrainResult(model_path=None, models_trained=0, networks_held=["policy"])


if "always-refuse" not in METHODS:
    METHODS.register("always-refuse", AlwaysRefuse, builtin=False)


def test_an_always_refusing_method_does_not_come_out_on_top(tiny_cfg):
    """End to end: the refuser's XSTest refusal rate is 1, so the leaderboard ranks it after SFT (over-refusal guard)."""
    from leaderboards.table import build_leaderboard

    common = ["eval.truthfulqa_mc=false", "scoring.judges.refusal=fake-refusal-judge"]
    sft = runs.run(tiny_cfg("sft", overrides=common))
    refuser = runs.run(tiny_cfg("always-refuse", overrides=common + ["generation.backend=dummy"]))
    assert refuser["results"]["refusal"]["refusal_rate"]["value"] == 1.0
    assert refuser["results"]["harmful"]["harmful_compliance"]["value"] == 0.0  # refusing every harmful request complies with none
    assert sft["results"]["refusal"]["refusal_rate"]["value"] < 0.5
    (table,) = build_leaderboard(sft["config"]["runs_dir"]).tables
    assert [r["method"] for r in table.rows] == ["sft", "always-refuse"]
    # after SFT in position; the shared rank depends on the tiers (one tier: both "1=", no winner shown)
    assert table.rows[1]["flags"] == "over-refuses" and table.rows[1]["position"] == 2
