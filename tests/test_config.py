"""Config: profiles load, --set overrides are typed, unknown keys and wrong types are refused."""

from __future__ import annotations

import pytest

from harness.config import RunConfig, load_config, method_config
from harness.errors import BenchError


@pytest.mark.parametrize("profile", ["tiny", "cpu", "gpu"])
def test_profiles_load(profile):
    cfg = load_config(profile)
    assert isinstance(cfg, RunConfig) and cfg.profile == profile


def test_overrides_are_typed():
    cfg = load_config("tiny", ["train.learning_rate=1e-5", "seed=3", "train.lora=true", "data.data_dir=none", "generation.temperature=0.7"])
    assert cfg.train.learning_rate == 1e-5 and cfg.seed == 3 and cfg.train.lora is True
    assert cfg.data.data_dir is None and cfg.generation.temperature == 0.7


@pytest.mark.parametrize("override,match", [
    ("train.lr=1", "unknown config key 'train.lr'"),
    ("nonsense=1", "unknown config key 'nonsense'"),
    ("train.batch_size=four", "'train.batch_size': 'four' is not an int"),
    ("train.lora=maybe", "is not a bool"),
    ("train=3", "must be a mapping"),
    ("novalue", "expected key=value"),
])
def test_bad_overrides_are_refused(override, match):
    with pytest.raises(BenchError, match=match):
        load_config("tiny", [override])


def test_unknown_profile():
    with pytest.raises(BenchError, match="unknown profile 'huge'"):
        load_config("huge")


def test_method_sections_and_shorthand():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        num_iterations: int = 3
        eta: float = 1.0

    cfg = load_config("tiny", ["method.eta=2.5"], method="pddpo")
    mc = method_config(Cfg, cfg)
    assert mc.eta == 2.5 and mc.num_iterations == 2  # tiny.yaml sets num_iterations: 2
    bad = load_config("tiny", ["method.etaa=1"], method="pddpo")
    with pytest.raises(BenchError, match="methods.pddpo.etaa"):
        method_config(Cfg, bad)


def test_fingerprint_ignores_storage_but_not_results():
    a = load_config("tiny", ["runs_dir=/tmp/x"])
    b = load_config("tiny", ["runs_dir=/tmp/y"])
    c = load_config("tiny", ["seed=1"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert load_config("tiny").data.data_dir == str(tmp_path)


def test_every_config_field_has_help_and_bench_lists_them():
    """TRL's convention, everywhere: every RunConfig section field and every built-in method's config field carries
    `help` metadata, and `bench list methods NAME` prints each field with its default and help."""
    import dataclasses

    from typer.testing import CliRunner

    from harness import config
    from harness.cli import app
    from harness.registries import METHODS

    classes = [config.RunConfig, config.DataConfig, config.TrainConfig, config.GenerationConfig, config.ScoringConfig,
               config.EvalConfig, config.WandbConfig, config.ResourcesConfig]
    classes += [METHODS.get(n).config_class for n in METHODS.names() if METHODS.is_builtin(n)]
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if not f.metadata.get("help")]
    assert missing == []
    out = CliRunner().invoke(app, ["list", "methods", "mocan"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "samples_per_prompt" in out.output and "K responses per prompt" in out.output and "[ours: CPU-sized" in out.output and "'auto'" in out.output
    assert "--set methods.mocan.<field>" in out.output
    bad = CliRunner().invoke(app, ["list", "methods", "no-such-method"])
    assert "unknown method 'no-such-method'" in str(bad.exception)  # BenchError: `bench` exits 2 with this line
