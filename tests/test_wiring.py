"""Direction tests for every method's wiring: which data, which reference, which sign, which order.

The pure math is tested elsewhere against hand computations; these tests check how each method plugs it in, on
hand-built cases where the right answer is known and a swapped argument, a flipped sign or a wrong reference gives
a different one. Nothing here trains a network: `train_dpo` is replaced by a recorder that only makes the output
folder, scorers and generators are fakes, and the PPO loop runs on hand-built rollouts (plus one real PPO step on a
four-token toy policy, and two on the tiny random model for the LoRA PPO's shared weights). Each test names the planted fault it catches (docs/mutation.md lists them).
"""

from __future__ import annotations

import json
import math
import random
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch

from harness.config import load_config, method_config
from harness.errors import BenchError
from harness.registries import METHODS
from harness.types import DatasetBundle, EvalPrompt, PreferencePair
from methods.base import TrainContext

# -- fakes ----------------------------------------------------------------------------------------------------------


class FakeScorer:
    """Scores a response by `fn(response)`; remembers what it was asked."""

    def __init__(self, kind: str, fn: Callable[[str], float]):
        self.name = self.fingerprint = f"fake-{kind}"
        self.kind, self.is_binary, self.fn, self.asked = kind, False, fn, []

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        assert len(prompts) == len(responses), "one prompt per response"
        self.asked.append(list(responses))
        return [float(self.fn(r)) for r in responses]


class FakeGenerator:
    """`respond(prompt, params) -> str`; fingerprint 'mem-…' so the on-disk generation cache is never used."""

    name = "fake"
    fingerprint = "mem-fake"

    def __init__(self, respond: Callable[[str, Any], str], model: Any = None):
        self.respond, self.model = respond, model

    def generate(self, prompts: list[str], params) -> list[str]:
        return [self.respond(p, params) for p in prompts]


class FakeDPO:
    """Stands in for `harness.training.dpo.train_dpo`: records each call and makes the output folder (with a marker)."""

    def __init__(self):
        self.calls: list[dict[str, Any]] = []

    def __call__(self, pairs, *, init, ref, beta, out_dir, cfg, device, margins=None, run_name="", **kw):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "made_by.txt").write_text(run_name)
        self.calls.append(dict(pairs=list(pairs), init=init, ref=ref, beta=beta, out=out, margins=margins, run_name=run_name,
                               cfg=cfg, device=device))
        return out

    def record(self, path) -> dict[str, Any]:
        """The training record of the run that wrote `path` (its β and pair count; loss and steps fixed); fails for a
        folder this fake never wrote."""
        call = [c for c in self.calls if c["out"] == Path(path)][-1]
        return {"beta": call["beta"], "pairs": len(call["pairs"]), "train_loss": 0.5, "steps": 1, "init": str(call["init"]), "reference": "init"}

    def by_name(self, name: str) -> dict[str, Any]:
        (call,) = [c for c in self.calls if c["run_name"] == name]
        return call


@pytest.fixture()
def fake_dpo(monkeypatch) -> FakeDPO:
    """Replace `train_dpo` / `read_train_record` wherever the methods look them up."""
    import harness.training.dpo
    import methods.dpo_helpful
    import methods.pddpo
    import methods.pddpo_online

    fake = FakeDPO()
    for module in (harness.training.dpo, methods.dpo_helpful, methods.pddpo, methods.pddpo_online):
        if hasattr(module, "train_dpo"):
            monkeypatch.setattr(module, "train_dpo", fake)
        if hasattr(module, "read_train_record"):
            monkeypatch.setattr(module, "read_train_record", fake.record)
    return fake


def pair(i: int, chosen: str, rejected: str, chosen_safe: bool | None = None, rejected_safe: bool | None = None) -> PreferencePair:
    return PreferencePair(f"prompt {i}", chosen, rejected, chosen_safe=chosen_safe, rejected_safe=rejected_safe, source=f"hand:{i}")


# Responses carry their scores in their text so fake scorers can read them: "r=<reward> c=<cost>".
def parse(response: str, key: str) -> float:
    return float(dict(part.split("=") for part in response.split())[key])


REWARD = lambda y: parse(y, "r")  # noqa: E731
COST = lambda y: parse(y, "c")  # noqa: E731

REWARD_PAIRS = [pair(0, "r=2 c=1", "r=1 c=-1", False, True), pair(1, "r=3 c=-1", "r=0 c=1", True, False),
                pair(2, "r=1 c=-2", "r=0 c=-1", True, True), pair(3, "r=5 c=2", "r=4 c=3", False, False)]
COST_PAIRS = [pair(10, "r=0 c=-1", "r=1 c=2", True, False), pair(11, "r=1 c=-3", "r=2 c=1", True, False),
              pair(12, "r=2 c=0", "r=0 c=1", True, False)]
DUAL = ["dual prompt a", "dual prompt b"]


def make_ctx(tmp_path: Path, method: str, overrides: list[str] | None = None, *, reward_pairs=None, cost_pairs=None,
             dual=None, reward_fn=REWARD, cost_fn=COST, respond=None, score_models=None):
    cfg = load_config("tiny", overrides, method=method, runs_dir=str(tmp_path / "runs"))
    bundle = DatasetBundle(
        name="hand", source="hand-built",
        reward_pairs={"train": list(REWARD_PAIRS if reward_pairs is None else reward_pairs), "eval": [pair(99, "r=9 c=9", "r=8 c=8")]},
        cost_pairs={"train": list(COST_PAIRS if cost_pairs is None else cost_pairs), "eval": [pair(98, "r=9 c=9", "r=8 c=8")]},
        prompts={"dual": [EvalPrompt(p) for p in (DUAL if dual is None else dual)], "eval": [EvalPrompt("eval only")]},
    )
    (tmp_path / "work").mkdir(parents=True, exist_ok=True)
    log: list[dict[str, Any]] = []
    reward, cost = FakeScorer("reward", reward_fn), FakeScorer("cost", cost_fn)
    respond = respond or (lambda p, params: "r=0 c=0")
    ctx = TrainContext(
        cfg=cfg, data=bundle, policy_path=str(tmp_path / "sft"), out_dir=tmp_path / "model", work_dir=tmp_path / "work",
        device="cpu", seed=cfg.seed, make_generator=lambda model, tokenizer=None: FakeGenerator(respond),
        reward_annotator=lambda: reward, cost_annotator=lambda: cost,
        train_score_model=score_models or (lambda *a, **k: pytest.fail("not used")), log=log.append,
    )
    cls = METHODS.get(method)
    return cls(method_config(cls.config_class, cfg)), ctx, log


# -- the context hands out the right folds ------------------------------------------------------------------------


def test_context_folds(tmp_path) -> None:
    _, ctx, _ = make_ctx(tmp_path, "sft")
    assert ctx.reward_pairs == REWARD_PAIRS and ctx.cost_pairs == COST_PAIRS and ctx.dual_prompts == DUAL
    empty = TrainContext(**{**ctx.__dict__, "data": DatasetBundle("e", "e")})
    assert empty.reward_pairs == [] and empty.cost_pairs == [] and empty.dual_prompts == []


# -- plain DPO baselines ------------------------------------------------------------------------------------------


def test_dpo_helpful_uses_reward_pairs_and_dpo_harmless_cost_pairs(tmp_path, fake_dpo) -> None:
    """Planted: dpo-helpful on cost pairs, dpo-harmless on reward pairs, a non-SFT reference, the wrong β."""
    for method, want in (("dpo-helpful", REWARD_PAIRS), ("dpo-harmless", COST_PAIRS)):
        m, ctx, _ = make_ctx(tmp_path / method, method, ["method.beta=0.3"])
        res = m.train(ctx)
        call = fake_dpo.calls[-1]
        assert call["pairs"] == want and call["init"] == ctx.policy_path and call["ref"] is None and call["beta"] == 0.3
        assert call["run_name"] == method and res.model_path == str(ctx.out_dir) and res.models_trained == 1
        assert call["out"] == ctx.out_dir and call["cfg"] is ctx.cfg and call["device"] == ctx.device == "cpu"
        assert res.extra == {"beta": 0.3, "pairs": len(want), "train_loss": 0.5, "steps": 1}  # read from the run's record
        assert res.networks_held == ["policy", "reference = SFT (log-probs precomputed once, released before training)"]
    m, ctx, _ = make_ctx(tmp_path / "default", "dpo-harmless")
    m.train(ctx)
    assert fake_dpo.calls[-1]["beta"] == ctx.cfg.train.beta
    for method, kind, kw in (("dpo-helpful", "reward", {"reward_pairs": []}), ("dpo-harmless", "cost", {"cost_pairs": []})):
        m, ctx, _ = make_ctx(tmp_path / f"none-{kind}", method, **kw)
        with pytest.raises(BenchError, match=f"^{method} needs {kind} pairs in the train fold, but there are no {kind} pairs"):
            m.train(ctx)


# -- SACPO / P-SACPO ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("safety_first", [False, True])
def test_sacpo_stage_order_temperatures_and_reference(tmp_path, fake_dpo, safety_first: bool) -> None:
    """Planted: the stage-2 temperature β instead of β/λ; stage 2 from π_ref instead of the stage-1 model; the
    order flag ignored; reward and cost pairs exchanged."""
    m, ctx, log = make_ctx(tmp_path, "sacpo", ["method.beta=0.2", "method.lambda_=4.0", f"method.safety_first={str(safety_first).lower()}"])
    res = m.train(ctx)
    first, second = fake_dpo.calls
    helpful, safe = (second, first) if safety_first else (first, second)
    assert helpful["pairs"] == REWARD_PAIRS and helpful["beta"] == 0.2 and helpful["run_name"] == "sacpo-helpful"
    assert safe["pairs"] == COST_PAIRS and safe["beta"] == pytest.approx(0.05) and safe["run_name"] == "sacpo-safe"
    assert first["init"] == ctx.policy_path and first["ref"] is None
    assert second["init"] == first["out"] and second["ref"] is None  # stage 2 starts from, and references, stage 1
    assert second["out"] == ctx.out_dir and res.model_path == str(ctx.out_dir)
    assert res.extra["lambda"] == pytest.approx(4.0) and res.extra["beta_over_lambda"] == pytest.approx(0.05)
    assert res.extra["order"] == ("safe->helpful" if safety_first else "helpful->safe")
    assert [r["stage"] for r in log] == (["safe", "helpful"] if safety_first else ["helpful", "safe"])
    assert [r["step"] for r in log] == [1, 2] and log[1]["beta"] == second["beta"]
    assert first["out"] == ctx.work_dir / f"sacpo_{log[0]['stage']}" and all(c["cfg"] is ctx.cfg and c["device"] == "cpu" for c in (first, second))
    assert log == [{"stage": r["stage"], "step": r["step"], "loss": "dpo", "beta": call["beta"], "train_loss": 0.5, "steps": 1,
                    "pairs": len(call["pairs"])} for r, call in zip(log, (first, second))]  # each stage's own training record
    assert res.extra == {"beta": 0.2, "beta_over_lambda": pytest.approx(0.05), "lambda": pytest.approx(4.0), "order": res.extra["order"],
                         "safety_loss": "dpo", "stage1": log[0], "stage2": log[1]}
    assert res.models_trained == 2 and res.networks_held == ["policy", "reference"]


def test_sacpo_refuses_missing_pairs(tmp_path, fake_dpo) -> None:
    for kind, kw in (("reward", {"reward_pairs": []}), ("cost", {"cost_pairs": []})):
        m, ctx, _ = make_ctx(tmp_path / kind, "sacpo", **kw)
        with pytest.raises(BenchError, match=f"^SACPO needs reward and cost pairs in the train fold, but there are no {kind} pairs"):
            m.train(ctx)
    assert fake_dpo.calls == []


@pytest.mark.parametrize("safety_first", [False, True])
def test_p_sacpo_merges_stage_one_at_weight_one_minus_q(tmp_path, fake_dpo, monkeypatch, safety_first: bool) -> None:
    """Planted: merge_models(final, first, …) (the order swap) or q ↔ 1 − q."""
    import methods.p_sacpo as p_sacpo

    merges = []
    monkeypatch.setattr(p_sacpo, "merge_models", lambda a, b, q, out_dir, record: merges.append((a, b, q, out_dir, record)) or Path(out_dir))
    m, ctx, log = make_ctx(tmp_path, "p-sacpo", ["method.q=0.25", f"method.safety_first={str(safety_first).lower()}"])
    res = m.train(ctx)
    first, final = fake_dpo.calls
    ((a, b, q, out_dir, record),) = merges
    assert (a, b, q, out_dir) == (first["out"], final["out"], 0.25, ctx.out_dir)  # (1 − q)·stage-1 + q·final
    assert final["out"] == ctx.work_dir / "sacpo_final"
    assert record == {"merge": {"q": 0.25, "a": str(first["out"]), "b": str(final["out"]), "rule": "(1-q)*a + q*b, float32 accumulation"}}
    assert res.model_path == str(ctx.out_dir) and log[-1] == {"stage": "merge", "q": 0.25}
    assert res.models_trained == 2 and res.networks_held == ["policy", "reference"]
    assert res.extra["q"] == 0.25 and res.extra["lambda"] == pytest.approx(0.1 / 0.01) and "stage2" in res.extra


def test_sacpo_naive_merge_trains_both_from_sft_and_weights_the_safe_model_by_q(tmp_path, fake_dpo, monkeypatch) -> None:
    """Planted: merge_models(safe, helpful, …) (the order swap: the safe model would get weight 1 − q)."""
    import methods.sacpo_naive_merge as naive

    merges = []
    monkeypatch.setattr(naive, "merge_models", lambda a, b, q, out_dir, record: merges.append((a, b, q, out_dir)) or Path(out_dir))
    m, ctx, log = make_ctx(tmp_path, "sacpo-naive-merge", ["method.beta=0.2", "method.lambda_=4.0", "method.q=0.25"])
    res = m.train(ctx)
    helpful, safe = fake_dpo.calls
    assert helpful["pairs"] == REWARD_PAIRS and helpful["beta"] == 0.2 and safe["pairs"] == COST_PAIRS and safe["beta"] == pytest.approx(0.05)
    for call in (helpful, safe):  # both from the SFT model, each against the SFT model: no stepwise alignment
        assert call["init"] == ctx.policy_path and call["ref"] is None and call["margins"] is None
    assert merges == [(helpful["out"], safe["out"], 0.25, ctx.out_dir)]  # (1 − q)·helpful + q·safe
    assert [r["stage"] for r in log] == ["helpful", "safe", "merge"] and res.model_path == str(ctx.out_dir)
    assert res.extra["variant"] == "naive-merge" and res.extra["q"] == 0.25 and res.models_trained == 2
    with pytest.raises(BenchError, match="safety_first"):
        make_ctx(tmp_path / "order", "sacpo-naive-merge", ["method.safety_first=true"])


class FakeKTO:
    """Stands in for `harness.training.kto.train_kto`: records the labelled examples and makes the output folder."""

    def __init__(self):
        self.calls: list[dict[str, Any]] = []

    def __call__(self, examples, *, init, beta, out_dir, cfg, device, run_name="", **kw):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.calls.append(dict(examples=list(examples), init=init, beta=beta, out=Path(out_dir), run_name=run_name, cfg=cfg, device=device, **kw))
        return Path(out_dir)


def test_kto_examples_desirable_is_the_response_labelled_safe() -> None:
    """Planted: the label negated (an unsafe response made desirable)."""
    from harness.training.kto import kto_examples, kto_weights

    pairs = [pair(0, "safe a", "unsafe a", True, False), pair(1, "unsafe b", "safe b", False, True),  # a swapped pair: labels travel
             pair(2, "safe c", "safe c2", True, True), pair(3, "x", "y", None, False),  # unlabelled "x" is left out
             pair(0, "safe a", "unsafe a2", True, False)]  # "safe a" again: one example
    got = [(e.prompt, e.completion, e.desirable) for e in kto_examples(pairs)]
    assert got == [("prompt 0", "safe a", True), ("prompt 0", "unsafe a", False), ("prompt 1", "unsafe b", False),
                   ("prompt 1", "safe b", True), ("prompt 2", "safe c", True), ("prompt 2", "safe c2", True),
                   ("prompt 3", "y", False), ("prompt 0", "unsafe a2", False)]
    assert kto_weights(kto_examples(pairs)) == (1.0, 4 / 4)  # w_D = 1, w_U = n_D / n_U
    assert kto_weights(kto_examples(pairs[:3])) == (1.0, pytest.approx(4 / 2))
    assert kto_weights(kto_examples(pairs), 2.0, 0.5) == (2.0, 0.5)
    with pytest.raises(BenchError, match="0 unsafe"):
        kto_weights(kto_examples([pairs[2]]))


def test_sacpo_kto_runs_kto_on_safety_labels_from_pi_r(tmp_path, fake_dpo, monkeypatch) -> None:
    """Planted: the KTO step on the helpfulness stage (DPO on the safety pairs, KTO on the reward pairs)."""
    import harness.training.kto

    fake_kto = FakeKTO()
    monkeypatch.setattr(harness.training.kto, "train_kto", fake_kto)
    monkeypatch.setattr("harness.training.dpo.read_train_record", lambda path: {"train_loss": 0.4, "steps": 1, "examples": 6, "desirable": 3})
    m, ctx, log = make_ctx(tmp_path, "sacpo-kto", ["method.beta=0.2", "method.lambda_=4.0", "method.desirable_weight=2.0",
                                                 "method.undesirable_weight=1.5"])
    res = m.train(ctx)
    (helpful,), (safe,) = fake_dpo.calls, fake_kto.calls
    assert helpful["pairs"] == REWARD_PAIRS and helpful["beta"] == 0.2 and helpful["init"] == ctx.policy_path
    # the safety step: KTO from π_r (its reference too), β/λ, one example per response, desirable = labelled safe
    assert safe["init"] == helpful["out"] and safe["beta"] == pytest.approx(0.05) and safe["out"] == ctx.out_dir
    assert [(e.completion, e.desirable) for e in safe["examples"]] == [(y, ok) for p in COST_PAIRS for y, ok in
                                                                      ((p.chosen, True), (p.rejected, False))]
    assert safe["desirable_weight"] == 2.0 and safe["undesirable_weight"] == 1.5 and safe["run_name"] == "sacpo-safe-kto"
    assert safe["cfg"] is ctx.cfg and safe["device"] == "cpu"
    assert safe["pairs"] == COST_PAIRS  # the pairs behind the examples: they find the run's held-out learning check
    assert [(r["stage"], r["loss"]) for r in log] == [("helpful", "dpo"), ("safe", "kto")]
    assert log[1] == {"stage": "safe", "step": 2, "loss": "kto", "beta": safe["beta"], "train_loss": 0.4, "steps": 1, "pairs": None,
                      "examples": 6, "desirable": 3, "undesirable": None, "desirable_weight": None, "undesirable_weight": None}
    assert res.extra["safety_loss"] == "kto" and res.model_path == str(ctx.out_dir)
    m, ctx, _ = make_ctx(tmp_path / "first", "sacpo-kto", ["method.safety_first=true"])
    m.train(ctx)
    assert fake_kto.calls[-1]["init"] == ctx.policy_path and fake_dpo.calls[-1]["init"] == fake_kto.calls[-1]["out"]


def test_pddpo_fixed_is_the_papers_fixed_lambda_five(tmp_path, fake_dpo, monkeypatch) -> None:
    m, ctx, _ = make_ctx(tmp_path, "pddpo-fixed", ["method.estimate_fixed=false"])
    assert m.config.fixed_lambda == 5.0
    res = m.train(ctx)
    stage1, primal = fake_dpo.calls
    assert primal["beta"] == pytest.approx(ctx.cfg.train.beta / 5) and primal["ref"] == stage1["out"]
    assert res.extra["mode"] == "fixed_lambda" and res.trajectory[0]["lambda"] == 5.0
    m, ctx, _ = make_ctx(tmp_path / "zero", "pddpo", ["method.fixed_lambda=0", "method.estimate_fixed=false"])
    res = m.train(ctx)
    assert len(fake_dpo.calls) == 3 and res.trajectory[0]["trained"] is False  # λ = 0: π_r̂ itself, no primal training


