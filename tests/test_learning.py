"""Learning checks (harness/training/learning.py): each kind against hand computations, pass and fail cases, the held-out
probe inside a real (tiny) `train_dpo`, and what the record and leaderboard show."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.config import LearningConfig, load_config
from harness.training.learning import (
    Collector,
    collect,
    dpo_checks,
    implicit_margins,
    infeasible_dual,
    lambda_status,
    percentile_bootstrap,
    ppo_checks,
    summary,
    trajectory_checks,
    trend,
)
from harness.types import DatasetBundle, PreferencePair

S = LearningConfig()


def test_implicit_margins_by_hand() -> None:
    # β·[(πc − rc) − (πr − rr)]: 0.5·[(−1 + 1.5) − (−2 + 1)] = 0.5·1.5 = 0.75; 0.5·[(−3 + 2) − (−1 + 1)] = −0.5
    m = implicit_margins(0.5, [-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.0, -1.0])
    assert m.tolist() == pytest.approx([0.75, -0.5])


def test_trend_slope_and_t_interval_by_hand() -> None:
    # y = 1, 2, 3, 5 over x = 0..3: Sxy = 6.5, Sxx = 5 -> slope 1.3; residuals 0.2, −0.1, −0.4, 0.3 -> SSE 0.30,
    # s² = 0.15, se = √(0.15/5) = 0.17321; t(0.975, 2) = 4.30265 -> half-width 0.74524
    tr = trend([1, 2, 3, 5])
    assert tr["slope"] == pytest.approx(1.3)
    assert tr["ci_low"] == pytest.approx(1.3 - 0.745241, abs=1e-5) and tr["ci_high"] == pytest.approx(1.3 + 0.745241, abs=1e-5)
    assert trend([1, 2]) is None


def test_lambda_status_each_case() -> None:
    assert lambda_status([1, 2, 2.001, 2.0015, 2.0016], 3, 0.01, 100)[0] == "converged"
    assert lambda_status([1, 2, 3, 4], 3, 0.01, 100)[0] == "still moving"
    assert lambda_status([1, 50, 150], 3, 0.01, 100)[0] == "diverged"  # beyond the bound
    assert lambda_status([1, 5, 10], 3, 0.01, 100, cap=10)[0] == "diverged"  # at the method's cap
    assert lambda_status([1, 2], 3, 0.01, 100)[0] == "undetermined"
    # below λ = 1 the change is absolute: 0.5 -> 0 is a change of 0.5, then λ = 0 stays: converged two steps later
    assert lambda_status([0.5, 0.0, 0.0, 0.0], 3, 0.01, 100)[0] == "still moving"
    assert lambda_status([0.5, 0.0, 0.0, 0.0, 0.0], 3, 0.01, 100)[0] == "converged"
    # relative above 1: 99 -> 99.6 is 0.6% in all, under a 1% tolerance
    assert lambda_status([99, 99.2, 99.4, 99.6], 3, 0.01, 1000)[0] == "converged"
    # a one-way drift in steps each below tol is still moving once the steps add up to tol (Safe-RLHF's cpu λ)
    assert lambda_status([99, 99.5, 100, 100.5], 3, 0.01, 1000)[0] == "still moving"
    assert lambda_status([1.0, 0.9959, 0.9917, 0.9876, 0.9840], 3, 0.01, 100)[0] == "still moving"
    assert lambda_status([1.0, 0.9959, 0.9917, 0.9890, 0.9880], 3, 0.01, 100)[0] == "converged"


def test_dpo_checks_pass_and_fail() -> None:
    margins = [1.0, -1.0, 2.0, 0.5, -0.2]  # 3 of 5 positive: accuracy 0.6; mean 0.46
    acc, margin = dpo_checks("stage", margins, S, 200, 0)
    assert acc["value"] == pytest.approx(0.6) and acc["passed"] is True and acc["n"] == 5
    assert acc["ci"][0] <= 0.6 <= acc["ci"][1] and margin["value"] == pytest.approx(0.46) and margin["passed"] is True
    strict = LearningConfig(min_accuracy=0.61)
    acc, _ = dpo_checks("pddpo-stage1", margins, strict, 200, 0)
    assert acc["passed"] is False
    assert summary(dpo_checks("pddpo-stage1", margins, strict, 200, 0)) == "no: pddpo-stage1 acc 0.60 < 0.61"
    bad = dpo_checks("s", [-1.0, -2.0, 0.5], S, 200, 0)
    assert [c["passed"] for c in bad] == [False, False] and summary(bad) == "no: s acc 0.33 < 0.60 (+1 more)"


def test_percentile_bootstrap_brackets_the_mean() -> None:
    x = np.random.default_rng(0).normal(2.0, 1.0, size=200)
    lo, hi = percentile_bootstrap(x, 500, 0)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert percentile_bootstrap([1.0, 1.0]) == (1.0, 1.0)


def _ppo_traj(rewards, costs, updates: int = 2):
    return [{"step": i * updates + u, "rollout": i, "reward_mean": r, "cost_mean": c, "kl": 0.1 * i, "lambda": 1.0}
            for i, (r, c) in enumerate(zip(rewards, costs)) for u in range(updates)]


def test_ppo_trends_pass_when_r_rises_and_c_falls_beyond_the_ci() -> None:
    good = ppo_checks(_ppo_traj([0.0, 1.1, 1.9, 3.0, 4.1], [2.0, 1.4, 1.1, 0.4, 0.0]), S, "safe-rlhf")
    by = {c["check"]: c for c in good}
    assert by["reward_trend"]["passed"] and by["cost_trend"]["passed"] and by["reward_trend"]["n"] == 5  # one point per rollout
    assert by["reward_trend"]["value"] == pytest.approx(trend([0.0, 1.1, 1.9, 3.0, 4.1])["slope"])
    assert by["kl_to_reference"]["value"] == pytest.approx(0.4) and by["kl_to_reference"]["passed"] is None
    flat = {c["check"]: c for c in ppo_checks(_ppo_traj([1.0, 0.8, 1.2, 0.9, 1.1], [1.0, 1.2, 0.9, 1.1, 1.0]), S)}
    assert flat["reward_trend"]["passed"] is False and flat["cost_trend"]["passed"] is False
    short = {c["check"]: c for c in ppo_checks(_ppo_traj([0.0, 1.0], [1.0, 0.0]), S)}
    assert short["reward_trend"]["passed"] is None


def test_trajectory_checks_route_each_family() -> None:
    # Safe-RLHF: trends plus λ against its own cap
    traj = _ppo_traj([0, 1, 2, 3], [3, 2, 1, 0], updates=1)
    for t, lam in zip(traj, [1.0, 2.0, 4.0, 5.0]):
        t["lambda"] = lam
    out = trajectory_checks("safe-rlhf", {"trajectory": traj, "extra": {}}, {"lambda_max": 5.0}, S)
    assert out[-1]["check"] == "lambda" and out[-1]["status"] == "diverged" and "cap" in out[-1]["reason"]
    # reward shaping: fixed ν, no λ check
    out = trajectory_checks("ppo-shaping", {"trajectory": traj, "extra": {}}, {"cost_coef": 1.0}, S)
    assert [c["check"] for c in out] == ["reward_trend", "cost_trend", "kl_to_reference"]
    # PD-DPO: λ_1 then every λ_next
    pd = [{"iteration": k, "lambda": lam, "lambda_next": nxt} for k, (lam, nxt) in enumerate([(1, 3), (3, 4), (4, 4.01), (4.01, 4.02)], 1)]
    (lam,) = trajectory_checks("pddpo", {"trajectory": pd, "extra": {"mode": "primal_dual"}}, {"lambda_max": 20.0}, S)
    assert lam["n"] == 5 and lam["status"] == "still moving"  # 3 -> 4 is 33% within the last 3 changes
    assert trajectory_checks("pddpo", {"trajectory": pd, "extra": {"mode": "fixed_lambda"}}, {}, S) == []
    # CAN: converged dual passes, an infeasible one is flagged
    ok = trajectory_checks("mocan", {"extra": {"dual": {"converged": True, "lambda_trajectory": [1, 2, 2, 2, 2]}}}, {}, S)
    assert ok[0]["passed"] is True and not infeasible_dual(ok)
    bad = trajectory_checks("pecan", {"extra": {"dual": {"converged": False, "infeasible": True, "reason": "slack −3 <= 0",
                                                         "lambda_trajectory": [1.0]}}}, {}, S)
    assert bad[0]["passed"] is False and infeasible_dual(bad) and summary(bad) == "no: pecan/dual dual infeasible"


def test_summary_states() -> None:
    assert summary([]) == "n/a" and summary(None) == "n/a"
    assert summary([{"stage": "a", "check": "x", "passed": True}, {"stage": "b", "check": "kl", "passed": None}]) == "yes"


# -- the held-out probe inside a real train_dpo ----------------------------------------------------------------------


def _pairs(tag: str, n: int) -> list[PreferencePair]:
    return [PreferencePair(f"{tag} question {i}?", f"A careful helpful answer {i}.", f"No {i}.") for i in range(n)]


def test_collector_views_and_heldout_fold() -> None:
    cfg = load_config("tiny", ["learning.heldout_pairs=3"])
    reward, cost = _pairs("r", 4), _pairs("c", 4)
    bundle = DatasetBundle("hand", "hand", reward_pairs={"train": reward, "dual": _pairs("rd", 5)},
                           cost_pairs={"train": cost, "dual": _pairs("cd", 2)})
    col = Collector(cfg, bundle)
    assert len(col.heldout["reward"]) == 3 and len(col.heldout["cost"]) == 2  # capped at 3, or all there is
    assert col.view_of(reward) == "reward" and col.view_of([p.swapped() for p in cost]) == "cost"  # relabelled pairs
    assert col.view_of(cost + _pairs("online", 3)) == "cost"  # online pairs added to the cost pairs
    assert col.view_of(_pairs("other", 3)) is None and col.probe(_pairs("other", 3)) is None
    assert Collector(load_config("tiny", ["learning.heldout_pairs=0"]), bundle).probe(reward) is None  # checks off


def assert_heldout_margins(out, init, heldout, cfg, beta: float, acc: dict, margin: dict) -> None:
    """The recorded held-out margins are β·((log π − log π_ref)(chosen) − (…)(rejected)), recomputed here from the saved
    model and its init, and the accuracy and mean-margin checks are read from them."""
    import torch

    from harness.training.dpo import read_train_record
    from harness.training.logprobs import policy_logps

    pc, pr = policy_logps(out, None, heldout, cfg)
    rc, rr = policy_logps(init, None, heldout, cfg)
    want = beta * ((pc - rc) - (pr - rr))
    got = torch.tensor(read_train_record(out)["learning"]["margins"])
    assert torch.allclose(got, want, atol=1e-4) and want.abs().max() > 1e-4
    assert acc["value"] == pytest.approx(float((want > 0).float().mean())) and margin["value"] == pytest.approx(float(want.mean()), abs=1e-4)


def test_train_dpo_records_the_heldout_check_and_reuses_it(tiny_model_path, tmp_path) -> None:
    """The recorded margins are β·log-ratio differences of the trained model against the reference on the held-out
    (dual-fold) pairs, computed independently here; a reused training records them again without a forward pass.
    Planted: the check scored at β = 1 instead of the stage's β."""
    from harness.training.dpo import train_dpo

    cfg = load_config("tiny", ["learning.heldout_pairs=4"])
    train, held = _pairs("t", 4), _pairs("h", 6)
    bundle = DatasetBundle("hand", "hand", reward_pairs={"train": train, "dual": held}, cost_pairs={"train": []})
    with collect(cfg, bundle) as col:
        out = train_dpo(train, init=tiny_model_path, ref=None, beta=0.3, out_dir=tmp_path / "m", cfg=cfg, device="cpu",
                        run_name="stage", ref_cache_dir=tmp_path / "c")
    acc, margin = col.entries
    assert acc["stage"] == "stage" and acc["view"] == "reward" and acc["n"] == 4 and acc["forward_sequences"] == 16
    assert_heldout_margins(out, tiny_model_path, col.heldout["reward"], cfg, 0.3, acc, margin)
    with collect(cfg, bundle) as again:  # resume: the finished training and its check are reused
        train_dpo(train, init=tiny_model_path, ref=None, beta=0.3, out_dir=tmp_path / "m", cfg=cfg, device="cpu", run_name="stage")
    assert [e["value"] for e in again.entries] == [acc["value"], margin["value"]] and again.forward_sequences == 0


