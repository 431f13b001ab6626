"""safe-rlhf (PPO-Lagrangian) and ppo-shaping on the tiny model and real PKU-SafeRLHF pairs, 1–2 PPO steps each.

Everything is real: R and C are trained by `evaluators.score_models` on the tiny policy's backbone (the method's own
train split), rollouts are sampled, and the first test goes through `harness.runs.run` end to end (TruthfulQA MC
is switched off there: it is another area's test and costs time). The others call `train` on a context from
`runs.build_context`, so their overrides stay cheap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness import runs
from harness.config import method_config
from harness.datasets import load_bundle
from harness.models import resolve_model
from harness.registries import METHODS

STEP_KEYS = {"step", "lambda", "cost_window_mean", "reward_mean", "cost_mean", "kl", "actor_loss", "reward_critic_loss"}


def _flat(path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(str(path)).parameters()])


def _train(tmp_path: Path, cfg):
    """The train stage alone, with the harness's real context (real score-model training)."""
    log: list[dict] = []
    services = runs.Services(cfg, load_bundle(cfg), "cpu")
    ctx = runs.build_context(cfg, tmp_path / "train", services, str(resolve_model("tiny-random")), None, log)
    cls = METHODS.get(cfg.method)
    return cls(method_config(cls.config_class, cfg)).train(ctx), ctx, log


def test_safe_rlhf_through_runs(tiny_cfg) -> None:
    cfg = tiny_cfg("safe-rlhf", ["eval.truthfulqa_mc=false"])
    rec = runs.run(cfg)
    train = rec["train"]
    assert train["models_trained"] == 5
    assert train["networks_held"] == ["actor", "reference", "reward_model", "cost_model", "reward_critic", "cost_critic"]
    assert train["extra"]["critic_init"].startswith("copy of the score model")
    assert rec["stages"]["train"]["peak_rss_mb"] > 0 and train["extra"]["peak_rss_mb"] > 0
    # six networks held, five trained (the frozen reference is the difference)
    assert rec["stages"]["train"]["params_held"] - rec["stages"]["train"]["params_trained"] == rec["stages"]["generate"]["params_policy"]

    traj = train["trajectory"]
    assert [t["step"] for t in traj] == [0, 1]  # tiny: 2 rollout batches of 2 prompts, one PPO step each
    assert all(STEP_KEYS | {"cost_critic_loss"} <= set(t) for t in traj)
    assert all(math.isfinite(t["actor_loss"]) and math.isfinite(t["cost_critic_loss"]) for t in traj)
    # Ĉ is the mean over the window of episode costs: after two equal batches, the mean of both batch means
    assert traj[0]["cost_window_mean"] == pytest.approx(traj[0]["cost_mean"], abs=1e-6)
    assert traj[1]["cost_window_mean"] == pytest.approx((traj[0]["cost_mean"] + traj[1]["cost_mean"]) / 2, abs=1e-6)
    # λ follows log λ ← min(log λ + 0.1·λ·(Ĉ − 0), log 5) from λ = 1, measured before each step
    log_lam = 0.0
    for t in traj:
        log_lam = min(log_lam + 0.1 * math.exp(log_lam) * t["cost_window_mean"], math.log(5.0))
        assert t["lambda"] == pytest.approx(math.exp(log_lam), rel=1e-6)
        assert 0 < t["lambda"] <= 5.0

    model_dir = Path(cfg.runs_dir) / rec["run_id"] / "train" / "model"
    # AdamW at lr 1e-5 moves a parameter with a gradient by ~lr per step; weight decay alone (1e-5·0.01·|p|) by < 1e-6
    assert (_flat(resolve_model("tiny-random")) - _flat(model_dir)).abs().max() > 5e-6, "the actor did not learn"
    saved = json.loads((model_dir / "bench_train.json").read_text())
    assert saved["method"] == "safe-rlhf" and saved["steps"] == 2
    assert rec["results"]["safety"]["n_prompts"] == cfg.data.max_eval_prompts


def test_safe_rlhf_lambda_is_capped(tmp_path, tiny_cfg) -> None:
    # threshold −100: every cost violates by ~100, so one update would give λ ≈ e^10; the cap holds it at λ_max
    cfg = tiny_cfg("safe-rlhf", ["method.threshold=-100", "method.lambda_max=1.5", "method.num_rollout_batches=1",
                                 "method.actor_weight_decay=0"])
    res, ctx, log = _train(tmp_path, cfg)
    assert len(log) == 1 and log[0]["lambda"] == pytest.approx(1.5)
    assert res.extra["final_lambda"] == pytest.approx(1.5)
    # no weight decay and no PTX: any change is the clipped-surrogate gradient of the one PPO step
    assert (_flat(ctx.policy_path) - _flat(res.model_path)).abs().max() > 0, "the PPO step did not move the actor"


def test_ppo_shaping_fixed_nu_one_critic_and_ptx(tmp_path, tiny_cfg) -> None:
    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text("\n".join(json.dumps({"prompt": f"Name a number above {i}.", "response": str(i + 1)}) for i in range(3)))
    # R and C on MiniLM (the cpu profile's choice): another tokenizer, so the critic starts from the SFT backbone
    cfg = tiny_cfg("ppo-shaping", ["method.cost_coef=0.5", f"method.ptx_data={ptx}", "method.score_backbone=minilm"])
    res, ctx, log = _train(tmp_path, cfg)
    assert res.models_trained == 4 and res.networks_held == ["actor", "reference", "reward_model", "cost_model", "reward_critic"]
    assert res.extra["critic_init"].startswith("SFT policy backbone")
    assert [t["step"] for t in log] == [0, 1]
    assert all(STEP_KEYS <= set(t) and "cost_critic_loss" not in t for t in log)
    assert all(t["lambda"] == 0.5 for t in log), "ν must stay fixed"
    assert all(math.isfinite(t["reward_critic_loss"]) for t in log)
    assert all(math.isfinite(t["ptx_loss"]) and t["ptx_loss"] > 0 for t in log) and res.extra["ptx"]
    assert (_flat(ctx.policy_path) - _flat(res.model_path)).abs().max() > 0, "the actor did not change"