def test_p_sacpo_accepts_q_in_the_closed_unit_interval() -> None:
    from methods.p_sacpo import PSACPO, PSACPOConfig

    assert PSACPO(PSACPOConfig(q=0.0)).config.q == 0.0 and PSACPO(PSACPOConfig(q=1.0)).config.q == 1.0
    for q in (-0.1, 1.1):
        with pytest.raises(BenchError, match=rf"config key 'q': {q} is out of range; use a value in \[0,1\]"):
            PSACPO(PSACPOConfig(q=q))


def test_merge_models_weights_the_first_model_by_one_minus_q(tmp_path, tiny_model_path) -> None:
    """The real merge on two saved tiny models, B = 3·A: (1 − q)·A + q·B with q = 1/4 is 1.5·A."""
    from transformers import AutoModelForCausalLM

    from harness.io import save_model_atomic
    from harness.models import load_tokenizer
    from methods.p_sacpo import merge_models

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    b = {k: v.clone() for k, v in model.state_dict().items()}
    save_model_atomic(model, load_tokenizer(tiny_model_path), tmp_path / "b", {"method": "x"})
    merge_models(Path(tiny_model_path), tmp_path / "b", 0.25, tmp_path / "m", {"merge": {"q": 0.25}})
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), dtype=torch.float32).state_dict()
    assert not torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    for key, value in a.items():
        torch.testing.assert_close(merged[key], 0.75 * value + 0.25 * b[key] if value.is_floating_point() else value, rtol=1e-6, atol=1e-7)


# -- SafeDPO ------------------------------------------------------------------------------------------------------


def test_safedpo_trains_on_transformed_reward_pairs_with_negative_margins(tmp_path, fake_dpo) -> None:
    """Planted: the transform applied to cost pairs; margins with a + sign; margins passed when Δ = 0."""
    m, ctx, log = make_ctx(tmp_path, "safedpo", ["method.delta=2.0", "method.beta=0.3"])
    res = m.train(ctx)
    (call,) = fake_dpo.calls
    # REWARD_PAIRS: 0 swapped (chosen unsafe, rejected safe), 1 kept safe/unsafe, 2 kept both safe, 3 dropped
    assert [(p.chosen, p.rejected) for p in call["pairs"]] == [("r=1 c=-1", "r=2 c=1"), ("r=3 c=-1", "r=0 c=1"), ("r=1 c=-2", "r=0 c=-1")]
    assert call["margins"] == [-2.0, -2.0, 0.0] and call["beta"] == 0.3 and call["ref"] is None and call["init"] == ctx.policy_path
    assert res.extra["transform"] == {"kept_both_safe": 1, "kept_safe_unsafe": 1, "swapped": 1, "dropped_both_unsafe": 1,
                                      "dropped_unlabelled": 0, "total": 4}
    assert log[0] == {"stage": "transform", **res.extra["transform"], "pairs_used": 3} and res.models_trained == 1
    assert log[1] == {"stage": "dpo", "train_loss": 0.5, "steps": 1, "pairs": 3} and res.networks_held == ["policy", "reference"]
    assert res.extra["beta"] == 0.3 and res.extra["delta"] == 2.0
    assert (call["run_name"], call["out"], call["cfg"], call["device"], res.model_path) == ("safedpo", ctx.out_dir, ctx.cfg, "cpu", str(ctx.out_dir))
    m, ctx, _ = make_ctx(tmp_path / "small", "safedpo", ["method.delta=0.5"])  # any Δ > 0 adds the margins
    m.train(ctx)
    assert fake_dpo.calls[-1]["margins"] == [-0.5, -0.5, 0.0]
    m, ctx, _ = make_ctx(tmp_path / "zero", "safedpo", ["method.delta=0.0"])
    m.train(ctx)
    assert fake_dpo.calls[-1]["margins"] is None and fake_dpo.calls[-1]["beta"] == ctx.cfg.train.beta
    m, ctx, _ = make_ctx(tmp_path / "none", "safedpo", reward_pairs=[REWARD_PAIRS[3]])
    with pytest.raises(BenchError, match=r"^SafeDPO: no pair survives the safety transform \({'kept_both_safe': 0, .*'dropped_both_unsafe': 1, "
                                         r"'dropped_unlabelled': 0, 'total': 1}\); the dataset needs per-response safety labels$"):
        m.train(ctx)


# -- PD-DPO -------------------------------------------------------------------------------------------------------


class ScriptedEstimates:
    """Stands in for `methods.pddpo.dual_estimate`: returns the next scripted Ĉ and records the call."""

    def __init__(self, estimates: list[float]):
        self.estimates, self.calls = list(estimates), []

    def __call__(self, ctx, policy, reference, units, prompts, temperature=None, same_as_reference=False):
        self.calls.append(dict(ctx=ctx, policy=Path(policy), reference=Path(reference), units=units, prompts=list(prompts),
                               temperature=temperature, same_as_reference=same_as_reference))
        return {"cost_estimate": self.estimates.pop(0), "unsafe_rate": -1.0, "mean_cost": -1.0, "reward": 0.0, "kl_to_pi_r": 0.0}


@pytest.mark.parametrize("units", ["unsafe_rate", "mean_cost"])
def test_pddpo_dual_raises_lambda_above_b_and_references_pi_r(tmp_path, fake_dpo, monkeypatch, units: str) -> None:
    """Planted: λ ← λ − η(Ĉ − b); stage-2 reference = the SFT model or π_{k−1}; stage 2 at β·λ; pairs exchanged."""
    import methods.pddpo as pddpo

    est = ScriptedEstimates([0.7, 0.1, 0.1])
    monkeypatch.setattr(pddpo, "dual_estimate", est)
    m, ctx, log = make_ctx(tmp_path, "pddpo", ["method.beta=0.2", "method.lambda_init=1.0", "method.eta=10", "method.num_iterations=3",
                                               "method.threshold=0.3", f"method.threshold_units={units}", "method.keep_iterates=true"])
    res = m.train(ctx)
    stage1, *primal = fake_dpo.calls
    pi_r = ctx.work_dir / "pi_r_hat"
    assert stage1["pairs"] == REWARD_PAIRS and stage1["init"] == ctx.policy_path and stage1["ref"] is None and stage1["out"] == pi_r
    assert stage1["beta"] == 0.2
    lams = [r["lambda"] for r in res.trajectory]
    assert lams[0] == 1.0 and lams[1] == pytest.approx(1.0 + 10 * (0.7 - 0.3))  # Ĉ > b: λ rises to 5
    assert lams[2] == pytest.approx(5.0 + 10 * (0.1 - 0.3))  # Ĉ < b: λ falls to 3
    assert res.trajectory[-1]["lambda_next"] == pytest.approx(1.0)
    for k, (call, lam) in enumerate(zip(primal, lams), start=1):
        assert call["pairs"] == COST_PAIRS and call["ref"] == pi_r and call["beta"] == pytest.approx(0.2 / lam)
        assert call["init"] == (pi_r if k == 1 else primal[k - 2]["out"])  # warm start from π_{k−1}
    assert [c["out"] for c in primal] == [ctx.work_dir / "pi_1", ctx.work_dir / "pi_2", ctx.out_dir]
    assert all(c["reference"] == pi_r and c["units"] == units and c["prompts"] == DUAL for c in est.calls)
    assert [c["policy"] for c in est.calls] == [c["out"] for c in primal]
    assert [r["beta_stage2"] for r in res.trajectory] == [pytest.approx(0.2 / lam) for lam in lams]
    assert res.extra["threshold"] == 0.3 and res.extra["threshold_units"] == units and res.extra["lambda_final"] == pytest.approx(1.0)
    assert log == res.trajectory and res.model_path == str(ctx.out_dir)


def test_pddpo_warm_start_pi_r_and_lambda_zero_guard(tmp_path, fake_dpo, monkeypatch) -> None:
    """Planted: warm_start ignored; training at λ = 0; the λ = 0 iterate not copied from π_r̂; Λ_max not applied."""
    import methods.pddpo as pddpo

    monkeypatch.setattr(pddpo, "dual_estimate", ScriptedEstimates([0.0, 0.0, 0.0]))
    m, ctx, _ = make_ctx(tmp_path, "pddpo", ["method.lambda_init=2.0", "method.eta=10", "method.num_iterations=3", "method.warm_start=pi_r",
                                             "scoring.threshold=0.1", "scoring.threshold_units=unsafe_rate"])
    res = m.train(ctx)
    pi_r = ctx.work_dir / "pi_r_hat"
    assert [r["lambda"] for r in res.trajectory] == [2.0, pytest.approx(1.0), 0.0]
    assert [r["trained"] for r in res.trajectory] == [True, True, False] and res.trajectory[2]["beta_stage2"] is None
    assert [c["init"] for c in fake_dpo.calls[1:]] == [pi_r, pi_r]  # warm_start = pi_r: every primal starts from π_r̂
    assert (ctx.out_dir / "made_by.txt").read_text() == "pddpo-stage1"  # π_3 = π_r̂, copied into the final folder
    assert res.extra["threshold"] == 0.1  # falls back to scoring.threshold
    monkeypatch.setattr(pddpo, "dual_estimate", ScriptedEstimates([1.0, 1.0]))
    m, ctx, _ = make_ctx(tmp_path / "cap", "pddpo", ["method.lambda_init=1.0", "method.eta=100", "method.lambda_max=7", "method.num_iterations=2"])
    res = m.train(ctx)
    assert res.trajectory[1]["lambda"] == 7.0


def test_pddpo_fixed_lambda_one_primal_step(tmp_path, fake_dpo, monkeypatch) -> None:
    import methods.pddpo as pddpo

    est = ScriptedEstimates([0.9])
    monkeypatch.setattr(pddpo, "dual_estimate", est)
    m, ctx, _ = make_ctx(tmp_path, "pddpo", ["method.fixed_lambda=5", "method.beta=0.1", "method.num_iterations=3"])
    res = m.train(ctx)
    (rec,) = res.trajectory
    assert len(fake_dpo.calls) == 2 and fake_dpo.calls[1]["beta"] == pytest.approx(0.02) and fake_dpo.calls[1]["out"] == ctx.out_dir
    assert rec["lambda"] == rec["lambda_next"] == 5.0 and len(est.calls) == 1 and res.extra["mode"] == "fixed_lambda"


def test_pddpo_dual_estimate_in_each_unit(tmp_path, monkeypatch) -> None:
    """Ĉ is the unsafe rate (share with cost > 0) or the mean cost, as configured, on fresh samples of the policy
    under the run's generation settings; KL is log π − log π_r̂ on those samples, with the generator's own weights.
    Planted: the two units exchanged, `cost >= 0` as unsafe, KL with the sign flipped, the generator built for
    another model, sampling settings dropped."""
    import methods.pddpo as pddpo
    from harness.types import SamplingParams

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    costs = {"a": -1.0, "b": 0.0, "c": 0.5, "d": 3.0}
    params_seen, made = [], []
    weights, tokenizer = object(), object()
    _, ctx, _ = make_ctx(tmp_path, "pddpo", ["seed=3", "generation.top_p=0.9", "generation.max_new_tokens=5", "generation.temperature=0.5"],
                         cost_fn=lambda y: costs[y], reward_fn=lambda y: 10.0)

    class Gen(FakeGenerator):
        fingerprint = "disk-policy"  # cacheable: a second estimate of the same policy reuses the samples

        def __init__(self):
            super().__init__(lambda p, params: params_seen.append(params) or p[-1], model=weights)
            self.tokenizer = tokenizer

    ctx.make_generator = lambda model, tokenizer=None: made.append(model) or Gen()
    prompts = ["pa", "pb", "pc", "pd"]
    for units, want in (("unsafe_rate", 0.5), ("mean_cost", 0.625)):
        out = pddpo.dual_estimate(ctx, tmp_path / "pi", tmp_path / "ref", units, prompts, same_as_reference=True)
        assert out["cost_estimate"] == pytest.approx(want) and out["unsafe_rate"] == 0.5 and out["mean_cost"] == 0.625
        assert out["reward"] == 10.0 and out["kl_to_pi_r"] == 0.0 and out["n_dual"] == 4
    assert made == [tmp_path / "pi"] * 2 and len(params_seen) == 4  # the second estimate hit the generation cache
    assert set(params_seen) == {SamplingParams(max_new_tokens=5, temperature=0.5, top_p=0.9, seed=3)}
    cost = ctx.cost_annotator()
    assert cost.asked[-1] == ["a", "b", "c", "d"]
    seen = []

    def logprobs(model, tok, prompts_, responses, cfg, device, *a):
        seen.append((model, tok, list(prompts_), list(responses), cfg, device))
        return torch.tensor([-1.0, -2.0, -3.0, -4.0]) if model is weights else torch.tensor([-2.0, -2.0, -2.0, -2.0])

    monkeypatch.setattr(pddpo, "sequence_logprobs", logprobs)
    out = pddpo.dual_estimate(ctx, tmp_path / "pi", tmp_path / "ref", "unsafe_rate", prompts, temperature=1.0)
    assert out["kl_to_pi_r"] == pytest.approx(-0.5) and out["kl_estimator"].startswith("log-ratio")  # top_p 0.9: not unbiased
    assert seen == [(weights, tokenizer, prompts, ["a", "b", "c", "d"], ctx.cfg, ctx.device),
                    (tmp_path / "ref", None, prompts, ["a", "b", "c", "d"], ctx.cfg, ctx.device)]
    assert params_seen[-1].temperature == 1.0  # the explicit temperature wins over generation.temperature
    ctx.cfg.generation.top_p = 1.0
    out = pddpo.dual_estimate(ctx, tmp_path / "pi", tmp_path / "ref", "unsafe_rate", prompts, temperature=1.0)
    assert out["kl_estimator"].startswith("sampled")


def test_pddpo_refuses_bad_units_and_empty_dual_fold(tmp_path, fake_dpo) -> None:
    with pytest.raises(BenchError, match="threshold_units': 'rate' is out of range; use one of unsafe_rate, mean_cost"):  # refused with the config
        make_ctx(tmp_path, "pddpo", ["method.threshold_units=rate"])
    m, ctx, _ = make_ctx(tmp_path / "d", "pddpo", dual=[])
    with pytest.raises(BenchError, match="dual fold is empty"):
        m.train(ctx)


# -- PD-DPO and the naive SACPO merge: what each stage receives, every record, every refusal -----------------------


def test_pddpo_stages_get_the_run_config_and_the_lambda_zero_iterate_is_pi_r_itself(tmp_path, fake_dpo, monkeypatch) -> None:
    """λ_1 = 0, then Ĉ > b: iteration 1 is π_r̂ itself (no training, no copy; Ĉ estimated with π_r̂ as its own
    reference), iterations 2-3 train from it; the superseded π_2 is deleted. Pins each `train_dpo` call (config,
    device, run name), each Ĉ estimate's arguments (N^CE prompts, dual temperature), every trajectory record and the
    result. Planted: cfg/device/run name dropped, the λ = 0 iterate copied into the work dir, N^CE or the dual
    temperature ignored, superseded iterates kept, the mode always "fixed_lambda"."""
    import methods.pddpo as pddpo

    est = ScriptedEstimates([0.5, 0.5, 0.4])
    monkeypatch.setattr(pddpo, "dual_estimate", est)
    m, ctx, log = make_ctx(tmp_path, "pddpo", ["method.lambda_init=0", "method.eta=10", "method.num_iterations=3", "method.max_dual_prompts=1",
                                               "method.dual_temperature=0.7", "scoring.threshold=0.2"])
    res = m.train(ctx)
    pi_r, pi_2 = ctx.work_dir / "pi_r_hat", ctx.work_dir / "pi_2"
    assert [c["run_name"] for c in fake_dpo.calls] == ["pddpo-stage1", "pddpo-primal-2", "pddpo-primal-3"]
    assert all(c["cfg"] is ctx.cfg and c["device"] == "cpu" and c["margins"] is None for c in fake_dpo.calls)
    assert [(c["init"], c["ref"], c["out"]) for c in fake_dpo.calls[1:]] == [(pi_r, pi_r, pi_2), (pi_2, pi_r, ctx.out_dir)]
    assert [c["beta"] for c in fake_dpo.calls] == [0.1, pytest.approx(0.1 / 3), pytest.approx(0.1 / 6)]
    assert [(c["policy"], c["same_as_reference"]) for c in est.calls] == [(pi_r, True), (pi_2, False), (ctx.out_dir, False)]
    assert all(c["ctx"] is ctx and c["prompts"] == DUAL[:1] and c["temperature"] == 0.7 and c["reference"] == pi_r for c in est.calls)
    assert not (ctx.work_dir / "pi_1").exists() and not pi_2.exists() and pi_r.exists()  # superseded iterates deleted

    def estimate(c_hat: float) -> dict[str, float]:
        return {"cost_estimate": c_hat, "unsafe_rate": -1.0, "mean_cost": -1.0, "reward": 0.0, "kl_to_pi_r": 0.0}

    assert res.trajectory == [
        {"iteration": 1, "lambda": 0.0, "beta_stage2": None, "trained": False, **estimate(0.5), "lambda_next": pytest.approx(3.0), "threshold": 0.2},
        {"iteration": 2, "lambda": pytest.approx(3.0), "beta_stage2": pytest.approx(0.1 / 3), "trained": True, **estimate(0.5),
         "lambda_next": pytest.approx(6.0), "threshold": 0.2},
        {"iteration": 3, "lambda": pytest.approx(6.0), "beta_stage2": pytest.approx(0.1 / 6), "trained": True, **estimate(0.4),
         "lambda_next": pytest.approx(8.0), "threshold": 0.2},
    ]
    assert log == res.trajectory and res.model_path == str(ctx.out_dir) and res.models_trained == 2
    assert res.networks_held == ["policy", "pi_r_hat (frozen stage-2 reference: log-probs on D_c cached once; reloaded at dual time for KL)",
                                 "cost annotator (dual time)", "reward annotator (trajectory logging only)"]
    assert res.extra == {"mode": "primal_dual", "beta": 0.1, "threshold": 0.2, "threshold_units": "unsafe_rate", "lambda_final": pytest.approx(8.0),
                         "iterations": 3, "warm_start": "previous",
                         "provenance": "PD-DPO v1 ran fixed λ = 5 with no dual update [paper]; every other setting is [ours]"}


def test_pddpo_dual_estimate_without_in_memory_weights_closes_the_generator(tmp_path, monkeypatch) -> None:
    """A generator plugin with no `model`/`tokenizer` attributes (an API or vLLM engine): the policy log-probs load the
    policy folder itself; the generator is closed before the reference loads (and in the π = π_r̂ branch too);
    generation.cache=false samples afresh each time. Planted: the weights or tokenizer assumed present, `None` handed
    to `close_generator`, the run's cache setting ignored."""
    import methods.pddpo as pddpo

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    events: list[Any] = []

    class Plugin:
        name, fingerprint = "plugin", "disk-plugin"  # cacheable, were the cache on

        def generate(self, prompts: list[str], params) -> list[str]:
            events.append("generate")
            return [p[-1] for p in prompts]

        def close(self) -> None:
            events.append("close")

    def logprobs(model, tok, prompts, responses, cfg, device, *a):
        events.append(("logprobs", model, tok, list(responses)))
        return torch.tensor([-1.0, -2.0]) if model == tmp_path / "pi" else torch.tensor([-2.0, -2.0])

    _, ctx, _ = make_ctx(tmp_path, "pddpo", ["generation.cache=false"], cost_fn=lambda y: float(y == "b"), reward_fn=lambda y: 2.0)
    ctx.make_generator = lambda model, tokenizer=None: Plugin()
    monkeypatch.setattr(pddpo, "sequence_logprobs", logprobs)
    out = pddpo.dual_estimate(ctx, tmp_path / "pi", tmp_path / "ref", "unsafe_rate", ["pa", "pb"])
    assert events == ["generate", ("logprobs", tmp_path / "pi", None, ["a", "b"]), "close", ("logprobs", tmp_path / "ref", None, ["a", "b"])]
    assert out["kl_to_pi_r"] == pytest.approx(0.5) and out["cost_estimate"] == 0.5 and out["reward"] == 2.0
    events.clear()
    out = pddpo.dual_estimate(ctx, tmp_path / "pi", tmp_path / "ref", "unsafe_rate", ["pa", "pb"], same_as_reference=True)
    assert events == ["generate", "close"] and out["kl_to_pi_r"] == 0.0  # sampled again: the cache is off


