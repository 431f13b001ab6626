"""Config: profiles load, --set overrides are typed, unknown keys and wrong types are refused."""

from __future__ import annotations

import pytest

from harness.config import RunConfig, load_config, method_config
from harness.errors import BenchError


@pytest.mark.parametrize("profile", ["tiny", "cpu", "cpu-long", "gpu"])
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


def test_extends_starts_from_the_base_profile_and_overrides_key_by_key(tmp_path):
    base = load_config("cpu")
    child = tmp_path / "mine.yaml"
    child.write_text("extends: cpu\ntrain:\n  learning_rate: 3.0e-4\nmethods:\n  pddpo:\n    num_iterations: 5\n")
    cfg = load_config(str(child))
    assert cfg.profile == "mine" and cfg.train.learning_rate == 3e-4 and cfg.methods["pddpo"]["num_iterations"] == 5
    assert cfg.train.max_length == base.train.max_length and cfg.data.max_eval_prompts == base.data.max_eval_prompts
    assert cfg.methods["safe-rlhf"] == base.methods["safe-rlhf"]  # sibling method sections are kept
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(BenchError, match="makes a cycle"):
        load_config(str(loop))


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


@pytest.mark.parametrize("spec, inside, outside", [
    (">0", [1e-9, 3], [0, -1.0]),
    (">=0", [0, 0.0, 7], [-1e-9]),
    ("<=1", [1, -5], [1.0000001]),
    ("<2", [1.999], [2]),
    ("[0,1)", [0, 0.5], [1, -0.1]),
    ("(0,1]", [1, 1e-6], [0, 1.5]),
    ("[0,inf)", [0, 1e12], [-1]),
    ("in:previous|pi_r", ["previous", "pi_r"], ["pi", "", 0]),
])
def test_range_specs_at_their_boundaries(spec, inside, outside):
    from harness.config import in_range

    assert all(in_range(v, spec) for v in inside), spec
    assert not any(in_range(v, spec) for v in outside), spec


def test_range_words_and_bad_specs():
    from harness.config import describe_range, in_range

    assert describe_range(">=0") == "a value >= 0" and describe_range("(0,1]") == "a value in (0,1]"
    assert describe_range("in:a|b") == "one of a, b"
    assert not in_range(True, ">0")  # a bool is not a number here, whatever Python's int says
    with pytest.raises(ValueError, match="bad range spec"):
        in_range(1, "positive")


def test_declared_ranges_are_valid_and_refused_at_config_time():
    """Every declared range parses and admits its field's default; a value outside it is refused when the config is
    built (before any work), naming the key, the value and what is accepted."""
    import dataclasses

    from harness.config import in_range
    from harness.registries import METHODS

    declared = 0
    for name in METHODS.names():
        for f in dataclasses.fields(METHODS.get(name).config_class):
            spec = f.metadata.get("range")
            if spec:
                declared += 1
                default = f.default if f.default is not dataclasses.MISSING else None
                assert default is None or in_range(default, spec), f"{name}.{f.name}"
    assert declared >= 20
    cls = METHODS.get("safedpo").config_class
    with pytest.raises(BenchError, match=r"config key 'methods.safedpo.delta': -0.5 is out of range; use a value >= 0 "
                                         r"\(--set methods.safedpo.delta=...\)"):
        method_config(cls, load_config("tiny", ["method.delta=-0.5"], method="safedpo"))
    assert method_config(cls, load_config("tiny", ["method.delta=0"], method="safedpo")).delta == 0  # the boundary is in
    with pytest.raises(BenchError, match="'methods.mocan.utility': 'sign' is out of range; use one of score, indicator, auto"):
        method_config(METHODS.get("mocan").config_class, load_config("tiny", ["method.utility=sign"], method="mocan"))


# Numeric method-config fields that accept any real value, and why (every other numeric field declares a range).
UNBOUNDED = {
    "threshold": "a constraint bound in the cost's own units: signed costs make negative bounds meaningful",
    "margin": "PeCAN's b: a required gain in implicit-reward units, negative relaxes it",
    "adam_betas": "a pair (the optimiser checks each β in [0, 1))",
}


def test_every_numeric_method_field_declares_a_range():
    import dataclasses
    import typing

    from harness.registries import METHODS

    missing = []
    for name in METHODS.names():
        if not METHODS.is_builtin(name):
            continue
        cls = METHODS.get(name).config_class
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = any(a in (int, float) for a in (typing.get_args(hints[f.name]) or (hints[f.name],)))
            if numeric and not f.metadata.get("range") and f.name not in UNBOUNDED:
                missing.append(f"{name}.{f.name}")
    assert missing == []


# -- non-finite numbers (issue 29): every numeric field of every section and every method refuses them ------------

NON_FINITE = ("inf", "-inf", ".inf", "-.inf", "nan", ".nan", "Infinity", "1e309", "-1e309")


