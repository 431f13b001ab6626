"""Precision of the DPO trainer (issue 28 item 3) on the tiny-random model: at policy = reference the loss is ln 2 in
fp32 and in bf16 autocast because the reference log-probs are computed under the same autocast as the policy; mixing
fp32 reference log-probs with a bf16 policy is what shifted it. The reference log-prob cache keeps the two precisions
apart, and a reference that is the init's own folder is not loaded twice (same weights as loading it)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from harness.config import load_config
from harness.io import copy_dir_atomic
from harness.training.dpo import dpo_trainer, preference_dataset, train_dpo
from harness.models import load_causal_lm, load_tokenizer, resolved_precision
from harness.types import PreferencePair

PAIRS = [PreferencePair(prompt=f"How should I store flour, case {i}?", chosen="Keep it dry in a sealed jar, away from heat.",
                        rejected="Leave it open in the rain for a week.") for i in range(4)]
TOLERANCE = 1e-3  # the stated tolerance of benchmarks/bf16_exactness.py


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate's state is a process singleton that keeps the first trainer's mixed precision: each test starts and
    leaves it empty, so neither these trainers nor later tests' inherit another precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _reset() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _cfg(precision: str):
    return load_config("tiny", [f"train.precision={precision}"], method="dpo-helpful")


def _losses_at_init(tiny_model_path: Path, tmp_path: Path, precision: str, policy_autocast: bool = False) -> list[float]:
    """The harness trainer's DPO loss on every batch before any step (policy = reference), no dropout."""
    _reset()
    cfg = _cfg(precision)
    tok = load_tokenizer(tiny_model_path)
    trainer = dpo_trainer(load_causal_lm(tiny_model_path), None, preference_dataset(PAIRS, tok, cfg), tok, cfg, 0.1,
                          tmp_path / f"trainer-{precision}", "cpu", tmp_path / f"cache-{precision}")
    trainer.model.eval()
    out = []
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            mixed = torch.autocast("cpu", dtype=torch.bfloat16) if policy_autocast else contextlib.nullcontext()  # enabled=False would switch it off
            with trainer.accelerator.autocast(), mixed:
                assert torch.is_autocast_enabled("cpu") == (precision == "bf16" or policy_autocast)
                out.append(float(trainer.compute_loss(trainer.model, dict(batch))))
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dpo_loss_is_log_2_at_policy_equals_reference(tiny_model_path, tmp_path, precision) -> None:
    losses = _losses_at_init(tiny_model_path, tmp_path, precision)
    assert losses and all(abs(x - math.log(2)) <= TOLERANCE for x in losses), losses
    if precision == "fp32":
        assert all(abs(x - math.log(2)) <= 1e-6 for x in losses), losses


def test_bf16_policy_against_fp32_reference_log_probs_is_what_shifts_the_loss(tiny_model_path, tmp_path) -> None:
    """The mixed computation (fp32 reference pass, bf16 policy) misses the tolerance on the tiny model: the test above
    holds only because the reference pass runs in the policy's precision."""
    mixed = _losses_at_init(tiny_model_path, tmp_path, "fp32", policy_autocast=True)
    assert max(abs(x - math.log(2)) for x in mixed) > TOLERANCE, mixed


def test_reference_cache_keeps_precisions_apart(tiny_model_path, tmp_path) -> None:
    cache = tmp_path / "ref"
    for precision in ("fp32", "bf16", "fp32"):
        _reset()
        cfg = _cfg(precision)
        tok = load_tokenizer(tiny_model_path)
        dpo_trainer(load_causal_lm(tiny_model_path), None, preference_dataset(PAIRS, tok, cfg), tok, cfg, 0.1, tmp_path / "t", "cpu", cache)
    assert len(list(cache.glob("*.pt"))) == 2  # one entry per precision; the second fp32 trainer hit the first's


def test_reference_that_is_the_init_folder_trains_like_a_loaded_one(tiny_model_path, tmp_path, monkeypatch) -> None:
    import harness.training.dpo as dpo

    cfg = _cfg("fp32")
    copy = copy_dir_atomic(tiny_model_path, tmp_path / "ref-copy")  # another folder, same weights: loaded as a reference
    loads: list[str] = []
    real = dpo.load_causal_lm
    monkeypatch.setattr(dpo, "load_causal_lm", lambda m, d="cpu": (loads.append(str(m)), real(m, d))[1])
    same = train_dpo(PAIRS, init=tiny_model_path, ref=tiny_model_path, beta=0.1, out_dir=tmp_path / "same", cfg=cfg,
                     device="cpu", ref_cache_dir=tmp_path / "c1", resume=False)
    assert loads == [str(tiny_model_path)]  # the reference was not loaded a second time
    loaded = train_dpo(PAIRS, init=tiny_model_path, ref=copy, beta=0.1, out_dir=tmp_path / "loaded", cfg=cfg, device="cpu",
                       ref_cache_dir=tmp_path / "c2", resume=False)
    assert loads == [str(tiny_model_path), str(tiny_model_path), str(copy)]
    a, b = (torch.cat([p.flatten() for p in load_causal_lm(x).parameters()]) for x in (same, loaded))
    assert (a - torch.cat([p.flatten() for p in load_causal_lm(tiny_model_path).parameters()])).abs().max() > 1e-4  # it trained
    assert torch.allclose(a, b, atol=1e-6)


def test_run_record_precision_is_resolved() -> None:
    assert resolved_precision("auto", "cpu") == "fp32" and resolved_precision("auto", "cuda:0") == "bf16"
    assert resolved_precision("bf16", "cpu") == "bf16" and resolved_precision("fp32", "cuda") == "fp32"