def test_pddpo_refusals_name_the_problem_and_the_fix(tmp_path, fake_dpo) -> None:
    """Planted: the method's name or one of the two pair kinds dropped from the check; K = 0 accepted in the dual
    loop (or refused with a fixed λ); the messages' wording."""
    import methods.pddpo as pddpo

    for kind, data in (("reward", {"reward_pairs": []}), ("cost", {"cost_pairs": []})):
        m, ctx, _ = make_ctx(tmp_path / kind, "pddpo", **data)
        with pytest.raises(BenchError, match=rf"^pddpo needs reward and cost pairs in the train fold, but there are no {kind} pairs: "):
            m.train(ctx)
    assert fake_dpo.calls == []
    m, ctx, _ = make_ctx(tmp_path / "dual", "pddpo", dual=[])
    with pytest.raises(BenchError, match=r"^PD-DPO's dual step needs held-out dual prompts, but the dataset's dual fold is empty: "
                                         r"set data\.max_dual_prompts > 0 \(they are never evaluation prompts\)$"):
        m.train(ctx)
    with pytest.raises(BenchError, match=r"^config key 'methods\.pddpo\.num_iterations': 0 trains no primal step; use an int >= 1 "
                                         r"\(or fixed_lambda=λ for one step\)"):
        make_ctx(tmp_path / "k0", "pddpo", ["method.num_iterations=0"])
    m, ctx, _ = make_ctx(tmp_path / "fixed", "pddpo", ["method.num_iterations=0", "method.fixed_lambda=2"])  # fixed λ: one step, K unused
    assert m.config.num_iterations == 0
    ctx.cfg.scoring.threshold_units = "rate"  # past the config check: the method still refuses it by name
    with pytest.raises(BenchError, match=r"^threshold_units 'rate' is not one of unsafe_rate, mean_cost$"):
        pddpo.resolve_constraint(m.config, ctx)


def test_sacpo_naive_merge_stage_calls_records_and_result(tmp_path, fake_dpo, monkeypatch) -> None:
    """Default temperatures (β = train.beta, β/λ = 0.01): both trainings get the run's config and device under
    their shared-store names; each stage's log reads its own training record; the merge record and the result are
    pinned. Planted: β taken from nowhere, cfg/device/run names dropped or exchanged, the records' keys, λ = β·β/λ."""
    import methods.sacpo_naive_merge as naive

    kwargs = spy_dpo_records(monkeypatch, fake_dpo)
    merges = []
    monkeypatch.setattr(naive, "merge_models", lambda a, b, q, out_dir, record: merges.append((a, b, q, out_dir, record)) or Path(out_dir))
    m, ctx, log = make_ctx(tmp_path, "sacpo-naive-merge")
    res = m.train(ctx)
    helpful, safe = ctx.work_dir / "naive_helpful", ctx.work_dir / "naive_safe"
    common = dict(init=ctx.policy_path, ref=None, cfg=ctx.cfg, device="cpu")
    assert kwargs == [dict(common, beta=0.1, out_dir=helpful, run_name="sacpo-helpful"),
                      dict(common, beta=0.01, out_dir=safe, run_name="sacpo-safe-from-sft")]
    assert [c["pairs"] for c in fake_dpo.calls] == [REWARD_PAIRS, COST_PAIRS]
    assert log == [{"stage": "helpful", "beta": 0.1, "train_loss": 0.25, "steps": 11, "pairs": 4},
                   {"stage": "safe", "beta": 0.01, "train_loss": 0.5, "steps": 12, "pairs": 3}, {"stage": "merge", "q": 0.5}]
    assert merges == [(helpful, safe, 0.5, ctx.out_dir,
                       {"merge": {"q": 0.5, "a": str(helpful), "b": str(safe), "rule": "(1-q)*a + q*b, float32 accumulation"}})]
    assert res.model_path == str(ctx.out_dir) and res.models_trained == 2 and res.networks_held == ["policy", "reference"]
    assert res.extra == {"variant": "naive-merge", "beta": 0.1, "beta_over_lambda": 0.01, "lambda": pytest.approx(10.0), "q": 0.5,
                         "merged": {"helpful (weight 1-q)": str(helpful), "safe (weight q)": str(safe)},
                         "provenance": "rule and beta/lambda = 0.01 [paper, docs/methods.md §4.4]; q = 0.5 [ours]"}


def test_sacpo_naive_merge_refusals_name_the_problem_and_the_fix(tmp_path, fake_dpo, monkeypatch) -> None:
    """Planted: the method's name or one pair kind dropped from the check; the two trainings landing in one folder
    merged anyway; the messages' wording."""
    import harness.training.dpo

    for kind, data in (("reward", {"reward_pairs": []}), ("cost", {"cost_pairs": []})):
        m, ctx, _ = make_ctx(tmp_path / kind, "sacpo-naive-merge", **data)
        with pytest.raises(BenchError, match=rf"^sacpo-naive-merge needs reward and cost pairs in the train fold, but there are no {kind} pairs: "):
            m.train(ctx)
    assert fake_dpo.calls == []
    with pytest.raises(BenchError, match=r"^config key 'methods\.sacpo-naive-merge\.safety_first': the naive merge trains both models from "
                                         r"the SFT model, so there is no order; leave it false"):
        make_ctx(tmp_path / "order", "sacpo-naive-merge", ["method.safety_first=true"])
    one = tmp_path / "one"
    monkeypatch.setattr(harness.training.dpo, "train_dpo", lambda pairs, **kw: fake_dpo(pairs, **{**kw, "out_dir": one}))
    monkeypatch.setattr(harness.training.dpo, "read_train_record", fake_dpo.record)
    m, ctx, _ = make_ctx(tmp_path / "same", "sacpo-naive-merge")
    with pytest.raises(BenchError, match=r"^sacpo-naive-merge: the helpful and safe models are one folder; nothing to merge$"):
        m.train(ctx)


# -- online PD-DPO ------------------------------------------------------------------------------------------------


def test_online_pairs_put_the_cheaper_response_first(tmp_path) -> None:
    """Planted: cost pairs with the costlier response chosen; reward pairs with the lower reward chosen; safety
    labels from the wrong response; ties kept."""
    answers = {  # prompt -> (first draw, second draw)
        "p0": ("r=1 c=2", "r=3 c=-1"),  # second is better on both
        "p1": ("r=5 c=-2", "r=0 c=1"),  # first is better on both
        "p2": ("r=1 c=1", "r=1 c=1"),  # identical: no pair of either kind
        "p3": ("r=2 c=0", "r=2 c=0.5"),  # reward tie: only a cost pair
        "p4": ("r=1 c=-1", "r=0 c=0"), "p5": ("r=0 c=0", "r=1 c=-1"), "p6": ("r=1 c=1", "r=2 c=0"),  # cost 0 is safe
        "p7": ("r=1 c=0.5", "r=0 c=2"), "p8": ("r=0 c=3", "r=1 c=0.5"),  # any cost > 0 is unsafe
        "p9": ("r=1 c=1", "r=2 c=1"),  # cost tie: only a reward pair
    }

    def respond(prompt, params):
        return answers[prompt][params.seed % 1000]  # the two draws use seeds seed + 1000k + {0, 1}

    m, ctx, _ = make_ctx(tmp_path, "pddpo-online", ["seed=0"], respond=respond)
    new_r, new_c = m._sample_pairs(ctx, "policy", list(answers), k=1)
    assert [(p.prompt, p.chosen, p.rejected) for p in new_r] == [("p0", "r=3 c=-1", "r=1 c=2"), ("p1", "r=5 c=-2", "r=0 c=1"),
                                                                 ("p4", "r=1 c=-1", "r=0 c=0"), ("p5", "r=1 c=-1", "r=0 c=0"),
                                                                 ("p6", "r=2 c=0", "r=1 c=1"), ("p7", "r=1 c=0.5", "r=0 c=2"),
                                                                 ("p8", "r=1 c=0.5", "r=0 c=3"), ("p9", "r=2 c=1", "r=1 c=1")]
    assert [(p.prompt, p.chosen, p.rejected) for p in new_c] == [("p0", "r=3 c=-1", "r=1 c=2"), ("p1", "r=5 c=-2", "r=0 c=1"),
                                                                 ("p3", "r=2 c=0", "r=2 c=0.5"), ("p4", "r=1 c=-1", "r=0 c=0"),
                                                                 ("p5", "r=1 c=-1", "r=0 c=0"), ("p6", "r=2 c=0", "r=1 c=1"),
                                                                 ("p7", "r=1 c=0.5", "r=0 c=2"), ("p8", "r=1 c=0.5", "r=0 c=3")]
    assert [(p.chosen_safe, p.rejected_safe) for p in new_c] == [(True, False), (True, False), (True, False), (True, True), (True, True),
                                                                 (True, False), (False, False), (False, False)]
    assert all(p.source == "online:iter1" for p in new_r + new_c)


def test_online_bonus_margin_favours_the_safer_response(tmp_path, fake_dpo, monkeypatch) -> None:
    """φ(chosen) = 0, φ(rejected) = e₁, α_c = 0: every margin is (b_r(y_u) − b_r(y_s))/λ = α_r/√(κ + n_r)/λ > 0,
    with n_r the reward pairs folded into Σ_r. Planted: safe/unsafe exchanged, b_r/b_c exchanged, no 1/λ."""
    import harness.models
    import methods.pddpo_online as online

    def features(model, tok, prompts, responses, cfg, device):
        return [torch.zeros(4, dtype=torch.float64) if parse(y, "c") <= -0.5 else torch.eye(4, dtype=torch.float64)[0] for y in responses]

    monkeypatch.setattr(online, "response_features", features)
    monkeypatch.setattr(harness.models, "load_policy", lambda *a, **k: (SimpleNamespace(config=SimpleNamespace(hidden_size=4)), None))
    monkeypatch.setattr(online, "dual_estimate", ScriptedEstimates([0.9]))
    draws = {0: "r=1 c=1", 1: "r=2 c=-1"}  # second draw: safer and more helpful, φ = 0
    reward_pairs = [pair(0, "r=2 c=-1", "r=1 c=1"), pair(1, "r=3 c=-1", "r=0 c=1")]
    cost_pairs = [pair(10, "r=0 c=-1", "r=1 c=2")]
    m, ctx, _ = make_ctx(tmp_path, "pddpo-online", ["method.lambda_init=2.0", "method.alpha_r=0.3", "method.alpha_c=0.0", "method.kappa=1.0",
                                                    "method.prompts_per_iteration=2", "method.num_iterations=1", "method.beta=0.1", "seed=0"],
                         reward_pairs=reward_pairs, cost_pairs=cost_pairs, respond=lambda p, params: draws[params.seed % 1000])
    res = m.train(ctx)
    stage1, primal = fake_dpo.calls
    assert stage1["pairs"] == reward_pairs and primal["ref"] == ctx.work_dir / "pi_r_hat" and primal["beta"] == pytest.approx(0.05)
    (rec,) = res.trajectory
    assert rec["new_reward_pairs"] == 2 and rec["new_cost_pairs"] == 2 and len(primal["pairs"]) == 3
    assert all(p.chosen == "r=2 c=-1" for p in primal["pairs"][1:])  # online cost pairs: cheaper first
    want = 0.3 / math.sqrt(1.0 + 4) / 2.0  # n_r = 2 offline + 2 online reward pairs, λ = 2
    assert primal["margins"] == pytest.approx([want] * 3, rel=1e-9)
    assert rec["lambda_next"] == pytest.approx(2.0 + 10.0 * (0.9 - ctx.cfg.scoring.threshold))


def unit_feature(prompt: str, response: str, dim: int = 3) -> torch.Tensor:
    """A fixed pseudo-random unit vector per (prompt, response), so φ tells every response of every prompt apart."""
    v = torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(f"{prompt}|{response}".encode())), dtype=torch.float64)
    return v / v.norm()


def test_online_margins_use_every_pair_so_far_in_each_covariance(tmp_path, fake_dpo, monkeypatch) -> None:
    """Each primal's margins are (B(y_u) − B(y_s))/λ_k, B = α_r‖φ‖_{Σ_r⁻¹} + λ_k·α_c‖φ‖_{Σ_c⁻¹}, where Σ_r (Σ_c) is
    κI plus (φ_chosen − φ_rejected)(φ_chosen − φ_rejected)ᵀ over every offline and online reward (cost) pair so far:
    recomputed here with a dense inverse. φ comes from the frozen feature model, once per (prompt, response); the
    online prompts are drawn from both folds' train prompts with the run seed; the generator is closed before the
    annotators score. Planted: a covariance missing the offline or the online pairs, α_r ↔ α_c, Σ_r ↔ Σ_c, φ of the
    wrong prompt or response, κ ignored."""
    import harness.models
    import methods.pddpo_online as online

    feature_model = SimpleNamespace(config=SimpleNamespace(hidden_size=3))
    asked, events = [], []

    def features(model, tok, prompts, responses, cfg, device):
        assert (model, tok, cfg, device) == (feature_model, "tok", ctx.cfg, "cpu")
        asked.extend(zip(prompts, responses))
        return torch.stack([unit_feature(x, y) for x, y in zip(prompts, responses)])

    class Gen(FakeGenerator):
        def close(self):
            events.append("close")

    monkeypatch.setattr(online, "response_features", features)
    monkeypatch.setattr(harness.models, "load_policy", lambda *a: (feature_model, "tok"))
    est = ScriptedEstimates([0.6, 0.6])
    monkeypatch.setattr(online, "dual_estimate", est)
    draws = ("r=1 c=-1", "r=2 c=1")  # the helpful one is the costly one: reward and cost pairs point opposite ways
    m, ctx, log = make_ctx(tmp_path, "pddpo-online", ["seed=0", "method.lambda_init=2.0", "method.eta=1", "method.num_iterations=2",
                                                      "method.prompts_per_iteration=3", "method.alpha_r=0.3", "method.alpha_c=0.7",
                                                      "method.kappa=0.5", "method.keep_iterates=true", "method.max_dual_prompts=1",
                                                      "method.dual_temperature=0.3", "scoring.threshold=0.1"])
    ctx.make_generator = lambda model, tokenizer=None: events.append("generator") or Gen(lambda x, ps: draws[(len(x) + ps.seed) % 2])
    reward, cost = ctx.reward_annotator(), ctx.cost_annotator()
    ctx.reward_annotator, ctx.cost_annotator = (lambda: events.append("reward") or reward), (lambda: events.append("cost") or cost)
    res = m.train(ctx)

    stage1, p1, p2 = fake_dpo.calls
    pi_r, pi_1 = ctx.work_dir / "pi_r_hat", ctx.work_dir / "pi_1"
    rng = random.Random(0)
    batches = [rng.sample(sorted({p.prompt for p in REWARD_PAIRS + COST_PAIRS}), 3) for _ in range(2)]
    online_c = [PreferencePair(x, draws[0], draws[1], chosen_safe=True, rejected_safe=False, source=f"online:iter{k}")
                for k, batch in enumerate(batches, start=1) for x in batch]
    assert (stage1["pairs"], stage1["init"], stage1["ref"], stage1["beta"], stage1["out"]) == (REWARD_PAIRS, ctx.policy_path, None, ctx.cfg.train.beta, pi_r)
    assert p1["pairs"] == COST_PAIRS + online_c[:3] and p2["pairs"] == COST_PAIRS + online_c
    assert (p1["init"], p2["init"], p1["ref"], p2["ref"], p2["out"]) == (pi_r, pi_1, pi_r, pi_r, ctx.out_dir) and pi_1.exists()  # kept
    assert all(c["cfg"] is ctx.cfg and c["device"] == "cpu" for c in fake_dpo.calls)
    assert len(asked) == len(set(asked)) and set(asked) == {(p.prompt, y) for p in REWARD_PAIRS + COST_PAIRS for y in (p.chosen, p.rejected)} | {
        (x, y) for batch in batches for x in batch for y in draws}  # φ once per (prompt, response)
    assert events == ["generator", "close", "reward", "reward", "cost", "cost"] * 2

    def bonus(phi: torch.Tensor, diffs: list[torch.Tensor], alpha: float) -> float:
        sigma = 0.5 * torch.eye(3, dtype=torch.float64) + sum(torch.outer(d, d) for d in diffs)
        return alpha * float(phi @ torch.linalg.inv(sigma) @ phi) ** 0.5

    def diffs(pairs) -> list[torch.Tensor]:
        return [unit_feature(p.prompt, p.chosen) - unit_feature(p.prompt, p.rejected) for p in pairs]

    for k, call, lam in ((1, p1, 2.0), (2, p2, 2.5)):  # λ_2 = 2 + 1·(0.6 − 0.1)
        seen = [x for batch in batches[:k] for x in batch]
        d_r = diffs(REWARD_PAIRS) + [unit_feature(x, draws[1]) - unit_feature(x, draws[0]) for x in seen]
        d_c = diffs(COST_PAIRS + online_c[: 3 * k])

        def big_b(x: str, y: str) -> float:
            return bonus(unit_feature(x, y), d_r, 0.3) + lam * bonus(unit_feature(x, y), d_c, 0.7)

        want = [(big_b(p.prompt, p.rejected) - big_b(p.prompt, p.chosen)) / lam for p in call["pairs"]]
        assert call["margins"] == pytest.approx(want, rel=1e-9) and call["beta"] == pytest.approx(ctx.cfg.train.beta / lam)
        assert res.trajectory[k - 1]["bonus_margin_mean"] == pytest.approx(sum(want) / len(want), rel=1e-9)
    assert [(r["lambda"], r["new_reward_pairs"], r["reward_pairs"], r["cost_pairs"]) for r in log] == [(2.0, 3, 7, 6), (2.5, 3, 10, 9)]
    assert [(c["ctx"], c["policy"], c["reference"], c["units"], c["prompts"], c["temperature"], c["same_as_reference"]) for c in est.calls] == [
        (ctx, pi_1, pi_r, "unsafe_rate", DUAL[:1], 0.3, False), (ctx, ctx.out_dir, pi_r, "unsafe_rate", DUAL[:1], 0.3, False)]


def test_online_fixed_lambda_and_warm_start_from_pi_r(tmp_path, fake_dpo, monkeypatch) -> None:
    """A fixed λ is kept through every online iteration (no dual step), each primal at β/λ from π_r̂ when
    warm_start = pi_r; at least one iteration is required, since the online loop is what writes the model."""
    import harness.models
    import methods.pddpo_online as online

    monkeypatch.setattr(online, "response_features", lambda model, tok, prompts, responses, cfg, device: torch.ones(len(responses), 2))
    monkeypatch.setattr(harness.models, "load_policy", lambda *a: (SimpleNamespace(config=SimpleNamespace(hidden_size=2)), None))
    monkeypatch.setattr(online, "dual_estimate", ScriptedEstimates([0.9, 0.9]))
    m, ctx, log = make_ctx(tmp_path, "pddpo-online", ["method.fixed_lambda=4", "method.warm_start=pi_r", "method.num_iterations=2",
                                                      "method.beta=0.2"], respond=lambda x, ps: ("r=1 c=-1", "r=2 c=1")[ps.seed % 2])
    res = m.train(ctx)
    pi_r = ctx.work_dir / "pi_r_hat"
    assert [(c["init"], c["ref"], c["beta"]) for c in fake_dpo.calls[1:]] == [(pi_r, pi_r, pytest.approx(0.05))] * 2
    assert [(r["lambda"], r["lambda_next"], r["trained"]) for r in log] == [(4.0, 4.0, True)] * 2 and res.extra["lambda_final"] == 4.0
    assert not (ctx.work_dir / "pi_1").exists()  # superseded iterates are deleted unless keep_iterates
    est = ScriptedEstimates([0.9, 0.9])
    monkeypatch.setattr(online, "dual_estimate", est)
    m, ctx, log = make_ctx(tmp_path / "lam0", "pddpo-online", ["method.fixed_lambda=0", "method.num_iterations=2"],
                           respond=lambda x, ps: ("r=1 c=-1", "r=2 c=1")[ps.seed % 2])
    sampled, factory = [], ctx.make_generator
    ctx.make_generator = lambda model, tokenizer=None: sampled.append(model) or factory(model)
    m.train(ctx)
    pi_r = ctx.work_dir / "pi_r_hat"  # λ = 0: every iterate is π_r̂ itself, copied only into the final folder
    assert sampled == [pi_r, pi_r] and [c["policy"] for c in est.calls] == [pi_r, ctx.out_dir] and len(fake_dpo.calls) == 4
    assert [c["same_as_reference"] for c in est.calls] == [True, True] and not (ctx.work_dir / "pi_1").exists()
    with pytest.raises(BenchError, match="num_iterations': 0 is out of range; use a value >= 1"):
        make_ctx(tmp_path / "zero", "pddpo-online", ["method.fixed_lambda=4", "method.num_iterations=0"])