def _numeric_fields(cls, prefix=""):
    """(dotted key, is_sequence) of every int/float field of a config dataclass, nested sections included."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(tp) or (tp,)
        if any(a in (int, float) for a in args):
            yield f"{prefix}{f.name}", typing.get_origin(tp) in (list, tuple)


def _tiny(overrides, method="sft"):
    """`load_config("tiny", overrides, method=...)` from a profile tree read once (reading the YAML is most of the
    cost of a load_config, and these tests build ~1000 configs)."""
    import copy

    from harness.config import apply_overrides, build_dataclass, read_profile, validate_config

    if not hasattr(_tiny, "tree"):
        _tiny.tree = read_profile("tiny")
    tree = copy.deepcopy(_tiny.tree)
    tree["method"] = method
    return validate_config(build_dataclass(RunConfig, apply_overrides(tree, overrides)))


def test_every_numeric_field_of_every_section_refuses_non_finite_values():
    keys = list(_numeric_fields(RunConfig))
    assert {"seed", "train.beta", "train.learning_rate", "scoring.threshold", "resources.cpus", "learning.min_accuracy",
            "generation.gpu_memory_utilization"} <= {k for k, _ in keys}
    for key, sequence in keys:
        for raw in NON_FINITE:
            value = f"[{raw}, 1]" if sequence else raw
            with pytest.raises(BenchError) as exc:
                _tiny([f"{key}={value}"])
            assert f"config key '{key}" in str(exc.value) and "\n" not in str(exc.value), (key, raw, str(exc.value))
    with pytest.raises(BenchError, match="'train.beta': 'inf' is not a finite number"):
        load_config("tiny", ["train.beta=inf"])  # and through the public entry point


def test_every_numeric_field_of_every_registered_method_refuses_non_finite_values():
    from harness.registries import METHODS

    import dataclasses

    from harness.config import parse_overrides

    checked = 0
    for name in METHODS.names():
        cls = METHODS.get(name).config_class
        base = _tiny([], method=name)
        for key, sequence in _numeric_fields(cls):
            for raw in NON_FINITE:
                ((_, value),) = parse_overrides([f"method.{key}={f'[{raw}, 0.9]' if sequence else raw}"])  # as --set reads it
                cfg = dataclasses.replace(base, methods={**base.methods, name: {**base.methods.get(name, {}), key: value}})
                with pytest.raises(BenchError, match=rf"config key 'methods\.{name}\.{key}\b"):
                    method_config(cls, cfg)
                checked += 1
    assert checked >= 40 * len(NON_FINITE)


def test_non_finite_messages_name_the_value_and_the_fix():
    with pytest.raises(BenchError, match=r"config key 'train.beta': 'inf' is not a finite number; give a finite value "
                                         r"\(--set train.beta=\.\.\.\)"):
        load_config("tiny", ["train.beta=inf"])
    with pytest.raises(BenchError, match=r"'train.beta': 1000000.* overflows a float"):
        load_config("tiny", ["train.beta=1" + "0" * 400])  # an int beyond a float's range: OverflowError before
    with pytest.raises(BenchError, match=r"'train.max_steps': 1000000.* overflows a 64-bit int"):
        load_config("tiny", ["train.max_steps=1" + "0" * 30])
    with pytest.raises(BenchError, match=r"'seed': 4294967296 is out of range"):
        load_config("tiny", [f"seed={2**32}"])  # numpy's seed range
    assert load_config("tiny", ["train.beta=1e308", f"seed={2**32 - 1}"]).train.beta == 1e308  # finite: accepted


def test_configs_built_directly_refuse_non_finite_values():
    """A plugin or test that builds a config without a profile: RangeChecked configs refuse on construction (declared
    range or not), and `validate_config` refuses a RunConfig holding one anywhere."""
    from dataclasses import dataclass, field

    from harness.config import RangeChecked, TrainConfig, in_range, validate_config
    from methods.pddpo import PDDPOConfig

    with pytest.raises(BenchError, match="'eta': inf is not a finite number"):
        PDDPOConfig(eta=float("inf"))

    @dataclass
    class Plain(RangeChecked):
        scale: float = field(default=1.0, metadata={"help": "no declared range"})

    with pytest.raises(BenchError, match="'scale': nan is not a finite number"):
        Plain(scale=float("nan"))
    with pytest.raises(BenchError, match=r"config key 'train.weight_decay': inf is not a finite number"):
        validate_config(RunConfig(train=TrainConfig(weight_decay=float("inf"))))
    assert not any(in_range(v, spec) for v in (float("inf"), float("-inf"), float("nan")) for spec in (">=0", "<=1", "[0,inf)", "(-inf,inf)"))


# -- malformed profiles (issue 29): one line naming the file and the problem, never a yaml traceback ---------------

@pytest.mark.parametrize("content, match", [
    ("train: {beta: [1\n", r"invalid YAML at line 2, column 1 \(expected ',' or '\]'.*\): fix the file"),
    ("train:\n  beta: 0.1\n   lr: 2\n", r"invalid YAML at line 3"),
    ("- tiny\n- cpu\n", "holds a YAML list, not a mapping of config keys"),
    ("just words\n", "holds a YAML str, not a mapping"),
    ("extends: [cpu, tiny]\n", r"'extends: \['cpu', 'tiny'\]' is not a profile name"),
    ("1: 2\n", "unknown config key '1'"),
    (b"train: {beta: 0.1}\n# \xff\xfe\n", r"not UTF-8 text \(byte 21\): save it as UTF-8"),
])
def test_malformed_profiles_are_refused_in_one_line(tmp_path, content, match):
    path = tmp_path / "mine.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BenchError, match=match) as exc:
        load_config(str(path))
    assert "\n" not in str(exc.value)


def test_profile_paths_of_the_wrong_kind(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(BenchError, match="folder.yaml is a folder, not a YAML file"):
        load_config(str(tmp_path / "folder.yaml"))
    with pytest.raises(BenchError, match=r"profile file .*missing.yaml does not exist: check the path"):
        load_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(str(tmp_path / "empty.yaml")).profile == "empty"  # empty = every default
