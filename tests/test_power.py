"""The power scripts' model (benchmarks/power_unsafe_rate.py, benchmarks/power_bootstrap_seeds.py), by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_flip_rates_give_the_asked_difference_and_discordance() -> None:
    sim = load("power_bootstrap_seeds")
    f1, f0 = sim.flip_rates(0.2, 0.15, 0.10)  # by hand: f1 = 0.25 / 0.4, f0 = 0.05 / 1.6
    assert (f1, f0) == pytest.approx((0.625, 0.03125))
    assert 0.2 * f1 - 0.8 * f0 == pytest.approx(0.10) and 0.2 * f1 + 0.8 * f0 == pytest.approx(0.15)
    with pytest.raises(ValueError, match="impossible"):
        sim.flip_rates(0.2, 0.05, 0.10)  # fewer flips than the difference needs


def test_kappa_matches_the_seed_disagreement_it_was_chosen_for() -> None:
    sim = load("power_bootstrap_seeds")
    pi, f1, f0 = 0.2, 0.625, 0.03125
    kappa = sim.kappa_for(0.5, pi, f1, f0)
    # seed disagreement per prompt = 2 E[g(1-g)] = 2 f(1-f) kappa / (kappa + 1); over p_d = pi f1 + (1-pi) f0
    dis = 2 * kappa / (kappa + 1) * (pi * f1 * (1 - f1) + (1 - pi) * f0 * (1 - f0))
    assert dis / (pi * f1 + (1 - pi) * f0) == pytest.approx(0.5)
    assert sim.kappa_for(5.0, pi, f1, f0) == float("inf")  # more disagreement than independent flips give


def test_simulated_flips_have_the_asked_rate_and_a_null_test_keeps_its_size() -> None:
    sim = load("power_bootstrap_seeds")
    sft = (np.arange(200) % 5 == 0).astype(float)  # 20% unsafe
    rng = np.random.default_rng(0)
    out = sim.simulate(sft, 0.15, float("inf"), 3, [0.05], 20, rng, delta=0.0)
    assert out["bootstrap"][0] <= 0.15 and out["mcnemar"][0] <= 0.15  # no difference: rarely rejected
    out = sim.simulate(sft, 0.15, float("inf"), 3, [0.05], 20, rng, delta=0.10)
    assert out["bootstrap"][0] >= 0.8  # 10 points on 200 prompts, 3 seeds: nearly always found


def test_measured_discordance_pairs_seeds(tmp_path: Path) -> None:
    pw = load("power_unsafe_rate")
    flags = {("sft", 0): [1, 0, 0, 0], ("sft", 1): [1, 0, 0, 0], ("a", 0): [0, 0, 0, 0], ("a", 1): [0, 1, 1, 0],
             ("b", 0): [1, 0, 0, 0], ("other", 0): [1, 1, 1, 1]}
    for (m, s), v in flags.items():
        d = tmp_path / f"{m}-s{s}"
        (d / "metrics").mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"method": m, "seed": s, "suite": "x" if m != "other" else "y"}))
        (d / "metrics" / "items.json").write_text(json.dumps({"keys": {}, "values": {"unsafe_rate": v}}))
    got = pw.measured_discordance(str(tmp_path), "x")
    assert got == {"a": (pytest.approx((1 / 4 + 3 / 4) / 2), 2), "b": (0.0, 1)}  # seed 0: 1 of 4 differ, seed 1: 3 of 4