# -- MoCAN / PeCAN --------------------------------------------------------------------------------------------------


def test_mocan_relabel_prefers_safer_when_lambda_is_large_and_helpful_when_zero(tmp_path, fake_dpo) -> None:
    """s = r + λ·g with g = −cost. Planted: s = r − λ·g, scores of chosen and rejected exchanged, the relabelled
    pairs not the ones trained on, cost pairs relabelled instead of reward pairs."""
    m, ctx, log = make_ctx(tmp_path, "mocan", ["method.lambda_=100", "method.utility=score", "method.beta=0.3"])
    res = m.train(ctx)
    (call,) = fake_dpo.calls
    # |Δs| ≥ 100 on every pair: σ is exactly 0 or 1, so the draw cannot matter
    assert [COST(p.chosen) < COST(p.rejected) for p in call["pairs"]] == [True] * 4
    assert [p.prompt for p in call["pairs"]] == [p.prompt for p in REWARD_PAIRS]
    assert call["beta"] == 0.3 and call["ref"] is None and call["init"] == ctx.policy_path
    assert res.extra["relabel"]["swapped"] == 1 and log[-2]["swap_rate"] == 0.25  # only pair 0 had the costlier response chosen
    assert Path(res.extra["relabel"]["path"]).parent == ctx.out_dir
    # λ = 0 and reward gaps of 40: the more helpful response is chosen whatever its cost
    wide = [pair(i, f"r={40 * (i % 2)} c=5", f"r={40 * (1 - i % 2)} c=-5") for i in range(4)]
    m, ctx, _ = make_ctx(tmp_path / "zero", "mocan", ["method.lambda_=0", "method.utility=score"], reward_pairs=wide)
    m.train(ctx)
    assert [REWARD(p.chosen) for p in fake_dpo.calls[-1]["pairs"]] == [40.0] * 4


def test_mocan_indicator_utility_counts_unsafe_responses(tmp_path, fake_dpo) -> None:
    """utility=auto with unsafe-rate units uses g = −1[cost > 0]: cost 0.1 and 50 are equally unsafe."""
    pairs = [pair(0, "r=0 c=50", "r=0 c=0.1"), pair(1, "r=0 c=0.1", "r=0 c=-3")]
    m, ctx, _ = make_ctx(tmp_path, "mocan", ["method.lambda_=100", "scoring.threshold_units=unsafe_rate"], reward_pairs=pairs)
    res = m.train(ctx)
    (call,) = fake_dpo.calls
    assert res.extra["utility"] == "indicator"
    assert (call["pairs"][1].chosen, call["pairs"][1].rejected) == ("r=0 c=-3", "r=0 c=0.1")  # safe beats unsafe
    rows = [json.loads(x) for x in Path(res.extra["relabel"]["path"]).read_text().splitlines()]
    assert rows[0]["p_keep"] == 0.5 and rows[1]["p_keep"] == pytest.approx(0.0, abs=1e-40)  # both unsafe: a coin flip


@pytest.mark.parametrize("bound,want", [(0.5, (1 - 0.5 * math.log(3)) / 2), (3.0, 0.0)])
def test_mocan_dual_direction(tmp_path, fake_dpo, monkeypatch, bound: float, want: float) -> None:
    """Two reference samples per prompt, safe (r 0, c −1) and unsafe (r 1, c +1), β = 0.5, E[c] ≤ b_c = 0.5. The
    tilted weights are w_u/w_s = exp((1 − 2λ)/β), and E_λ[c] = w_u − w_s ≤ 0.5 ⇔ w_u ≤ 3/4 ⇔ λ ≥ (1 − β·ln 3)/2; a
    loose bound gives λ* = 0. Planted: the bound's sign (E[g] ≥ +b_c gives (1 + β·ln 3)/2), reward and utility
    exchanged, the dual fed costs instead of utilities."""
    import methods.mocan as mocan

    monkeypatch.setattr(mocan, "sample_reference", lambda ctx, n, k, t, p: (DUAL, [["r=0 c=-1", "r=1 c=1"]] * len(DUAL)))
    m, ctx, log = make_ctx(tmp_path, "mocan", ["method.beta=0.5", "method.utility=score", f"method.threshold={bound}",
                                               "method.samples_per_prompt=2", "method.eta=2"])
    res = m.train(ctx)
    dual = res.extra["dual"]
    assert dual["converged"] and res.extra["lambda"] == pytest.approx(want, abs=1e-3)
    assert dual["dual_prompts"] == 2 and dual["samples_per_prompt"] == 2 and dual["ref_utility_mean"] == 0.0
    assert log[0]["stage"] == "dual" and log[0]["lambda"] == res.extra["lambda"]


class FakeLogProbs:
    """Stands in for `methods.pecan._log_probs`: per model (by folder name), log-probs of the dual samples and of
    each training pair's chosen/rejected response, read from the response text: π_ref's is "p=…" (0 without one),
    π_r's is p + r and π_g's p − c, so that log π_r/π_ref = r and log π_g/π_ref = −c (safety). Remembers each call."""

    def __init__(self):
        self.models: list[str] = []
        self.calls: list[tuple] = []  # (model folder name, prompts, responses, batch_size)
        self.contexts: list[Any] = []

    def __call__(self, path, ctx, prompts, responses, pairs, batch_size):
        name = Path(str(path)).name
        self.models.append(name)
        self.calls.append((name, prompts, responses, batch_size))
        self.contexts.append(ctx)

        def lp(ys: list[str]) -> torch.Tensor:
            ref = [float(dict(part.split("=") for part in y.split()).get("p", 0)) for y in ys]
            if name == "pi_r":
                return torch.tensor([p + REWARD(y) for p, y in zip(ref, ys)], dtype=torch.float64)
            if name == "pi_g":
                return torch.tensor([p - COST(y) for p, y in zip(ref, ys)], dtype=torch.float64)
            return torch.tensor(ref, dtype=torch.float64)

        return lp(responses), lp([p.chosen for p in pairs]), lp([p.rejected for p in pairs])


def test_pecan_scorers_relabel_and_dual_direction(tmp_path, fake_dpo, monkeypatch) -> None:
    """π_r is trained on reward pairs and π_g on cost pairs; h = log π_· − log π_ref; the relabel score is
    h_r + λ·h_g. Planted: h_r/h_g exchanged, h = log π_ref − log π_·, the margin's sign, π_r trained on D_c."""
    import methods.pecan as pecan

    fake = FakeLogProbs()
    monkeypatch.setattr(pecan, "_log_probs", fake)
    monkeypatch.setattr(pecan, "sample_reference", lambda ctx, n, k, t, p: (DUAL, [["r=0 c=-1", "r=1 c=1"]] * len(DUAL)))
    m, ctx, log = make_ctx(tmp_path, "pecan", ["method.lambda_=100", "method.beta=0.2"])
    res = m.train(ctx)
    pi_r, pi_g, final = fake_dpo.calls
    assert (pi_r["run_name"], pi_g["run_name"], final["run_name"]) == ("pecan-pi_r", "pecan-pi_g", "pecan")
    assert pi_r["pairs"] == REWARD_PAIRS and pi_g["pairs"] == COST_PAIRS
    assert all(c["init"] == ctx.policy_path and c["ref"] is None and c["beta"] == 0.2 for c in fake_dpo.calls)
    assert sorted(fake.models) == sorted(["sft", "pi_r", "pi_g"])
    assert [COST(p.chosen) < COST(p.rejected) for p in final["pairs"]] == [True] * 4  # λ = 100: safety decides
    assert res.models_trained == 3 and res.extra["lambda"] == 100.0
    # the dual: h_r = r, h_g = −c on the samples; the required improvement b over π_ref decides λ
    m, ctx, _ = make_ctx(tmp_path / "dual", "pecan", ["method.beta=0.5", "method.margin=0.1", "method.samples_per_prompt=2"])
    res = m.train(ctx)
    lam = res.extra["lambda"]
    # w_s ∝ e^λ, w_u ∝ e^(1 − λ): E_λ[h_g] − E_ref[h_g] = w_s − w_u = tanh(λ − ½), which must reach b/β = 0.2
    assert lam == pytest.approx(0.5 + math.atanh(0.2), abs=1e-3) and res.extra["dual"]["converged"]
    assert res.extra["dual"]["kl_ref_pi_g"] == pytest.approx(0.0)


def test_pecan_stops_an_infeasible_dual_before_any_step(tmp_path, fake_dpo, monkeypatch) -> None:
    """Samples give h_g = (1, −1) per prompt: the most any λ reaches is E[h_g] − E_ref[h_g] = 1 nat. b/β = 1.2 is out
    of reach: the dual stops before its first step (max slack 1 − 1.2 = −0.2), trains at λ_cap, and the learning
    checks flag it; b/β = 0.2 is feasible and converges. Planted: the margin's sign in the reachable-slack bound."""
    import methods.pecan as pecan
    from harness.training.learning import infeasible_dual, trajectory_checks

    monkeypatch.setattr(pecan, "_log_probs", FakeLogProbs())
    monkeypatch.setattr(pecan, "sample_reference", lambda ctx, n, k, t, p: (DUAL, [["r=0 c=-1", "r=1 c=1"]] * len(DUAL)))
    m, ctx, _ = make_ctx(tmp_path / "no", "pecan", ["method.beta=0.5", "method.margin=0.6", "method.samples_per_prompt=2",
                                                    "method.lambda_cap=50"])
    res = m.train(ctx)
    dual = res.extra["dual"]
    assert dual["infeasible"] and not dual["converged"] and dual["total_iterations"] == 0
    assert dual["max_slack"] == pytest.approx(1.0 - 1.2, abs=1e-9) and res.extra["lambda"] == 50.0
    assert [COST(p.chosen) < COST(p.rejected) for p in fake_dpo.calls[-1]["pairs"]] == [True] * 4  # λ = 50: safety decides
    checks = trajectory_checks("pecan", {"trajectory": [], "extra": res.extra}, {}, ctx.cfg.learning)
    assert infeasible_dual(checks) and checks[-1]["passed"] is False and checks[-1]["status"] == "diverged"
    m, ctx, _ = make_ctx(tmp_path / "raise", "pecan", ["method.beta=0.5", "method.margin=0.6", "method.samples_per_prompt=2",
                                                       "method.on_infeasible=raise"])
    with pytest.raises(BenchError, match=r"^PeCAN: the dual is infeasible \(E_π\[h_g\] − E_π_ref\[h_g\] ≥ b/β = 1.2 nats: "):
        m.train(ctx)
    # without the up-front check the solver runs until λ passes the cap (η = 2, gradient ≈ −0.2: over 100 steps), then stops as infeasible
    m, ctx, _ = make_ctx(tmp_path / "unchecked", "pecan", ["method.beta=0.5", "method.margin=0.6", "method.samples_per_prompt=2",
                                                           "method.lambda_cap=50", "method.check_feasible=false"])
    dual = m.train(ctx).extra["dual"]
    assert dual["infeasible"] and dual["total_iterations"] > 20 and dual["reason"].startswith("λ passed the cap 50 after")
    m, ctx, _ = make_ctx(tmp_path / "yes", "pecan", ["method.beta=0.5", "method.margin=0.1", "method.samples_per_prompt=2"])
    res = m.train(ctx)
    assert not res.extra["dual"]["infeasible"] and res.extra["dual"]["converged"]
    assert res.extra["dual"]["max_slack"] == pytest.approx(1.0 - 0.2, abs=1e-9)
    assert not infeasible_dual(trajectory_checks("pecan", {"trajectory": [], "extra": res.extra}, {}, ctx.cfg.learning))


def test_pecan_beta_in_relabel_scales_the_scores(tmp_path, fake_dpo, monkeypatch) -> None:
    import methods.pecan as pecan

    monkeypatch.setattr(pecan, "_log_probs", FakeLogProbs())
    pairs = [pair(0, "r=1 c=0", "r=0 c=0")]  # Δh_r = 1, Δh_g = 0
    for flag, want in ((False, 1 / (1 + math.exp(-1.0))), (True, 1 / (1 + math.exp(-0.25)))):
        m, ctx, _ = make_ctx(tmp_path / str(flag), "pecan", ["method.lambda_=1", "method.beta=0.25", f"method.beta_in_relabel={flag}"],
                             reward_pairs=pairs)
        res = m.train(ctx)
        row = json.loads(Path(res.extra["relabel"]["path"]).read_text())
        assert row["p_keep"] == pytest.approx(want, rel=1e-12)


def spy_dpo_records(monkeypatch, fake_dpo: FakeDPO) -> list[dict[str, Any]]:
    """On top of `fake_dpo`: keeps every keyword of each `train_dpo` call (device and cfg included) and gives each
    output folder its own record (train loss 0.25·n, 10 + n steps, the pairs it was given, for the n-th call), so a
    logged record shows which run it was read from."""
    import harness.training.dpo

    kwargs: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}

    def train(pairs, **kw):
        out = fake_dpo(pairs, **kw)
        kwargs.append(kw)
        records[str(out)] = {"train_loss": 0.25 * len(kwargs), "steps": 10 + len(kwargs), "pairs": len(pairs)}
        return out

    monkeypatch.setattr(harness.training.dpo, "train_dpo", train)
    monkeypatch.setattr(harness.training.dpo, "read_train_record", lambda path: records[str(path)])
    return kwargs


def test_pecan_dual_on_the_sampled_log_ratios_and_its_records(tmp_path, fake_dpo, monkeypatch) -> None:
    """The dual gets h = log π_· − log π_ref of the K samples of each prompt, regrouped per prompt, with the configured
    sampling, solver, margin and β; the relabel scores use the pairs' own log-ratios (β-scaled here). π_ref's log-probs
    vary across responses, so h = log π_· + log π_ref gives other numbers. Every stage's record is pinned."""
    import methods.pecan as pecan
    from methods.pecan import pecan_dual

    fake = FakeLogProbs()
    monkeypatch.setattr(pecan, "_log_probs", fake)
    samples = [["r=0 c=-1 p=-2", "r=1 c=1 p=-5", "r=0.5 c=0 p=-1"], ["r=2 c=0.5 p=-3", "r=0 c=-2 p=-4", "r=1 c=-1 p=-2"]]
    asked: list[tuple] = []
    monkeypatch.setattr(pecan, "sample_reference", lambda *a: asked.append(a) or (DUAL, samples))
    kwargs = spy_dpo_records(monkeypatch, fake_dpo)
    pairs = [pair(0, "r=1 c=1 p=-3", "r=0 c=-1 p=-1"), pair(1, "r=2 c=0 p=-2", "r=1 c=0.5 p=-6")]
    m, ctx, log = make_ctx(tmp_path, "pecan", ["method.beta=0.5", "method.margin=0.1", "method.num_prompts=2", "method.samples_per_prompt=3",
                                               "method.temperature=0.7", "method.top_p=0.9", "method.lambda_init=0.5",
                                               "method.logprob_batch_size=3", "method.relabel_seed=11", "method.beta_in_relabel=true"],
                           reward_pairs=pairs)
    res = m.train(ctx)
    assert asked == [(ctx, 2, 3, 0.7, 0.9)]
    flat_p, flat_y = [DUAL[0]] * 3 + [DUAL[1]] * 3, samples[0] + samples[1]
    assert sorted(fake.calls) == [(name, flat_p, flat_y, 3) for name in ("pi_g", "pi_r", "sft")] and fake.contexts == [ctx] * 3
    assert [(k["beta"], k["device"], k["cfg"]) for k in kwargs] == [(0.5, "cpu", ctx.cfg)] * 3

    hr, hg = np.array([[0, 1, 0.5], [2, 0, 1]]), np.array([[1, -1, 0], [-0.5, 2, 1]])
    want = pecan_dual(hr, hg, 0.1, 0.5, **m.config.solver())
    lam, dual = res.extra["lambda"], res.extra["dual"]
    assert want.converged and want.trajectory[0] == 0.5 and lam == want.lam
    stats = {"kl_ref_pi_g": -2.5 / 6, "h_r_mean": 0.75, "dual_prompts": 2, "samples_per_prompt": 3, "margin_over_beta": 0.2,
             "h_g_best_minus_mean": 1.5 - 2.5 / 6, "h_g_std": float(np.std(hg))}
    assert dual == {**want.summary(), **{k: dual[k] for k in stats}, "lambda_trajectory": want.trajectory}
    assert {k: dual[k] for k in stats} == pytest.approx(stats, rel=1e-12)

    rows = [json.loads(x) for x in Path(res.extra["relabel"]["path"]).read_text().splitlines()]
    # s = β·(h_r + λ·h_g) on each original response: h_r = r, h_g = −c whatever π_ref's log-prob p
    scores = [0.5 * (1 - lam), 0.5 * lam, 1.0, 0.5 * (1 - 0.5 * lam)]
    assert [s for r in rows for s in (r["score_original_chosen"], r["score_original_rejected"])] == pytest.approx(scores, rel=1e-12)
    assert [r["u"] for r in rows] == np.random.default_rng(11).random(2).tolist() and ctx.seed != 11
    assert [(p.chosen, p.rejected) for p in fake_dpo.calls[-1]["pairs"]] == [(r["chosen"], r["rejected"]) for r in rows]
    swapped = sum(r["swapped"] for r in rows)
    assert res.extra["relabel"]["seed"] == 11 and res.extra["relabel"]["swapped"] == swapped
    summary = {k: v for k, v in dual.items() if k != "lambda_trajectory"}
    assert log == [{"stage": "pi_r", "train_loss": 0.25, "steps": 11, "pairs": 2}, {"stage": "pi_g", "train_loss": 0.5, "steps": 12, "pairs": 3},
                   {"stage": "dual", "lambda": lam, **summary},
                   {"stage": "relabel", "lambda": lam, "pairs": 2, "swapped": swapped, "swap_rate": swapped / 2},
                   {"stage": "dpo", "lambda": lam, "train_loss": 0.75, "steps": 13}]


def test_pecan_fixed_lambda_defaults_and_records(tmp_path, fake_dpo, monkeypatch) -> None:
    """A fixed λ samples nothing (the log-prob passes get no dual samples), trains all three models at train.beta
    from π_ref by default, relabels with the run seed, and records where every model and file went."""
    import methods.pecan as pecan

    fake = FakeLogProbs()
    monkeypatch.setattr(pecan, "_log_probs", fake)
    monkeypatch.setattr(pecan, "sample_reference", lambda *a: pytest.fail("a fixed λ samples nothing"))
    kwargs = spy_dpo_records(monkeypatch, fake_dpo)
    m, ctx, log = make_ctx(tmp_path, "pecan", ["method.lambda_=2", "method.margin=0.3"])
    res = m.train(ctx)
    beta = ctx.cfg.train.beta
    assert sorted(fake.calls) == [(name, [], [], None) for name in ("pi_g", "pi_r", "sft")]
    assert [(k["run_name"], k["init"], k["ref"], k["beta"], k["out_dir"], k["device"], k["cfg"]) for k in kwargs] == [
        ("pecan-pi_r", ctx.policy_path, None, beta, ctx.work_dir / "pi_r", "cpu", ctx.cfg),
        ("pecan-pi_g", ctx.policy_path, None, beta, ctx.work_dir / "pi_g", "cpu", ctx.cfg),
        ("pecan", ctx.policy_path, None, beta, ctx.out_dir, "cpu", ctx.cfg)]
    path = ctx.out_dir / "pecan_relabelled.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert (ctx.work_dir / "pecan_relabelled.jsonl").read_text() == path.read_text()
    # s = h_r + λ·h_g = r − 2c on each original response of REWARD_PAIRS
    assert [(r["score_original_chosen"], r["score_original_rejected"]) for r in rows] == [(0, 3), (5, -2), (5, 2), (1, -2)]
    assert [r["u"] for r in rows] == np.random.default_rng(ctx.seed).random(4).tolist()
    swapped = sum(r["swapped"] for r in rows)
    assert log == [{"stage": "pi_r", "train_loss": 0.25, "steps": 11, "pairs": 4}, {"stage": "pi_g", "train_loss": 0.5, "steps": 12, "pairs": 3},
                   {"stage": "dual", "lambda": 2.0, "fixed_lambda": True},
                   {"stage": "relabel", "lambda": 2.0, "pairs": 4, "swapped": swapped, "swap_rate": swapped / 4},
                   {"stage": "dpo", "lambda": 2.0, "train_loss": 0.75, "steps": 13}]
    assert res.extra == {"beta": beta, "margin": 0.3, "beta_in_relabel": False, "lambda": 2.0,
                         "relabel": {"pairs": 4, "swapped": swapped, "seed": ctx.seed, "path": str(path)}}
    assert (res.model_path, res.models_trained, res.networks_held) == (str(ctx.out_dir), 3, ["policy", "reference", "pi_r", "pi_g"])
    m, ctx, _ = make_ctx(tmp_path / "no-cost", "pecan", ["method.lambda_=2"], cost_pairs=[])
    with pytest.raises(BenchError, match="^pecan needs reward and cost pairs in the train fold, but there are no cost pairs"):
        m.train(ctx)