def test_leaderboard_learned_cell_and_infeasible_flag() -> None:
    from leaderboards.compare import flags
    from leaderboards.table import learned_cell

    runs = [{"seed": 0, "train": {"learned": "yes"}}, {"seed": 1, "train": {"learned": "yes"}}]
    assert learned_cell(runs) == "yes"
    runs[1]["train"]["learned"] = "no: s acc 0.52 < 0.60"
    assert learned_cell(runs) == "s0: yes; s1: no: s acc 0.52 < 0.60"  # seeds that disagree are listed per seed
    assert learned_cell([{"seed": 0}]) == "n/a"  # a record from before the checks
    assert flags({"dual_infeasible": True}) == "dual infeasible" and flags({}) == ""


def test_train_kto_records_the_heldout_pairwise_check(tiny_model_path, tmp_path, monkeypatch) -> None:
    """A KTO stage gets the same held-out check as a DPO stage: β·log-ratio margins of the trained model against its
    init on held-out pairs of the view its examples came from (here cost pairs), computed independently here; a
    reused training records them again without a forward pass."""
    from harness.training.kto import kto_examples, train_kto

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # a fresh reference log-prob cache: 2 × 8 forwards

    cfg = load_config("tiny", ["learning.heldout_pairs=4", "train.max_length=64"])
    def labelled(tag: str, n: int) -> list[PreferencePair]:
        return [PreferencePair(f"{tag} request {i}?", f"I can't help with that {i}.", f"Sure, here is how {i}.", True, False)
                for i in range(n)]
    train, held = labelled("t", 4), labelled("h", 5)
    bundle = DatasetBundle("hand", "hand", reward_pairs={"train": []}, cost_pairs={"train": train, "dual": held})
    with collect(cfg, bundle) as col:
        out = train_kto(kto_examples(train), init=tiny_model_path, beta=0.2, out_dir=tmp_path / "k", cfg=cfg, device="cpu",
                        run_name="kto-stage", pairs=train)
    acc, margin = col.entries
    assert acc["stage"] == "kto-stage" and acc["view"] == "cost" and acc["n"] == 4 and acc["forward_sequences"] == 16
    assert_heldout_margins(out, tiny_model_path, col.heldout["cost"], cfg, 0.2, acc, margin)
    with collect(cfg, bundle) as again:  # the stored training is reused, and so is its check
        train_kto(kto_examples(train), init=tiny_model_path, beta=0.2, out_dir=tmp_path / "k2", cfg=cfg, device="cpu",
                  run_name="kto-stage", pairs=train)
    assert [e["value"] for e in again.entries] == [acc["value"], margin["value"]] and again.forward_sequences == 0
    with collect(cfg, bundle) as outside:  # no pairs given: no check (train_kto outside SACPO)
        train_kto(kto_examples(train), init=tiny_model_path, beta=0.2, out_dir=tmp_path / "k3", cfg=cfg, device="cpu", run_name="x")
    assert outside.entries == []
