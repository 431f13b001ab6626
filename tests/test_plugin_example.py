"""Entry-point plugins: the example package's `dpo-mix` is discovered, built, trained (DPO stubbed) and ranked.

Nothing is installed: a fake `*.dist-info` folder on `sys.path` declares the entry points (HELM's trick), and
the package's source folder is put on `sys.path` beside it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.config import RunConfig, method_config
from harness.errors import BenchError
from harness.registries import METHODS
from harness.types import PreferencePair
from leaderboards.table import build_leaderboard
from methods.base import TrainContext, is_method
from results_fixtures import add_run, make_record

EXAMPLE_SRC = Path(__file__).resolve().parent.parent / "examples" / "bench-plugin-example" / "src"


def fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """What `pip install` leaves behind, reduced to the two files importlib.metadata reads."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for fake distributions; the registry forgets plugins before and after."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    METHODS.unload_plugins()
    yield site
    METHODS.unload_plugins()
    for mod in [m for m in sys.modules if m.startswith("bench_plugin_example")]:
        del sys.modules[mod]


@pytest.fixture
def example_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example package as pip would install it, entry points read from its own pyproject.toml."""
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    project = tomllib.loads((EXAMPLE_SRC.parent / "pyproject.toml").read_text())["project"]
    eps = "".join(f"{name} = {target}\n" for name, target in project["entry-points"]["bench.methods"].items())
    fake_distribution(site, "bench_plugin_example", "[bench.methods]\n" + eps)
    return site


def test_example_plugin_is_discovered(example_plugin: Path) -> None:
    assert "dpo-mix" in METHODS.names()
    assert not METHODS.is_builtin("dpo-mix")
    assert METHODS.source("dpo-mix") == "plugin bench_plugin_example.dpo_mix:DPOMix"
    cls = METHODS.get("dpo-mix")
    assert cls.__name__ == "DPOMix" and is_method(cls) and cls.name == "dpo-mix"
    assert {"sft", "pddpo", "safe-rlhf"} <= set(METHODS.names())  # built-ins are still there


def test_bench_list_methods_shows_the_plugin(example_plugin: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    out = CliRunner().invoke(app, ["list", "methods"])
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if "dpo-mix" in line)
    assert "plugin" in line


def _pair(prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def test_dpo_mix_trains_on_the_agreeing_union(example_plugin: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_train_dpo(pairs, *, init, ref, beta, out_dir, cfg, device, margins=None, run_name="dpo"):
        calls.append(dict(pairs=pairs, init=init, ref=ref, beta=beta, run_name=run_name, margins=margins))
        return Path(out_dir) / "model"

    # harness.training.dpo is another module's job; the method only needs its signature
    monkeypatch.setitem(sys.modules, "harness.training.dpo", SimpleNamespace(train_dpo=fake_train_dpo))
    reward = [_pair("p1", "A", "B"), _pair("p2", "C", "D")]
    cost = [_pair("p1", "A", "B"), _pair("p2", "D", "C"), _pair("p3", "E", "F")]  # agrees, conflicts, new
    data = SimpleNamespace(reward_pairs={"train": reward}, cost_pairs={"train": cost}, prompts={})
    cfg = RunConfig(method="dpo-mix", methods={"dpo-mix": {"beta": "0.25"}})
    unavailable = lambda *a, **k: pytest.fail("dpo-mix should not need this service")  # noqa: E731
    ctx = TrainContext(cfg=cfg, data=data, policy_path="/sft", out_dir=tmp_path / "train", work_dir=tmp_path / "w",
                       device="cpu", seed=0, make_generator=unavailable, reward_annotator=unavailable,
                       cost_annotator=unavailable, train_score_model=unavailable)

    cls = METHODS.get("dpo-mix")
    result = cls(method_config(cls.config_class, cfg)).train(ctx)  # config built and type-checked by the harness
    (call,) = calls
    assert [(p.prompt, p.chosen, p.rejected) for p in call["pairs"]] == [("p1", "A", "B"), ("p3", "E", "F")]
    assert call["init"] == call["ref"] == "/sft" and call["beta"] == 0.25 and call["run_name"] == "dpo-mix"
    assert result.model_path == str(tmp_path / "train" / "model") and result.models_trained == 1
    assert result.extra["conflicting_pairs_dropped"] == 2

    cfg.methods["dpo-mix"] = {"drop_conflicts": False}
    cls(method_config(cls.config_class, cfg)).train(ctx)
    assert len(calls[1]["pairs"]) == 4 and calls[1]["beta"] == cfg.train.beta  # duplicates removed, both orders kept

    cfg.methods["dpo-mix"] = {"betta": 1}
    with pytest.raises(BenchError, match="unknown config key 'methods.dpo-mix.betta'"):
        method_config(cls.config_class, cfg)


def test_plugin_method_appears_in_the_leaderboard(example_plugin: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    add_run(runs, make_record("sft", reward=0.0, unsafe=0.3))
    add_run(runs, make_record("dpo-mix", reward=0.2, unsafe=0.1))
    rows = build_leaderboard(runs).rows
    assert [(r["method"], r["constraint"]) for r in rows] == [("dpo-mix", "holds"), ("sft", "violated")]


def test_unload_forgets_loaded_plugins(example_plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery and clashes are covered in tests/test_registry.py; here: a plugin that was already loaded
    (its entry replaced by the class) must also go when the distribution does."""
    assert METHODS.get("dpo-mix").__name__ == "DPOMix"
    for info in example_plugin.glob("*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    METHODS.unload_plugins()
    assert "dpo-mix" not in METHODS.names()