def test_pecan_log_probs_are_harness_logprobs_of_one_fp32_load(tmp_path, tiny_model_path, monkeypatch) -> None:
    """`_log_probs` on the tiny random model: the model is loaded once, in fp32, on the run's device; the samples and
    the pairs' chosen/rejected responses are scored by that one model with the run's config and batch size, and the
    values equal `harness.training.logprobs` computed by hand on a separate load; no samples gives an empty tensor and no
    scoring call. Planted: another precision or device, an argument dropped or exchanged, samples skipped or scored
    when there are none."""
    import harness.training.logprobs as logprobs
    import harness.models as models
    import methods.pecan as pecan

    _, ctx, _ = make_ctx(tmp_path, "pecan")
    real_load, real_seq = models.load_policy, logprobs.sequence_logprobs
    loads, scored = [], []

    def load(path, device="cpu", precision="auto"):
        loads.append(((path, device, precision), real_load(path, device, precision)))
        return loads[-1][1]

    def seq(model, tok, prompts, responses, cfg, device=None, batch_size=None):
        scored.append((model, tok, list(prompts), list(responses), cfg, device, batch_size))
        return real_seq(model, tok, prompts, responses, cfg, device, batch_size)

    monkeypatch.setattr(models, "load_policy", load)
    monkeypatch.setattr(logprobs, "sequence_logprobs", seq)
    prompts, responses = ["a prompt", "a prompt", "another prompt"], ["yes", "no thanks", "maybe later on"]
    pairs = [pair(0, "sure, here it is", "no"), pair(1, "I can't", "ok fine")]
    samples, chosen, rejected = pecan._log_probs(str(tiny_model_path), ctx, prompts, responses, pairs, 3)
    ((args, (model, tok)),) = loads
    assert args == (tiny_model_path, "cpu", "fp32") and next(model.parameters()).dtype == torch.float32
    p_prompts = ["prompt 0", "prompt 1"]
    assert scored == [(model, tok, prompts, responses, ctx.cfg, "cpu", 3),
                      (model, tok, p_prompts, ["sure, here it is", "I can't"], ctx.cfg, "cpu", 3),
                      (model, tok, p_prompts, ["no", "ok fine"], ctx.cfg, "cpu", 3)]
    by_hand, by_hand_tok = real_load(tiny_model_path, "cpu", "fp32")
    torch.testing.assert_close(samples, real_seq(by_hand, by_hand_tok, prompts, responses, ctx.cfg, "cpu", 3))
    torch.testing.assert_close(chosen, real_seq(by_hand, by_hand_tok, p_prompts, ["sure, here it is", "I can't"], ctx.cfg, "cpu", 3))
    torch.testing.assert_close(rejected, real_seq(by_hand, by_hand_tok, p_prompts, ["no", "ok fine"], ctx.cfg, "cpu", 3))
    assert samples.shape == (3,) and bool((samples < 0).all()) and chosen.shape == rejected.shape == (2,)
    scored.clear()
    none, chosen_again, _ = pecan._log_probs(tiny_model_path, ctx, [], [], pairs, None)
    assert none.shape == (0,) and [s[2:4] for s in scored] == [(p_prompts, ["sure, here it is", "I can't"]), (p_prompts, ["no", "ok fine"])]
    assert [s[-1] for s in scored] == [None, None]  # the batch size left to the run's default
    torch.testing.assert_close(chosen_again, chosen)


def scorer_calls(ctx) -> list[tuple[str, list[str], list[str]]]:
    """Records (kind, prompts, responses) of every score call of the context's two fake annotators."""
    seen: list[tuple[str, list[str], list[str]]] = []
    for scorer in (ctx.reward_annotator(), ctx.cost_annotator()):
        real = scorer.score
        scorer.score = lambda p, y, real=real, kind=scorer.kind: seen.append((kind, list(p), list(y))) or real(p, y)
    return seen


def test_mocan_dual_on_the_scored_samples_and_its_records(tmp_path, fake_dpo, monkeypatch) -> None:
    """The dual gets r and g = −cost of the K samples of each prompt, regrouped per prompt, with the configured sampling,
    solver, bound and β (utility auto = score under mean-cost units); the pairs are scored with their own prompts
    and relabelled by s = r + λ·g. Every stage's record is pinned."""
    import methods.mocan as mocan

    samples = [["r=0 c=-1", "r=1 c=1", "r=0.5 c=0"], ["r=2 c=0.5", "r=0 c=-2", "r=1 c=-1"]]
    asked: list[tuple] = []
    monkeypatch.setattr(mocan, "sample_reference", lambda *a: asked.append(a) or (DUAL, samples))
    kwargs = spy_dpo_records(monkeypatch, fake_dpo)
    pairs = [pair(0, "r=1 c=1", "r=0 c=-1"), pair(1, "r=2 c=0", "r=1 c=0.5")]
    m, ctx, log = make_ctx(tmp_path, "mocan", ["method.beta=0.5", "method.threshold=0.2", "scoring.threshold_units=mean_cost",
                                               "method.num_prompts=2", "method.samples_per_prompt=3", "method.temperature=0.7",
                                               "method.top_p=0.9", "method.lambda_init=0.5", "method.relabel_seed=11"], reward_pairs=pairs)
    seen = scorer_calls(ctx)
    res = m.train(ctx)
    assert asked == [(ctx, 2, 3, 0.7, 0.9)]
    flat_p, flat_y = [DUAL[0]] * 3 + [DUAL[1]] * 3, samples[0] + samples[1]
    prompts2, responses2 = ["prompt 0", "prompt 1"] * 2, ["r=1 c=1", "r=2 c=0", "r=0 c=-1", "r=1 c=0.5"]
    assert sorted(seen) == sorted([("reward", flat_p, flat_y), ("cost", flat_p, flat_y), ("reward", prompts2, responses2),
                                   ("cost", prompts2, responses2)])
    assert [(k["beta"], k["device"], k["cfg"], k["out_dir"], k["run_name"]) for k in kwargs] == [(0.5, "cpu", ctx.cfg, ctx.out_dir, "mocan")]

    r, g = np.array([[0, 1, 0.5], [2, 0, 1]]), np.array([[1, -1, 0], [-0.5, 2, 1]])
    want = mocan.mocan_dual(r, g, -0.2, 0.5, **m.config.solver())
    lam, dual = res.extra["lambda"], res.extra["dual"]
    assert want.converged and lam > 0 and want.trajectory[0] == 0.5 and lam == want.lam
    ref_stats = {"ref_reward_mean": 0.75, "ref_utility_mean": 2.5 / 6, "dual_prompts": 2, "samples_per_prompt": 3}
    assert dual == {**want.summary(), **{k: dual[k] for k in ref_stats}, "lambda_trajectory": want.trajectory}
    assert {k: dual[k] for k in ref_stats} == pytest.approx(ref_stats, rel=1e-12)
    assert {k: res.extra[k] for k in ("beta", "utility", "cost_bound")} == {"beta": 0.5, "utility": "score", "cost_bound": 0.2}

    rows = [json.loads(x) for x in Path(res.extra["relabel"]["path"]).read_text().splitlines()]
    scores = [1 - lam, lam, 2.0, 1 - 0.5 * lam]  # s = r + λ·g on each original response
    assert [s for row in rows for s in (row["score_original_chosen"], row["score_original_rejected"])] == pytest.approx(scores, rel=1e-12)
    assert [row["u"] for row in rows] == np.random.default_rng(11).random(2).tolist() and ctx.seed != 11
    assert [(p.chosen, p.rejected) for p in fake_dpo.calls[-1]["pairs"]] == [(row["chosen"], row["rejected"]) for row in rows]
    swapped = sum(row["swapped"] for row in rows)
    assert res.extra["relabel"]["seed"] == 11 and res.extra["relabel"]["swapped"] == swapped
    summary = {k: v for k, v in dual.items() if k != "lambda_trajectory"}
    assert log == [{"stage": "dual", "lambda": lam, **summary},
                   {"stage": "relabel", "lambda": lam, "pairs": 2, "swapped": swapped, "swap_rate": swapped / 2},
                   {"stage": "dpo", "lambda": lam, "train_loss": 0.25, "steps": 11}]


def test_mocan_fixed_lambda_defaults_and_records(tmp_path, fake_dpo, monkeypatch) -> None:
    """A fixed λ samples nothing; β, the bound and the utility come from the run's settings (auto = indicator under
    unsafe-rate units); the relabel draw uses the run seed; the relabelled pairs are kept with the model."""
    import methods.mocan as mocan

    monkeypatch.setattr(mocan, "sample_reference", lambda *a: pytest.fail("a fixed λ samples nothing"))
    kwargs = spy_dpo_records(monkeypatch, fake_dpo)
    m, ctx, log = make_ctx(tmp_path, "mocan", ["method.lambda_=2"])
    res = m.train(ctx)
    beta = ctx.cfg.train.beta
    assert [(k["run_name"], k["init"], k["ref"], k["beta"], k["out_dir"], k["device"], k["cfg"]) for k in kwargs] == [
        ("mocan", ctx.policy_path, None, beta, ctx.out_dir, "cpu", ctx.cfg)]
    path = ctx.out_dir / "mocan_relabelled.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert (ctx.work_dir / "mocan_relabelled.jsonl").read_text() == path.read_text()
    # s = r − 2·1[c > 0] on each original response of REWARD_PAIRS
    assert [(row["score_original_chosen"], row["score_original_rejected"]) for row in rows] == [(0, 1), (3, -2), (1, 0), (3, 2)]
    assert [row["u"] for row in rows] == np.random.default_rng(ctx.seed).random(4).tolist()
    swapped = sum(row["swapped"] for row in rows)
    assert log == [{"stage": "dual", "lambda": 2.0, "fixed_lambda": True},
                   {"stage": "relabel", "lambda": 2.0, "pairs": 4, "swapped": swapped, "swap_rate": swapped / 4},
                   {"stage": "dpo", "lambda": 2.0, "train_loss": 0.25, "steps": 11}]
    assert res.extra == {"beta": beta, "utility": "indicator", "cost_bound": ctx.cfg.scoring.threshold, "lambda": 2.0,
                         "relabel": {"pairs": 4, "swapped": swapped, "seed": ctx.seed, "path": str(path)}}
    assert (res.model_path, res.models_trained, res.networks_held) == (str(ctx.out_dir), 1, ["policy", "reference"])
    m, ctx, _ = make_ctx(tmp_path / "no-pairs", "mocan", ["method.lambda_=2"], reward_pairs=[])
    with pytest.raises(BenchError, match="^mocan needs reward pairs in the train fold, but there are no reward pairs"):
        m.train(ctx)


def test_mocan_infeasible_bound_checked_up_front_capped_or_raised(tmp_path, fake_dpo, monkeypatch) -> None:
    """Samples (r 0, c −1) and (r 1, c +1) per prompt: E_λ[g] ≤ 1, so a cost bound b_c = −1.2 (E[g] ≥ 1.2) is out of
    reach. The up-front check stops before any step; without it the solver runs until λ passes the cap; `raise` names
    the method. Indicator utility (unsafe-rate units) feeds −1[c > 0] to the dual: half the samples are unsafe."""
    import methods.mocan as mocan

    monkeypatch.setattr(mocan, "sample_reference", lambda ctx, n, k, t, p: (DUAL, [["r=0 c=-1", "r=1 c=1"]] * len(DUAL)))
    base = ["method.beta=0.5", "method.utility=score", "method.threshold=-1.2", "method.samples_per_prompt=2", "method.lambda_cap=50"]
    m, ctx, _ = make_ctx(tmp_path / "checked", "mocan", base)
    res = m.train(ctx)
    dual = res.extra["dual"]
    assert dual["infeasible"] and dual["total_iterations"] == 0 and dual["max_slack"] == pytest.approx(-0.2) and res.extra["lambda"] == 50.0
    m, ctx, _ = make_ctx(tmp_path / "unchecked", "mocan", base + ["method.check_feasible=false"])
    dual = m.train(ctx).extra["dual"]
    assert dual["infeasible"] and dual["total_iterations"] > 20 and dual["reason"].startswith("λ passed the cap 50 after")
    m, ctx, _ = make_ctx(tmp_path / "raise", "mocan", base + ["method.on_infeasible=raise"])
    with pytest.raises(BenchError, match=r"^MoCAN: the dual is infeasible \(E\[g\] ≥ b = 1.2: the largest slack"):
        m.train(ctx)
    m, ctx, _ = make_ctx(tmp_path / "indicator", "mocan", ["method.beta=0.5", "method.threshold=0.5", "method.samples_per_prompt=2"])
    res = m.train(ctx)
    assert res.extra["utility"] == "indicator" and res.extra["dual"]["ref_utility_mean"] == -0.5


# -- Safe-RLHF / PPO reward shaping ---------------------------------------------------------------------------------


def rollout(rewards: list[float], costs: list[float], kl: list[float] | None = None, length: int = 3):
    """A hand-built rollout: B responses of `length` tokens, values 0, per-token log π − log π_ref = kl[b]."""
    from harness.training.ppo import Rollout

    b = len(rewards)
    kl_t = torch.tensor(kl or [0.0] * b).unsqueeze(-1).expand(b, length)
    return Rollout(prompts=["p"] * b, responses=["y"] * b, input_ids=torch.zeros(b, 2 + length, dtype=torch.long),
                   attention_mask=torch.ones(b, 2 + length, dtype=torch.long), position_ids=torch.arange(2 + length).expand(b, -1),
                   prompt_len=2, mask=torch.ones(b, length, dtype=torch.long), log_probs=kl_t.clone(), ref_log_probs=torch.zeros(b, length),
                   rewards=torch.tensor(rewards), costs=torch.tensor(costs))


def _ppo(method: str, **cfg: Any):
    cls = METHODS.get(method)
    m = cls(cls.config_class(**cfg))
    m.log_lambda = 0.0
    return m


def _advantages(m, ro, penalty: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ro.end_scores = m.stream_scores(ro.rewards, ro.costs)
    ro.values = {name: torch.zeros_like(ro.log_probs) for name in m.critic_streams}
    return m.compute_advantages(ro, penalty)


def test_safe_rlhf_higher_cost_lowers_and_higher_reward_raises_the_advantage() -> None:
    """Planted: the reward and cost streams exchanged; A^R + λ·A^C; the cost stream given R."""
    m = _ppo("safe-rlhf", kl_coef=0.0, gamma=1.0, gae_lambda=1.0)
    adv, returns = _advantages(m, rollout([1.0, 1.0, 3.0], [0.0, 2.0, 0.0]), penalty=1.0)
    # γ = λ_GAE = 1, V = 0: every token's advantage is the episode's (R − λ·C)/(1 + λ)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, -0.5, 1.5]))
    torch.testing.assert_close(returns["reward"][:, 0], torch.tensor([1.0, 1.0, 3.0]))
    torch.testing.assert_close(returns["cost"][:, 0], torch.tensor([0.0, 2.0, 0.0]))
    assert m.critic_streams == ("reward", "cost")


def test_safe_rlhf_kl_lowers_the_reward_stream_and_raises_the_cost_stream() -> None:
    """Net KL weight β for every λ (rl_math.kl_shaped_rewards): planted stream names exchanged in the loop."""
    m = _ppo("safe-rlhf", kl_coef=0.1, gamma=1.0, gae_lambda=1.0)
    adv, returns = _advantages(m, rollout([0.0, 0.0], [0.0, 0.0], kl=[0.0, 1.0], length=2), penalty=3.0)
    torch.testing.assert_close(returns["reward"][1], torch.tensor([-0.2, -0.1]))
    torch.testing.assert_close(returns["cost"][1], torch.tensor([0.2, 0.1]))
    torch.testing.assert_close(adv[1], torch.tensor([-0.2, -0.1]))  # (−0.2 − 3·0.2)/4: β per token whatever λ
    assert adv[0].abs().max() == 0


def test_ppo_shaping_pays_r_minus_nu_c_to_one_critic() -> None:
    """Planted: R + ν·C; a learned λ instead of the fixed ν; λ-mixing with a missing cost stream."""
    m = _ppo("ppo-shaping", kl_coef=0.0, gamma=1.0, gae_lambda=1.0, cost_coef=0.5)
    assert m.critic_streams == ("reward",)
    scores = m.stream_scores(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0]))
    assert list(scores) == ["reward"] and scores["reward"].tolist() == [1.0, 0.0]
    adv, _ = _advantages(m, rollout([1.0, 1.0], [0.0, 2.0]), penalty=m.update_penalty(0, 100.0))
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.0, 0.0]))
    assert m.update_penalty(5, -100.0) == 0.5 and m.log_lambda == 0.0


def test_safe_rlhf_lambda_moves_with_the_cost_window() -> None:
    """Planted: the update's sign; the delay ignored; the cap ignored."""
    m = _ppo("safe-rlhf", threshold=0.5, lambda_lr=0.1, lambda_max=5.0, lambda_update_delay_steps=1)
    assert m.update_penalty(0, 10.0) == 1.0  # step 0 < delay: λ does not move
    up = m.update_penalty(1, 1.5)
    assert up == pytest.approx(math.exp(0.1 * 1.0 * 1.0))  # Ĉ − d = 1 > 0: λ rises
    down = m.update_penalty(2, -0.5)
    assert down == pytest.approx(math.exp(math.log(up) - 0.1 * up))  # Ĉ − d = −1: λ falls
    assert m.update_penalty(3, 1e6) == pytest.approx(5.0)


class FakeAccelerator:
    num_processes, process_index, is_main_process = 1, 0, True
    device = torch.device("cpu")

    def reduce(self, t, how):
        return t

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, norm):
        return torch.nn.utils.clip_grad_norm_(params, norm)

    def unwrap_model(self, m):
        return m

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def wait_for_everyone(self):
        pass


def test_safe_rlhf_loop_feeds_costs_to_the_dual_and_the_advantage(tmp_path, monkeypatch) -> None:
    """The loop on scripted rollouts: Ĉ is the window mean of the *costs*, λ is measured before each step, and the
    advantage handed to the PPO step is (A^R − λA^C)/(1 + λ). Planted: the window fed rewards, penalty from the
    previous step, advantage computed with λ = 1."""
    from methods.base import TrainResult
    from methods.safe_rlhf import SafeRLHF

    batches = [([5.0, 5.0], [1.0, 3.0]), ([5.0, 5.0], [-1.0, -1.0])]
    seen: list[dict[str, Any]] = []

    class Scripted(SafeRLHF):
        def setup(self, ctx):
            self.accelerator, self.device, self.ptx = FakeAccelerator(), torch.device("cpu"), None

        def setup_optimizers(self, total_steps):
            seen.append({"total_steps": total_steps})

        def train_prompts(self, ctx):
            return ["a", "b", "c"]

        def rollout(self, prompts):
            r, c = batches[len([s for s in seen if "adv" in s])]
            ro = rollout(r, c)
            ro.end_scores = self.stream_scores(ro.rewards, ro.costs)
            ro.values = {name: torch.zeros_like(ro.log_probs) for name in self.critic_streams}
            return ro

        def ppo_step(self, ro, advantage, returns):
            seen.append({"adv": advantage[:, 0].clone(), "lambda": math.exp(self.log_lambda)})
            return {"actor_loss": 0.0}

        def save(self, ctx, steps, prompts, peak_rss):
            return TrainResult(model_path="saved", extra={"steps": steps, "prompts": prompts, "final_lambda": math.exp(self.log_lambda)})

    _, ctx, log = make_ctx(tmp_path, "safe-rlhf")
    cfg = SafeRLHF.config_class(threshold=0.0, lambda_lr=0.5, lambda_max=None, kl_coef=0.0, gamma=1.0, gae_lambda=1.0,
                                rollout_batch_size=2, num_rollout_batches=2)
    res = Scripted(cfg).train(ctx)
    assert seen[0] == {"total_steps": 2} and res.extra == {"steps": 2, "prompts": 3, "final_lambda": pytest.approx(seen[2]["lambda"])}
    lam1 = math.exp(0.5 * 1.0 * 2.0)  # window mean of costs [1, 3] = 2 > d = 0: λ rises
    lam2 = math.exp(math.log(lam1) + 0.5 * lam1 * 0.5)  # window [1, 3, −1, −1]: mean 0.5
    assert [r["lambda"] for r in log] == [pytest.approx(lam1), pytest.approx(lam2)]
    assert [r["cost_window_mean"] for r in log] == [2.0, 0.5] and [r["cost_mean"] for r in log] == [2.0, -1.0]
    torch.testing.assert_close(seen[1]["adv"], (torch.tensor([5.0, 5.0]) - lam1 * torch.tensor([1.0, 3.0])) / (1 + lam1))
    torch.testing.assert_close(seen[2]["adv"], (torch.tensor([5.0, 5.0]) + lam2) / (1 + lam2))
    assert [r["step"] for r in log] == [0, 1] and log[0]["reward_mean"] == 5.0 and log[0]["kl"] == 0.0


class ToyPolicy(torch.nn.Module):
    """A causal 'LM' whose next-token logits are one learned vector (same at every position); it records the
    keyword arguments of each call so the test can check what the PPO code passes."""

    def __init__(self, vocab: int = 4):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(vocab))
        self.calls: list[dict[str, Any]] = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        self.calls.append(dict(attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=logits_to_keep, use_cache=use_cache))
        b, t = input_ids.shape
        keep = t if logits_to_keep is None else logits_to_keep
        return SimpleNamespace(logits=self.logits.expand(b, keep, -1) + torch.arange(t)[-keep:, None] * 0.0)


class ToyCritic(torch.nn.Module):
    """V(s_t) = v + 10·t (position t of the full sequence), so the slice of states before each response token shows."""

    def __init__(self):
        super().__init__()
        self.v = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple] = []

    def forward(self, input_ids, attention_mask, position_ids):
        self.calls.append((attention_mask, position_ids))
        return (self.v + 10.0 * torch.arange(input_ids.shape[1], dtype=torch.float32)).expand(input_ids.shape)


def _toy_ppo(**cfg: Any):
    from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig

    m = SafeRLHF(SafeRLHFConfig(**cfg))
    m.accelerator, m.actor, m.critics = FakeAccelerator(), ToyPolicy(), {"reward": ToyCritic()}
    m.optim = {}
    for key, model, lr in (("actor", m.actor, 1.0), ("reward", m.critics["reward"], 0.1)):
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        m.optim[key] = (model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    ro = rollout([0.0, 0.0], [0.0, 0.0], length=1)
    ro.input_ids = torch.tensor([[0, 0, 1], [0, 0, 2]])
    ro.attention_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    ro.position_ids = torch.tensor([[0, 0, 1], [0, 1, 2]])
    ro.log_probs = torch.full((2, 1), math.log(0.25))  # π_old = uniform = the toy policy now
    ro.ref_log_probs = torch.full((2, 1), -10.0)
    ro.values = {"reward": torch.full((2, 1), 10.0)}  # V_old at position P − 1 = 1 (the toy critic's 10·t)
    return m, ro


def test_ppo_step_raises_the_probability_of_positive_advantage_tokens(monkeypatch) -> None:
    """One real clipped-surrogate step: token 1 (advantage +1) gains probability, token 2 (−1) loses; the critic
    moves toward the returns; both models see the rollout's masks and positions; each optimiser's schedule steps
    once. Planted: the advantage's sign, the old log-probs taken from the reference, the clip ranges dropped."""
    import methods.safe_rlhf as safe_rlhf

    m, ro = _toy_ppo(max_grad_norm=0.0, clip_range_ratio=0.3, clip_range_value=4.0)
    seen = {}
    for fn in ("clipped_surrogate_loss", "clipped_value_loss"):
        real = getattr(safe_rlhf, fn)
        monkeypatch.setattr(safe_rlhf, fn, lambda *a, _real=real, _fn=fn: seen.setdefault(_fn, a[-1]) is not None and _real(*a))
    stats = m.ppo_step(ro, torch.tensor([[1.0], [-1.0]]), {"reward": torch.full((2, 1), 12.0)})
    assert seen == {"clipped_surrogate_loss": 0.3, "clipped_value_loss": 4.0}
    p = torch.softmax(m.actor.logits.detach(), -1)
    assert p[1] > 0.25 > p[2] and p[0] == p[3]
    assert m.critics["reward"].v.item() > 0 and stats["reward_critic_loss"] == pytest.approx(2.0)  # ½·(10 − 12)²
    assert stats["actor_loss"] == pytest.approx(0.0) and stats["advantage_mean"] == 0.0
    (call,) = m.actor.calls
    assert call["attention_mask"] is ro.attention_mask and call["position_ids"] is ro.position_ids
    assert call["logits_to_keep"] == 2 and call["use_cache"] is False  # L + 1 positions: the last is dropped
    ((mask, pos),) = m.critics["reward"].calls
    assert mask is ro.attention_mask and pos is ro.position_ids
    assert [sched.get_last_lr() for _, _, sched in m.optim.values()] == [[0.5], [0.05]]  # one scheduler step each


def test_ppo_optimize_clips_gradients_at_max_grad_norm() -> None:
    """max_grad_norm 0.5: the actor's update has norm lr·0.5; 0 turns clipping off; PTX steps leave the schedule."""
    m, ro = _toy_ppo(max_grad_norm=0.5)
    before = m.actor.logits.detach().clone()
    loss = 100.0 * m.actor.logits[1]  # gradient norm 100 on one logit
    m.optimize("actor", loss)
    assert (m.actor.logits.detach() - before).norm().item() == pytest.approx(0.5, rel=1e-5)
    m.optimize("actor", 100.0 * m.actor.logits[2], step_scheduler=False)
    assert m.optim["actor"][2].get_last_lr() == [0.5]  # stepped once, by the first call only
    m2, _ = _toy_ppo(max_grad_norm=0.0)
    m2.optimize("actor", 100.0 * m2.actor.logits[1])
    assert m2.actor.logits.detach()[1].item() == pytest.approx(-100.0)


def test_safe_rlhf_prompts_batches_and_ptx_rows(tmp_path) -> None:
    """Unique train prompts of both pair kinds, this rank's share; batches reshuffle per pass and repeat prompts
    only when there are fewer than a batch; PTX rows are validated."""
    from harness.errors import DataError
    from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig, load_ptx, prompt_batches

    m = SafeRLHF(SafeRLHFConfig())
    m.accelerator = FakeAccelerator()
    _, ctx, _ = make_ctx(tmp_path, "safe-rlhf", reward_pairs=REWARD_PAIRS + REWARD_PAIRS[:1])
    everything = [p.prompt for p in REWARD_PAIRS] + [p.prompt for p in COST_PAIRS]
    assert m.train_prompts(ctx) == everything
    m.accelerator = SimpleNamespace(num_processes=2, process_index=1)
    assert m.train_prompts(ctx) == everything[1::2]

    batches = list(prompt_batches(["a", "b", "c", "d"], 2, 4, seed=0))
    assert [len(b) for b in batches] == [2, 2, 2, 2]
    assert sorted(batches[0] + batches[1]) == sorted(batches[2] + batches[3]) == ["a", "b", "c", "d"]  # one pass each
    assert batches == list(prompt_batches(["a", "b", "c", "d"], 2, 4, seed=0))
    assert batches != list(prompt_batches(["a", "b", "c", "d"], 2, 4, seed=1))
    (small,) = prompt_batches(["x", "y"], 5, 1, seed=0)
    assert len(small) == 5 and set(small) == {"x", "y"}

    good = tmp_path / "ptx.jsonl"
    good.write_text('{"prompt": "p", "response": "r"}\n\n{"prompt": "q", "response": "s"}\n')
    assert load_ptx(str(good)) == [("p", "r"), ("q", "s")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    with pytest.raises(DataError, match="string fields"):
        load_ptx(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_ptx(str(empty))


class FakeBackbone(torch.nn.Module):
    def __init__(self, vocab: int = 5, hidden: int = 3):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden)
        self.emb = torch.nn.Embedding(vocab, hidden)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(last_hidden_state=self.emb(input_ids))


def test_critic_is_a_copy_of_the_score_model_read_at_every_position(tmp_path, monkeypatch) -> None:
    """A causal score model on the actor's vocabulary becomes the critic (same backbone weights and head, V at
    every position, trainable); anything else falls back to the SFT backbone with a zero head."""
    from harness.training.ppo import ValueModel
    from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig

    torch.manual_seed(0)
    score_model = SimpleNamespace(base_model=FakeBackbone(), score=torch.nn.Linear(3, 1))
    tok = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1})
    m = SafeRLHF(SafeRLHFConfig())
    m.tokenizer = tok
    critic = m.make_critic(SimpleNamespace(model=score_model, tokenizer=tok), "sft")
    assert m.critic_init.startswith("copy of the score model")
    ids = torch.tensor([[1, 2, 3]])
    want = score_model.score(score_model.base_model.emb(ids)).squeeze(-1)
    torch.testing.assert_close(critic(ids, torch.ones_like(ids), torch.arange(3)[None]), want)
    assert critic.backbone is not score_model.base_model and all(p.requires_grad for p in critic.parameters())
    with torch.no_grad():
        critic.head.weight.add_(1.0)
    assert not torch.equal(critic.head.weight, score_model.score.weight)  # a copy, not the frozen scorer itself

    fallback = []
    monkeypatch.setattr(ValueModel, "from_policy", classmethod(lambda cls, path: fallback.append(path) or cls(FakeBackbone())))
    other_vocab = SimpleNamespace(get_vocab=lambda: {"z": 0})
    for scorer in (SimpleNamespace(model=score_model, tokenizer=other_vocab), SimpleNamespace(model=None, tokenizer=None)):
        critic = m.make_critic(scorer, "sft-path")
        assert m.critic_init.startswith("SFT policy backbone")
        assert critic.head.weight.abs().sum() == 0 and critic.head.bias.abs().sum() == 0
    assert fallback == ["sft-path", "sft-path"]


def test_can_reference_samples_come_from_the_sft_policy_on_dual_prompts(tmp_path, monkeypatch) -> None:
    """K samples per held-out dual prompt from π_ref at the configured temperature and seed, regrouped per prompt, through
    the generation cache as configured, the generator closed afterwards. Planted: samples from eval prompts,
    regrouping with the wrong stride, the generator pointed at another model."""
    import harness.generation
    from methods.mocan import sample_reference

    asked = []

    def respond(prompt, params):
        asked.append((prompt, params.temperature, params.top_p, params.seed, params.max_new_tokens))
        return f"{prompt} #{sum(1 for a in asked if a[0] == prompt)}"

    _, ctx, _ = make_ctx(tmp_path, "mocan", ["generation.cache=false"], dual=["d1", "d2", "d3"], respond=respond)
    ctx.seed = 7
    made, gens, caching, closed = [], [], [], []
    gen_factory = ctx.make_generator

    def make_generator(model, tokenizer=None):
        made.append(model)
        gens.append(gen_factory(model))
        return gens[-1]

    ctx.make_generator = make_generator
    real_cached = harness.generation.cached_generate
    monkeypatch.setattr(harness.generation, "cached_generate",
                        lambda gen, prompts, params, use_cache=True: caching.append(use_cache) or real_cached(gen, prompts, params, use_cache))
    monkeypatch.setattr(harness.generation, "close_generator", closed.append)
    prompts, samples = sample_reference(ctx, 2, 3, 0.7, 0.9)
    assert prompts == ["d1", "d2"] and made == [ctx.policy_path] and caching == [False] and closed == gens
    assert samples == [["d1 #1", "d1 #2", "d1 #3"], ["d2 #1", "d2 #2", "d2 #3"]]
    assert {a[1:] for a in asked} == {(0.7, 0.9, 7, ctx.cfg.generation.max_new_tokens)}
    assert sample_reference(ctx, 0, 1, 1.0, 1.0)[0] == ["d1", "d2", "d3"]  # 0 = every dual prompt
    _, empty, _ = make_ctx(tmp_path / "e", "mocan", dual=[])
    with pytest.raises(BenchError, match=r"^the dual needs held-out prompts, but the dataset's 'dual' fold is empty \(raise data.max_dual_prompts\)$"):
        sample_reference(empty, 0, 2, 1.0, 1.0)


def test_online_pddpo_two_iterations_records_and_lambda_zero_guard(tmp_path, fake_dpo, monkeypatch) -> None:
    """Iteration 1 trains against π_r̂ from π_r̂; Ĉ = 0 < b drives λ to 0, so iteration 2 samples from π_1, skips
    training and copies π_r̂ into the final folder (π_1 is deleted). Records, result and sampling settings."""
    import harness.models
    import methods.pddpo_online as online
    from harness.types import SamplingParams

    loaded = []
    monkeypatch.setattr(online, "response_features", lambda model, tok, prompts, responses, cfg, device: [torch.ones(2)] * len(responses))
    monkeypatch.setattr(harness.models, "load_policy", lambda *a: loaded.append(a) or (SimpleNamespace(config=SimpleNamespace(hidden_size=2)), None))
    monkeypatch.setattr(online, "dual_estimate", ScriptedEstimates([0.0, 0.0]))
    draws, models = {0: "r=1 c=1", 1: "r=2 c=-1"}, []
    params = []
    m, ctx, log = make_ctx(tmp_path, "pddpo-online", ["seed=0", "method.lambda_init=1.0", "method.eta=10", "method.num_iterations=2",
                                                      "method.prompts_per_iteration=1", "method.sample_temperature=0.9", "generation.top_p=0.8",
                                                      "scoring.threshold=0.2"],
                           respond=lambda p, ps: params.append(ps) or draws[ps.seed % 1000])
    factory = ctx.make_generator
    ctx.make_generator = lambda model, tokenizer=None: models.append(model) or factory(model)
    res = m.train(ctx)
    pi_r, pi_1 = ctx.work_dir / "pi_r_hat", ctx.work_dir / "pi_1"
    stage1, primal = fake_dpo.calls
    assert (stage1["run_name"], primal["run_name"]) == ("pddpo-online-stage1", "pddpo-online-primal-1")
    assert primal["init"] == pi_r and primal["ref"] == pi_r and primal["out"] == pi_1 and primal["beta"] == pytest.approx(0.1)
    assert models == [pi_r, pi_1] and not pi_1.exists()  # π_2 samples from π_1; the superseded iterate is deleted
    assert (ctx.out_dir / "made_by.txt").read_text() == "pddpo-online-stage1"  # λ = 0: π_2 = π_r̂
    assert loaded == [(ctx.policy_path, ctx.device, "fp32")]
    assert {(p.temperature, p.top_p, p.max_new_tokens) for p in params} == {(0.9, 0.8, ctx.cfg.generation.max_new_tokens)}
    assert sorted({p.seed for p in params}) == [1000, 1001, 2000, 2001]
    first, second = res.trajectory
    assert log == res.trajectory and first["iteration"] == 1 and second["iteration"] == 2
    assert (first["lambda"], first["lambda_next"], second["lambda"], second["lambda_next"]) == (1.0, 0.0, 0.0, 0.0)
    assert (first["trained"], second["trained"]) == (True, False) and second["beta_stage2"] is None
    assert first["beta_stage2"] == pytest.approx(0.1) and first["bonus_margin_mean"] == 0.0 and second["bonus_margin_mean"] is None
    assert (first["new_reward_pairs"], first["new_cost_pairs"], first["reward_pairs"], first["cost_pairs"]) == (1, 1, 5, 4)
    assert (second["reward_pairs"], second["cost_pairs"], first["threshold"]) == (6, 5, 0.2)
    assert res.model_path == str(ctx.out_dir) and res.models_trained == 2
    assert "frozen SFT feature model (φ for the elliptical bonuses)" in res.networks_held
    assert {k: res.extra[k] for k in ("mode", "beta", "threshold", "threshold_units", "lambda_final", "iterations")} == {
        "mode": "online", "beta": 0.1, "threshold": 0.2, "threshold_units": "unsafe_rate", "lambda_final": 0.0, "iterations": 2}
    assert (res.extra["loss"], res.extra["provenance"]) == ("RECONSTRUCTION (docs/methods.md §2.8), not the paper's loss",
                                                            "no O-PD-DPO experiment is known [paper]; every setting here is [ours]")
    for bad in ("method.sample_temperature=0", "method.warm_start=other"):
        with pytest.raises(BenchError, match="(sample_temperature': 0.0|warm_start': 'other') is out of range; use (a value > 0|one of previous, pi_r)"):
            make_ctx(tmp_path / bad.split("=")[-1], "pddpo-online", [bad])
    m, ctx, _ = make_ctx(tmp_path / "nocost", "pddpo-online", cost_pairs=[])
    with pytest.raises(BenchError, match="^pddpo-online needs offline reward and cost pairs in the train fold, but there are no cost pairs"):
        m.train(ctx)


# -- Safe-RLHF at a practical size: LoRA actor and critics on shared base weights ------------------------------------


class ScriptedNetScorer:
    """A frozen R or C holding a real network: a causal score model on the actor's vocabulary when `causal` (so the
    critic is a copy of it, upstream's way), else a small unrelated module (so the critic starts from the SFT
    backbone). Its scores are scripted per prompt, so the advantage's direction is known."""

    def __init__(self, path: str, by_prompt: dict[str, float], causal: bool):
        from transformers import AutoModelForSequenceClassification

        from harness.models import load_tokenizer

        self.by_prompt, self.use_cache = by_prompt, True
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1) if causal else torch.nn.Linear(4, 1)
        self.tokenizer = load_tokenizer(path) if causal else None

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [self.by_prompt[p] for p in prompts]


def lora_ppo(tmp_path: Path, causal_scorers: bool, overrides: list[str] = ()):
    """A `safe-rlhf` set up with ppo_size=lora on the tiny random model, R = 1 and C = {prompt 0: 0, prompt 1: 2}."""
    from harness.models import resolve_model

    path = str(resolve_model("tiny-random"))
    scorers = {"reward": ScriptedNetScorer(path, {"prompt 0": 1.0, "prompt 1": 1.0}, causal_scorers),
               "cost": ScriptedNetScorer(path, {"prompt 0": 0.0, "prompt 1": 2.0}, causal_scorers)}
    m, ctx, log = make_ctx(tmp_path, "safe-rlhf", ["method.ppo_size=lora", "method.lora_r=4", "method.lora_alpha=8", "method.kl_coef=0", "method.max_new_tokens=4",
                                                   "method.gamma=1", "method.gae_lambda=1", "method.actor_lr=1e-3", "method.critic_lr=1e-3",
                                                   *overrides])
    ctx = TrainContext(**{**ctx.__dict__, "policy_path": path, "train_score_model": lambda kind, pairs, name, **kw: scorers[kind]})
    m.log_lambda = 0.0
    m.setup(ctx)
    m.setup_optimizers(2)
    return m, ctx, scorers, path


def _param_ids(params) -> set[int]:
    return {id(p) for p in params}


def test_lora_ppo_reference_is_the_sft_model_and_only_adapters_and_heads_train(tmp_path) -> None:
    """The cpu profile's LoRA PPO (critics = adapters on the actor's own base weights): the reference is the actor
    with its adapters disabled, equal to the SFT model's log-probs exactly before and after a PPO step; the
    optimisers hold only the actor's adapter and each critic's adapter + head; a higher cost lowers the advantage;
    the frozen base, R and C get no gradient and do not move. Planted: the reference with the adapters enabled, the
    critics' optimiser over every parameter of the shared model."""
    from transformers import AutoModelForCausalLM

    from harness.training.ppo import ACTOR_ADAPTER, adapter_parameters, response_log_probs

    m, ctx, scorers, path = lora_ppo(tmp_path, causal_scorers=False, overrides=["method.gradient_checkpointing=true"])
    sft = AutoModelForCausalLM.from_pretrained(path).eval()
    assert m.reference is not m.actor and sum(p.numel() for p in m.reference.parameters()) == 0  # no second copy
    assert set(m.actor.peft_config) == {ACTOR_ADAPTER, "reward_critic", "cost_critic"}

    torch.manual_seed(0)
    ro = m.rollout(["prompt 0", "prompt 1"])
    with torch.no_grad():
        sft_lp = response_log_probs(sft, ro)
    assert torch.equal(ro.ref_log_probs, sft_lp) and torch.equal(ro.log_probs, sft_lp)  # LoRA B = 0: actor = SFT at first
    assert all(v.abs().max() == 0 for v in ro.values.values())  # zero heads (and B = 0): V = 0, as the full critics

    # who trains what: the actor's adapter; each critic's own adapter and head; nothing else (no base weight, no R/C)
    base = [p for n, p in m.actor.named_parameters() if "lora_" not in n]
    opt_params = {key: _param_ids(p for g in opt.param_groups for p in g["params"]) for key, (_, opt, _) in m.optim.items()}
    assert opt_params["actor"] == _param_ids(adapter_parameters(m.actor, ACTOR_ADAPTER))
    for name in ("reward", "cost"):
        want = _param_ids([*adapter_parameters(m.actor, f"{name}_critic"), *m.critics[name].head.parameters()])
        assert opt_params[name] == want and not want & opt_params["actor"]
    assert not _param_ids(base) & set().union(*opt_params.values())
    assert all(not p.requires_grad for s in scorers.values() for p in s.model.parameters())

    # a higher cost lowers the advantage: (R − λC)/(1 + λ) per token, V = 0, KL = 0
    adv, returns = m.compute_advantages(ro, penalty=1.0)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, -0.5]))
    base_before = [p.detach().clone() for p in base]
    heads_before = {k: c.head.weight.detach().clone() for k, c in m.critics.items()}
    for _ in range(2):  # the first critic step moves only the zero heads (no gradient reaches an adapter through them)
        stats = m.ppo_step(ro, adv, returns)
        assert all(math.isfinite(v) for v in stats.values())

    # after the steps: base, R and C untouched and gradient-free; every adapter and head moved; the reference is still SFT
    assert all(torch.equal(a, b.detach()) for a, b in zip(base_before, base)) and all(p.grad is None for p in base)
    assert all(p.grad is None for s in scorers.values() for p in s.model.parameters())
    for adapter in (ACTOR_ADAPTER, "reward_critic", "cost_critic"):
        assert max(p.abs().max().item() for n, p in m.actor.named_parameters() if f"lora_B.{adapter}." in n) > 0, adapter
    assert all(not torch.equal(heads_before[k], c.head.weight) for k, c in m.critics.items())
    m.critics["cost"].eval()(ro.input_ids, ro.attention_mask, ro.position_ids)  # leaves the cost adapter active
    with torch.no_grad():
        ref_after, actor_after = response_log_probs(m.reference, ro), response_log_probs(m.actor, ro)
        m.critics["reward"](ro.input_ids, ro.attention_mask, ro.position_ids)
        actor_again = response_log_probs(m.actor, ro)
    assert torch.equal(ref_after, sft_lp), "the reference must be the SFT model exactly (adapters disabled)"
    assert not torch.equal(actor_after, sft_lp) and torch.equal(actor_again, actor_after)  # the actor runs its own adapter


def test_lora_ppo_critic_copied_from_the_score_model_trains_lora_and_head_only(tmp_path) -> None:
    """With causal R and C (upstream's critic = the score model): the critic is a LoRA'd *copy* whose optimiser holds
    its adapters and head only; the frozen R and C keep their weights and get no gradient from the critic step."""
    m, ctx, scorers, _ = lora_ppo(tmp_path, causal_scorers=True)
    assert m.critic_init.startswith("copy of the score model") and "LoRA" in m.critic_init
    r_before = [p.detach().clone() for p in scorers["reward"].model.parameters()]
    for name, critic in m.critics.items():
        opt = m.optim[name][1]
        held = _param_ids(p for g in opt.param_groups for p in g["params"])
        assert held == _param_ids([p for n, p in critic.named_parameters() if "lora_" in n or n.startswith("head.")])
        assert not _param_ids(scorers[name].model.parameters()) & _param_ids(critic.parameters())  # a copy, not R itself
    torch.manual_seed(0)
    ro = m.rollout(["prompt 0", "prompt 1"])
    adv, returns = m.compute_advantages(ro, penalty=1.0)
    m.ppo_step(ro, adv, returns)
    assert all(torch.equal(a, b) for a, b in zip(r_before, scorers["reward"].model.parameters()))
    assert all(p.grad is None for s in scorers.values() for p in s.model.parameters())
    res = m.save(ctx, steps=1, prompts=2, peak_rss=1.0)
    assert res.extra["ppo_size"] == "lora" and res.extra["reference"].startswith("the actor with its LoRA adapters disabled")
    assert res.extra["params_optimised_ppo"]["actor"] < res.extra["params_held"] / 100


# -- Safe-RLHF's loop sizes, per-step records and final record; harness/training/ppo.py's networks (issue 15 survivors) ------


class RecordingAccelerator(FakeAccelerator):
    """Two ranks, this one rank 1; remembers each reduction's device and op (a meta tensor reduces to 0)."""

    num_processes, process_index = 2, 1

    def __init__(self):
        self.reduced: list[tuple[str, str]] = []

    def reduce(self, t, how):
        self.reduced.append((t.device.type, how))
        return torch.tensor(0.0) if t.is_meta else t


def scripted_safe_rlhf(batches: list[tuple[list[float], list[float]]] | None = None, device: str = "cpu", ptx: bool = False):
    """A SafeRLHF whose networks are scripted: each rollout returns the next (rewards, costs) of `batches` (cycling)
    with two responses of 2 and 1 tokens and known per-token log-ratios; it records what each hook was handed."""
    from methods.base import TrainResult
    from methods.safe_rlhf import SafeRLHF

    seen: dict[str, list] = {k: [] for k in ("setup", "prompts_ctx", "total_steps", "batches", "seeds", "rollouts", "ppo", "ptx", "save")}

    class Scripted(SafeRLHF):
        def setup(self, ctx):
            seen["setup"].append(ctx)
            self.accelerator, self.device = RecordingAccelerator(), torch.device(device)
            self.ptx = [("q", "a")] if ptx else None

        def setup_optimizers(self, total_steps):
            seen["total_steps"].append(total_steps)

        def train_prompts(self, ctx):
            seen["prompts_ctx"].append(ctx)
            return [f"p{i}" for i in range(6)]

        def rollout(self, prompts):
            seen["batches"].append(list(prompts))
            seen["seeds"].append(torch.initial_seed())
            r, c = (batches or [([0.0, 0.0], [0.0, 0.0])])[(len(seen["batches"]) - 1) % len(batches or [0])]
            ro = rollout(r, c)
            ro.mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
            ro.log_probs = torch.tensor([[0.5, 0.4, 9.0], [0.2, 9.0, 9.0]])
            ro.ref_log_probs = torch.tensor([[0.25, 0.1, -9.0], [0.1, -9.0, -9.0]])  # masked KL per response: 0.55, 0.1
            ro.end_scores = self.stream_scores(ro.rewards, ro.costs)
            ro.values = {name: torch.zeros_like(ro.log_probs) for name in self.critic_streams}
            seen["rollouts"].append(ro)
            return ro

        def ppo_step(self, ro, advantage, returns):
            seen["ppo"].append((ro, sorted(returns)))
            return {"actor_loss": -0.5 * len(seen["ppo"])}

        def ptx_step(self, batch_size):
            seen["ptx"].append(batch_size)
            return 0.125 * len(seen["ptx"])

        def save(self, ctx, steps, prompts, peak_rss):
            seen["save"].append((ctx, steps, prompts, peak_rss))
            return TrainResult(model_path="saved")

    return Scripted, seen


@pytest.mark.parametrize("overrides, cfg, want", [
    (["train.max_steps=2"], {"num_rollout_batches": 3}, 3),  # an explicit batch count wins over max_steps
    (["train.max_steps=1", "train.batch_size=4"], {"rollout_epochs": 2.0}, 1),  # max_steps > 0 (even 1) wins over epochs
    (["train.max_steps=-1", "train.batch_size=2", "train.epochs=1"], {"rollout_epochs": 1.5, "rollout_batch_size": 4}, 3),  # ⌈1.5·6/4⌉
    (["train.max_steps=-1", "train.batch_size=4", "train.epochs=0.5"], {}, 1),  # ⌈0.5·6/4⌉ = 1: train.epochs, train.batch_size
])
def test_safe_rlhf_number_of_rollouts_and_steps(tmp_path, overrides, cfg, want) -> None:
    """Rollouts = num_rollout_batches, else train.max_steps when > 0, else ⌈epochs·prompts/batch⌉ (≥ 1), epochs =
    rollout_epochs or train.epochs, batch = rollout_batch_size or train.batch_size; the schedules get rollouts ×
    update_iters steps. The windowed cost is reduced as a mean, on the method's device."""
    Scripted, seen = scripted_safe_rlhf(device="meta")
    _, ctx, log = make_ctx(tmp_path, "safe-rlhf", overrides)
    m = Scripted(Scripted.config_class(update_iters=2, **cfg))
    m.train(ctx)
    batch = cfg.get("rollout_batch_size") or ctx.cfg.train.batch_size
    assert len(seen["batches"]) == want and {len(b) for b in seen["batches"]} == {batch}
    assert seen["total_steps"] == [2 * want] and [r["step"] for r in log] == list(range(2 * want))
    assert m.accelerator.reduced == [("meta", "mean")] * (2 * want) and "ptx_loss" not in log[0]


def test_safe_rlhf_step_records_seeds_and_save_arguments(tmp_path, monkeypatch) -> None:
    """Per RL step: the record's λ, windowed cost (the last `episode_cost_window` costs), reward/cost means, KL summed
    over each response's tokens then averaged, mean response length, the step's stats (+ PTX loss), RSS in MB to
    0.1 and the rollout index; batches from `prompt_batches` with the run's seed; one torch seed per batch and rank;
    profiling phases; and what `save` is handed (the peak RSS over the run)."""
    import contextlib

    import methods.safe_rlhf as safe_rlhf
    from harness.training.ppo import prompt_batches

    rss = []
    monkeypatch.setattr(safe_rlhf, "rss_mb", lambda: rss.append(1) or 100.26 + 10 * len(rss))
    phases = []

    @contextlib.contextmanager
    def phase(name, trim=False):
        phases.append((name, trim))
        yield

    monkeypatch.setattr(safe_rlhf, "phase", phase)
    Scripted, seen = scripted_safe_rlhf([([1.0, 2.0], [1.0, 3.0]), ([3.0, 3.0], [5.0, 7.0]), ([0.0, 1.0], [0.0, 0.0])], ptx=True)
    _, ctx, log = make_ctx(tmp_path, "safe-rlhf", ["seed=5"])
    m = Scripted(Scripted.config_class(rollout_batch_size=2, num_rollout_batches=3, update_iters=2, episode_cost_window=2, lambda_lr=0.0))
    res = m.train(ctx)
    assert res.model_path == "saved" and seen["setup"] == [ctx] and seen["prompts_ctx"] == [ctx]
    assert seen["batches"] == list(prompt_batches([f"p{i}" for i in range(6)], 2, 3, seed=5))
    assert seen["seeds"] == [5 * 100_003 + b * 2 + 1 for b in range(3)]  # seed·100003 + batch·ranks + rank
    assert [id(ro) for ro, _ in seen["ppo"]] == [id(ro) for ro in seen["rollouts"] for _ in range(2)] and all(keys == ["cost", "reward"] for _, keys in seen["ppo"])
    assert seen["ptx"] == [2] * 6
    first = {"step": 0, "lambda": 1.0, "cost_window_mean": 2.0, "reward_mean": 1.5, "cost_mean": 2.0, "kl": pytest.approx(0.325),
             "response_length": 1.5, "actor_loss": -0.5, "ptx_loss": 0.125, "rss_mb": 130.3, "rollout": 0}
    assert log[0] == first
    assert [r["cost_window_mean"] for r in log] == [2.0, 2.0, 6.0, 6.0, 0.0, 0.0]  # window of 2: this batch's costs only
    assert [r["rollout"] for r in log] == [0, 0, 1, 1, 2, 2] and [r["step"] for r in log] == list(range(6))
    assert [r["reward_mean"] for r in log][::2] == [1.5, 3.0, 0.5] and [r["ptx_loss"] for r in log] == [0.125 * k for k in range(1, 7)]
    assert [r["rss_mb"] for r in log] == [round(100.26 + 10 * (3 + 2 * i), 1) for i in range(6)]
    ((saved_ctx, steps, prompts, peak),) = seen["save"]
    assert (saved_ctx, steps, prompts) == (ctx, 6, 6) and peak == pytest.approx(100.26 + 10 * 12)  # the last step's peak reading
    rollouts = [("safe-rlhf/rollout", False)] + [("safe-rlhf/ppo_step", False)] * 2
    assert phases == rollouts * 3 + [("safe-rlhf/save", True)]  # the save phase returns freed heap to the OS


def test_safe_rlhf_save_accounts_for_every_network_and_records_the_run(tmp_path, monkeypatch) -> None:
    """`save`'s record: steps, prompts, the final λ (None without a cost stream), peak RSS and CUDA peak in MB to 0.1,
    parameters optimised per network / trained in all (R and C whole) / held once, the size and how the reference
    and critics were made; the merged LoRA actor is what is saved, with the method, its config and that record.
    Parameter counts are distinct primes-ish so a network left out of a sum shows."""
    from dataclasses import asdict

    import harness.io
    import methods.safe_rlhf as safe_rlhf
    from methods.ppo_shaping import PPOShaping
    from methods.safe_rlhf import SafeRLHF

    saved, merged = [], []
    monkeypatch.setattr(harness.io, "save_model_atomic", lambda model, tok, out, record: saved.append((model, tok, out, record)))
    monkeypatch.setattr(safe_rlhf, "merge_lora_actor", lambda actor: merged.append(actor) or "merged actor")

    def networks(m, cls, lora, ptx, cost_model):
        m.accelerator, m.tokenizer, m.lora, m.ptx = FakeAccelerator(), "tok", lora, ptx
        m.actor = torch.nn.Linear(3, 3)  # 12 parameters, 9 optimised (the bias frozen)
        m.actor.bias.requires_grad_(False)
        m.reference = torch.nn.Linear(5, 1)  # 6
        m.critics = {"reward": torch.nn.Linear(2, 1), "cost": torch.nn.Linear(4, 1)}  # 3 and 5
        m.critics = {k: v for k, v in m.critics.items() if k in cls.critic_streams}
        m.reward_model, m.cost_model = SimpleNamespace(model=torch.nn.Linear(6, 1)), cost_model  # 7 (+ 10)
        m.gradient_checkpointing, m.frozen_dtype, m.critic_init, m.log_lambda = True, "bfloat16", "critic text", math.log(2.5)
        return m

    m = networks(SafeRLHF(SafeRLHF.config_class(ppo_size="lora", score_backbone="minilm")), SafeRLHF, (4, 8), [("p", "r")],
                 SimpleNamespace(model=torch.nn.Linear(9, 1)))
    ctx = SimpleNamespace(out_dir=tmp_path / "model")
    with monkeypatch.context() as cuda:
        cuda.setattr(torch.cuda, "is_available", lambda: True)
        cuda.setattr(torch.cuda, "max_memory_allocated", lambda: int(3.25 * 2**20) + 1000)
        res = m.save(ctx, steps=6, prompts=4, peak_rss=123.456)
    want = {"steps": 6, "train_prompts": 4, "final_lambda": pytest.approx(2.5), "peak_rss_mb": 123.5, "cuda_max_allocated_mb": 3.3,
            "params_trained": 9 + 3 + 5 + 7 + 10, "params_held": 12 + 6 + 3 + 5 + 7 + 10,
            "params_optimised_ppo": {"actor": 9, "reward": 3, "cost": 5}, "ppo_size": "lora", "lora_r_alpha": [4, 8],
            "gradient_checkpointing": True, "frozen_dtype": "bfloat16",
            "reference": "the actor with its LoRA adapters disabled (shared weights, exact)", "critic_init": "critic text",
            "score_backbone": "minilm", "ptx": True}
    assert res.extra == want and merged == [m.actor]
    assert saved == [("merged actor", "tok", ctx.out_dir, {"method": "safe-rlhf", "config": asdict(m.config), **res.extra})]
    assert res.model_path == str(ctx.out_dir) and res.models_trained == 5  # R, C, actor and two critics
    assert res.networks_held == ["actor", "reference", "reward_model", "cost_model", "reward_critic", "cost_critic"]

    # full size, one critic stream (reward shaping: no λ), and a C that is not a network: no parameter totals
    saved.clear(), merged.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m = networks(PPOShaping(PPOShaping.config_class()), PPOShaping, None, None, SimpleNamespace(score=lambda p, r: [0.0] * len(p)))
    res = m.save(ctx, steps=2, prompts=3, peak_rss=50.0)
    assert {k: res.extra[k] for k in ("final_lambda", "cuda_max_allocated_mb", "params_trained", "params_held", "lora_r_alpha", "ptx")} == {
        "final_lambda": None, "cuda_max_allocated_mb": None,
        "params_trained": None, "params_held": None, "lora_r_alpha": None, "ptx": False}
    assert res.extra["reference"] == "a separate frozen copy of the SFT model in bfloat16" and res.extra["params_optimised_ppo"] == {"actor": 9, "reward": 3}
    assert saved[0][0] is m.actor and merged == []  # no merge without LoRA
    assert res.models_trained == 4 and res.networks_held == ["actor", "reference", "reward_model", "cost_model", "reward_critic"]


class RecordingBackbone(FakeBackbone):
    """FakeBackbone that remembers the keyword arguments of each call."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def forward(self, input_ids, **kw):
        self.calls.append(kw)
        return super().forward(input_ids, **kw)


class FakePeftActor(torch.nn.Module):
    """The peft surface `AdapterValueModel` and `merge_lora_actor` use: adapters by name, the active one, the base."""

    def __init__(self):
        super().__init__()
        self.peft_config = {"default": SimpleNamespace(target_modules={"v_proj", "q_proj"}), "reward_critic": None, "cost_critic": None}
        self.active_adapter, self.added, self.deleted, self.modes, self.unhooked = "default", [], [], [], []
        self.decoder = RecordingBackbone()
        self.bench_adapter_hook = SimpleNamespace(remove=lambda: self.unhooked.append(True))

    def add_adapter(self, name, config):
        self.added.append((name, config))

    def set_adapter(self, name):
        self.active_adapter = name

    def delete_adapter(self, name):
        self.deleted.append(name)

    def get_base_model(self):
        return SimpleNamespace(config=self.decoder.config, base_model=self.decoder)

    def train(self, mode=True):
        self.modes.append(mode)
        return super().train(mode)

    def merge_and_unload(self):
        return ("merged", self.active_adapter, tuple(self.deleted))


def test_ppo_critics_pass_masks_and_positions_and_adapters_match_the_actor() -> None:
    """Both critics run their backbone with the rollout's attention mask and positions and no KV cache; a shared-base
    critic adds its adapter on the actor's resolved target modules (r, α, no dropout) and `train()` puts the shared
    backbone in train mode; merging deletes the critics' adapters (never the actor's), unhooks and merges."""
    from peft import LoraConfig

    from harness.training.ppo import AdapterValueModel, ValueModel, lora_config, merge_lora_actor

    ids, mask, pos = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 1]])
    critic = ValueModel(RecordingBackbone())
    assert critic(ids, mask, pos).shape == (1, 3)
    ((kw,),) = [critic.backbone.calls]
    assert kw["attention_mask"] is mask and kw["position_ids"] is pos and kw["use_cache"] is False

    actor = FakePeftActor()
    shared = AdapterValueModel(actor, "cost_critic", 4, 16)
    ((name, config),) = actor.added
    assert name == "cost_critic" and isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 16, 0.0, "none")
    assert config.target_modules == {"q_proj", "v_proj"}  # the actor's resolved modules, not "all-linear" again
    shared.eval()
    shared.train()
    assert shared.training and actor.modes[-1] is True and actor.training
    assert shared(ids, mask, pos).shape == (1, 3) and actor.active_adapter == "cost_critic"
    (kw,) = actor.decoder.calls
    assert kw["attention_mask"] is mask and kw["position_ids"] is pos and kw["use_cache"] is False

    default = lora_config(8, 32)
    assert (default.r, default.lora_alpha, default.target_modules, default.lora_dropout) == (8, 32, "all-linear", 0.0)
    assert merge_lora_actor(actor) == ("merged", "default", ("reward_critic", "cost_critic")) and actor.unhooked == [True]


def test_ppo_trainable_parameters_rss_and_ptx_errors(tmp_path) -> None:
    """A peft model with the actor's adapter trains that adapter by name, whatever `requires_grad` says (the critics
    switch it off while they run); any other model its parameters that require a gradient. RSS in MiB. PTX errors
    name the file (and row) and how to turn PTX off."""
    import psutil

    from harness.errors import DataError
    from harness.training.ppo import ACTOR_ADAPTER, load_ptx, rss_mb, trainable_parameters

    class Peft(torch.nn.Module):
        def __init__(self, adapters):
            super().__init__()
            self.lora = torch.nn.ModuleDict({ACTOR_ADAPTER: torch.nn.Linear(1, 1)})
            self.base = torch.nn.Linear(2, 2)
            self.peft_config = dict.fromkeys(adapters)
            self.lora.requires_grad_(False)

    with_actor = Peft([ACTOR_ADAPTER])
    assert _param_ids(trainable_parameters(with_actor)) == _param_ids(with_actor.lora.parameters())
    other = Peft(["reward_critic"])
    assert _param_ids(trainable_parameters(other)) == _param_ids(other.base.parameters())

    assert rss_mb() == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.05)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r"}\n{"prompt": "p", "response": 3}\n')
    with pytest.raises(DataError, match=f"^file {bad}, row 1: PTX rows need string fields 'prompt' and 'response'$"):
        load_ptx(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match=rf"^file {empty}: the PTX file has no rows \(set methods.<method>.ptx_data='' to turn PTX off\)$"):
        load_ptx(str(empty))


def test_value_model_from_policy_is_the_fp32_backbone_with_a_zero_head(tmp_path) -> None:
    """The SFT-backbone critic: the decoder without its LM head, in fp32 even from a bf16 checkpoint, V = 0."""
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model
    from harness.training.ppo import ValueModel

    sft = AutoModelForCausalLM.from_pretrained(str(resolve_model("tiny-random")), dtype=torch.bfloat16)
    sft.save_pretrained(tmp_path / "bf16")
    critic = ValueModel.from_policy(tmp_path / "bf16")
    assert not hasattr(critic.backbone, "lm_head") and {p.dtype for p in critic.parameters()} == {torch.float32}
    torch.testing.assert_close(critic.backbone.embed_tokens.weight, sft.model.embed_tokens.weight.float())
    ids = torch.tensor([[1, 2, 3]])
    assert critic(ids, torch.ones_like(ids), torch.arange(3)[None]).abs().max() == 0


# -- sft: the untrained reference point (issue 15) ------------------------------------------------------------------


def test_sft_trains_nothing_and_holds_only_the_policy(tmp_path) -> None:
    from harness.api import TrainResult
    from methods.sft import SFTConfig

    m, ctx, log = make_ctx(tmp_path, "sft")
    assert m.config == SFTConfig()
    assert m.train(ctx) == TrainResult(model_path=None, models_trained=0, networks_held=["policy"])
    assert log == [] and not ctx.out_dir.exists()  # no model written: the record points at the SFT policy itself


# -- Safe-RLHF setup, optimisers and the PTX step: what each config value turns into ---------------------------------


class _Stop(Exception):
    """Raised by a patched constructor to end `setup` once what a test checks has happened."""


def _record_phases(monkeypatch) -> list[tuple[str, bool]]:
    """Replace `phase` in methods.safe_rlhf by a recorder of (label, trim): the labels are the stage profile's rows."""
    import contextlib

    import methods.safe_rlhf as safe_rlhf

    phases: list[tuple[str, bool]] = []

    @contextlib.contextmanager
    def phase(name: str, trim: bool = False):
        phases.append((name, trim))
        yield

    monkeypatch.setattr(safe_rlhf, "phase", phase)
    return phases


def test_safe_rlhf_setup_checks_pairs_trains_r_and_c_and_picks_mixed_precision(tmp_path, monkeypatch) -> None:
    """setup refuses a train fold without reward or cost pairs (naming the method and what is missing); trains R on the
    reward pairs and C on the cost pairs on the SFT backbone (or the named encoder), freezes them and turns their
    score caches off; runs bf16 mixed precision on CUDA only when train.precision allows it. Stopped at the
    Accelerator: no network is loaded. Planted: the pair kinds or names exchanged, the encoder ignored, bf16 on CPU."""
    import accelerate

    made: list[dict[str, Any]] = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kw: made.append(kw) or (_ for _ in ()).throw(_Stop()))
    phases = _record_phases(monkeypatch)
    for kind in ("reward", "cost"):
        m, ctx, _ = make_ctx(tmp_path / kind, "safe-rlhf", **{f"{kind}_pairs": []})
        with pytest.raises(BenchError, match=f"^safe-rlhf needs reward and cost pairs in the train fold, but there are no {kind} pairs: "):
            m.setup(ctx)
    assert made == [] and phases == []
    cases = [("cpu", "auto", "policy", {"cpu": True, "mixed_precision": "no"}), ("cuda", "auto", "minilm", {"cpu": False, "mixed_precision": "bf16"}),
             ("cuda", "bf16", "policy", {"cpu": False, "mixed_precision": "bf16"}), ("cuda", "fp32", "policy", {"cpu": False, "mixed_precision": "no"})]
    for device, precision, backbone, want in cases:
        trained, scorers = [], {}

        def train_score_model(kind, pairs, name, **kw):
            trained.append((kind, pairs, name, kw))
            scorers[kind] = ScriptedNetScorer("unused", {}, causal=False)
            return scorers[kind]

        m, ctx, _ = make_ctx(tmp_path / f"{device}-{precision}-{backbone}", "safe-rlhf",
                             [f"train.precision={precision}", f"method.score_backbone={backbone}"], score_models=train_score_model)
        ctx.device = device
        made.clear(), phases.clear()
        with pytest.raises(_Stop):
            m.setup(ctx)
        encoder = ctx.policy_path if backbone == "policy" else backbone
        assert trained == [("reward", REWARD_PAIRS, "reward_model", {"encoder": encoder}), ("cost", COST_PAIRS, "cost_model", {"encoder": encoder})]
        assert made == [want], (device, precision)
        assert phases == [("safe-rlhf/score_models", True)]  # the profile row; trim: R and C training's heap returned
        for s in scorers.values():
            assert s.use_cache is False and not any(p.requires_grad for p in s.model.parameters())


def _tiny_copy(tmp_path: Path, eos: Any) -> Path:
    """The tiny random model with bf16 as its saved dtype (what `from_pretrained` would pick by itself) and `eos` as
    its generation config's EOS (the tokenizer's EOS stays 2)."""
    from harness.models import resolve_model

    src, dst = Path(resolve_model("tiny-random")), tmp_path / "tiny-copy"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in ("config.json", "generation_config.json"):
            (dst / f.name).symlink_to(f)
    config, gen = (json.loads((src / name).read_text()) for name in ("config.json", "generation_config.json"))
    (dst / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    (dst / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": eos}))
    return dst


def _setup_on_copy(tmp_path: Path, monkeypatch, eos: Any, overrides: list[str]):
    """`lora_ppo` (its settings, then `overrides`) on `_tiny_copy(eos)`, recording load_policy and resolve_dtype calls."""
    import harness.models

    path = _tiny_copy(tmp_path, eos)
    calls: dict[str, list[tuple]] = {"load_policy": [], "resolve_dtype": []}
    for fn in calls:
        real = getattr(harness.models, fn)
        monkeypatch.setattr(harness.models, fn, lambda *a, _real=real, _fn=fn: calls[_fn].append(a) or _real(*a))
    monkeypatch.setattr(harness.models, "resolve_model", lambda name: path)  # lora_ppo's "tiny-random" -> the copy
    m, ctx, scorers, _ = lora_ppo(tmp_path, causal_scorers=False, overrides=overrides)
    return m, ctx, scorers, path, calls


def _checkpointing(model: torch.nn.Module) -> list[dict[str, Any]]:
    """The keyword arguments of every gradient-checkpointed layer's checkpoint function."""
    return [dict(mod._gradient_checkpointing_func.keywords) for mod in model.modules()
            if getattr(mod, "gradient_checkpointing", False) and hasattr(mod, "_gradient_checkpointing_func")]


def test_safe_rlhf_full_size_setup_takes_its_settings_from_the_config(tmp_path, monkeypatch) -> None:
    """ppo_size=full on the tiny model: the reference is a separate frozen copy in the frozen dtype (train.precision
    when frozen_dtype=auto), R and C are cast to it, the actor stays fp32 master weights although the checkpoint says
    bf16; gradient checkpointing (train's, as method's is None) is non-reentrant on the actor and both critics; the
    response cap falls back to max_length − max_prompt_length; the first generation-config EOS ends a PTX row and
    every EOS stops a rollout; the PTX rows are loaded with the cursor at the start."""
    from harness.training.ppo import ValueModel

    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text('{"prompt": "p", "response": "r"}\n{"prompt": "q", "response": "s"}\n')
    phases = _record_phases(monkeypatch)
    m, ctx, scorers, path, calls = _setup_on_copy(tmp_path, monkeypatch, [7, 2], [
        "method.ppo_size=full", "train.precision=bf16", "train.gradient_checkpointing=true", "method.max_new_tokens=0",
        "train.max_length=49", "train.max_prompt_length=48", f"method.ptx_data={ptx}"])
    assert m.lora is None and phases == [("safe-rlhf/score_models", True), ("safe-rlhf/load", True)]
    assert calls["load_policy"] == [(path, "cpu", "bf16")] and {a[1] for a in calls["resolve_dtype"]} == {"cpu"}
    assert m.frozen_dtype == "bfloat16" and m.reference is not m.actor
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in m.reference.parameters())
    assert all(p.dtype == torch.bfloat16 for s in scorers.values() for p in s.model.parameters())
    assert all(p.dtype == torch.float32 for p in m.actor.parameters()) and m.tokenizer.padding_side == "left"
    assert all(isinstance(c, ValueModel) for c in m.critics.values())
    assert m.critic_init == "SFT policy backbone + zero head (the score model is not a causal model on the actor's vocabulary)"
    assert m.gradient_checkpointing is True
    for model in (m.actor, *(c.backbone for c in m.critics.values())):
        assert model.is_gradient_checkpointing and _checkpointing(model) and all(kw == {"use_reentrant": False} for kw in _checkpointing(model))
    assert m.max_new_tokens == 1  # 49 − 48
    assert m.end_id == 7 and m.eos_ids.tolist() == [2, 7]
    assert m.ptx == [("p", "r"), ("q", "s")] and m.ptx_cursor == 0


def test_safe_rlhf_lora_setup_takes_its_settings_from_the_config(tmp_path, monkeypatch) -> None:
    """ppo_size=lora: the method's LoRA r/α over train's, method's gradient_checkpointing=false over train's true,
    frozen_dtype=bf16 over train.precision=fp32, no reference copy loaded; a model without a generation-config EOS
    ends turns with the tokenizer's; no PTX unless ptx_data is set. Then one PTX step on the real model: its loss is
    ptx_coef × the mean over rows of each row's mean NLL of response + end tokens, each row run alone (unpadded)."""
    m, ctx, scorers, path, calls = _setup_on_copy(tmp_path, monkeypatch, None, [
        "method.gradient_checkpointing=false", "train.gradient_checkpointing=true", "method.frozen_dtype=bf16", "train.precision=fp32",
        "method.ptx_coef=3"])
    assert m.lora == (4, 8) and (ctx.cfg.train.lora_r, ctx.cfg.train.lora_alpha) == (16, 32)
    assert calls["load_policy"] == [] and m.frozen_dtype == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for s in scorers.values() for p in s.model.parameters())
    assert m.gradient_checkpointing is False and not m.actor.is_gradient_checkpointing and not _checkpointing(m.actor)
    assert m.critic_init == ("SFT policy backbone + zero head (the score model is not a causal model on the actor's vocabulary); "
                             "a LoRA adapter on the actor's frozen base weights (shared, no copy)")
    assert m.end_id == 2 and m.eos_ids.tolist() == [2] and m.max_new_tokens == 4 and m.ptx is None

    from harness.models import prompt_text

    m.ptx, m.ptx_cursor = [("Say hi.", "hi"), ("Count from one to ten, please.", "one two three four five six seven")], 0
    tok, nll = m.tokenizer, []
    with torch.no_grad():
        for prompt, response in m.ptx:
            p = tok(prompt_text(tok, prompt, ctx.cfg), add_special_tokens=False)["input_ids"]
            r = tok(response, add_special_tokens=False)["input_ids"][:3] + [2]  # max_new_tokens − 1 tokens + EOS
            logp = torch.log_softmax(m.actor(input_ids=torch.tensor([p + r])).logits[0].float(), -1)
            nll.append(-torch.stack([logp[len(p) - 1 + i, t] for i, t in enumerate(r)]).mean())
    assert len(tok("one two three four five six seven", add_special_tokens=False)["input_ids"]) > 3
    assert m.ptx_step(2) == pytest.approx(3.0 * torch.stack(nll).mean().item(), rel=1e-4)

    # make_critic: a scorer without model/tokenizer attributes, the default stream, a causal score model's LoRA'd copy
    m.actor.delete_adapter("reward_critic")
    critic = m.make_critic(object(), str(path))
    assert critic.adapter == "reward_critic" and "reward_critic" in m.actor.peft_config
    m.make_critic(ScriptedNetScorer(str(path), {}, causal=True), str(path))
    assert m.critic_init == ("copy of the score model (backbone + head at every position), as upstream; "
                             "LoRA on the copied backbone, head trained")


def test_safe_rlhf_optimisers_take_their_config() -> None:
    """AdamW per network with its own lr, weight decay and the shared betas; the actor's schedule warms up over
    actor_warmup_ratio of the steps, the critics' never. Planted: warmup ratio / steps, the critics warmed up like
    the actor, AdamW's default lr / betas / weight decay."""
    from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig

    class PreparingAccelerator(FakeAccelerator):
        def prepare(self, *objs):
            return objs

    m = SafeRLHF(SafeRLHFConfig(actor_lr=0.2, actor_weight_decay=0.05, actor_warmup_ratio=0.5, actor_lr_scheduler="linear",
                                critic_lr=0.1, critic_weight_decay=0.0, critic_lr_scheduler="constant_with_warmup", adam_betas=(0.8, 0.9)))
    m.accelerator, m.actor = PreparingAccelerator(), torch.nn.Linear(2, 1)
    critics = m.critics = {"reward": torch.nn.Linear(2, 1), "cost": torch.nn.Linear(2, 1)}
    m.setup_optimizers(4)
    assert list(m.optim) == ["actor", "reward", "cost"] and m.optim["actor"][0] is m.actor and m.critics == critics
    want = {"actor": (0.2, 0.05), "reward": (0.1, 0.0), "cost": (0.1, 0.0)}
    for key, (model, opt, _) in m.optim.items():
        (group,) = opt.param_groups
        assert (group["initial_lr"], group["weight_decay"], group["betas"]) == (*want[key], (0.8, 0.9)), key
        assert group["params"] == list(model.parameters())
    lrs = {key: [] for key in m.optim}
    for _ in range(4):
        for key, (_, opt, sched) in m.optim.items():
            lrs[key].append(sched.get_last_lr()[0])
            opt.step(), sched.step()
    assert lrs["actor"] == pytest.approx([0.0, 0.1, 0.2, 0.1])  # linear: 2 warm-up steps of 4, then down to 0
    assert lrs["reward"] == lrs["cost"] == [0.1] * 4  # no warm-up


class WordTokenizer:
    """Token ids written as numbers: "1 2" -> [1, 2]; pad id 0. Refuses to add special tokens."""

    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        assert add_special_tokens is False, "PTX rows are tokenised without special tokens"
        return {"input_ids": [int(w) for w in text.split()]}


class ToyLM(ToyPolicy):
    """ToyPolicy called the Hugging Face way (logits_to_keep 0 = every position), recording the input ids too."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        self.calls.append(dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               logits_to_keep=logits_to_keep, use_cache=use_cache))
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_ptx_step_is_the_masked_response_nll_times_ptx_coef_and_leaves_the_schedule(monkeypatch) -> None:
    """Two PTX steps of 2 rows on a toy LM (same next-token distribution everywhere): rows taken in order from the
    cursor and wrapping around; the response cut at max_new_tokens − 1 tokens plus the end token; rows left-padded
    with attention 0 and positions counted from the first real token; the loss ptx_coef × the mean over rows of each
    row's mean NLL on response + end tokens only; one SGD step on exactly that loss each, the schedule untouched."""
    import harness.models
    from methods.safe_rlhf import SafeRLHF, SafeRLHFConfig

    m = SafeRLHF(SafeRLHFConfig(ptx_coef=2.0, max_grad_norm=0.0))
    m.accelerator, m.actor, m.device, m.tokenizer, m.cfg = FakeAccelerator(), ToyLM(), torch.device("cpu"), WordTokenizer(), object()
    opt = torch.optim.SGD(m.actor.parameters(), lr=1.0)
    m.optim = {"actor": (m.actor, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))}
    m.ptx, m.ptx_cursor, m.max_new_tokens, m.end_id = [("1 2", "2 2 2 2 2"), ("1", "1"), ("3", "2 1")], 0, 3, 3
    monkeypatch.setattr(harness.models, "prompt_text", lambda tok, p, cfg: p if tok is m.tokenizer and cfg is m.cfg else pytest.fail("other tok/cfg"))
    with torch.no_grad():
        m.actor.logits.copy_(torch.tensor([0.5, -1.0, 0.0, 1.0]))

    def expected(logits, label_rows):
        logits = logits.detach().clone().requires_grad_(True)
        logp = torch.log_softmax(logits, -1)
        loss = 2.0 * torch.stack([-logp[torch.tensor(t)].mean() for t in label_rows]).mean()
        loss.backward()
        return loss.item(), (logits - 1.0 * logits.grad).detach()  # SGD, lr 1 (the schedule never steps)

    def step() -> float:
        with torch.device("meta"):  # a tensor made without `device=` lands on meta and fails: the batch is on m.device
            return m.ptx_step(2)

    loss1, after1 = expected(m.actor.logits, [[2, 2, 3], [1, 3]])
    assert step() == pytest.approx(loss1) and m.ptx_cursor == 2
    torch.testing.assert_close(m.actor.logits.detach(), after1)
    loss2, after2 = expected(after1, [[2, 1, 3], [2, 2, 3]])  # rows 2, then 0 again
    assert step() == pytest.approx(loss2) and m.ptx_cursor == 4
    torch.testing.assert_close(m.actor.logits.detach(), after2)
    assert m.optim["actor"][2].get_last_lr() == [1.0]
    first, second = m.actor.calls
    assert first["input_ids"].tolist() == [[1, 2, 2, 2, 3], [0, 0, 1, 1, 3]]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert first["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]]
    assert second["input_ids"].tolist() == [[0, 3, 2, 1, 3], [1, 2, 2, 2, 3]]
    assert second["attention_mask"].tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert second["position_ids"].tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert all(c["use_cache"] is False and c["logits_to_keep"] == 0 for c in (first, second))
