"""Registries: lazy built-ins all resolve, entry-point plugins are discovered, clashes and typos are handled."""

from __future__ import annotations

import sys
import textwrap

import pytest

from harness.errors import BenchError
from harness.registries import DATASETS, EVALUATION, GENERATORS, METHODS, SCORERS, TRACKERS
from harness.registry import Registry


@pytest.mark.parametrize("registry", [METHODS, DATASETS, SCORERS, GENERATORS, TRACKERS, EVALUATION], ids=lambda r: r.kind)
def test_every_builtin_resolves(registry):
    for name in registry.names():
        if registry.is_builtin(name):
            assert callable(registry.get(name)), name  # `get` raises for a missing entry; a target must be a class or factory


def test_methods_implement_the_protocol():
    from methods.base import is_method

    for name in METHODS.names():
        cls = METHODS.get(name)
        assert is_method(cls), name
        assert cls.name == name, f"{cls.__name__}.name should be '{name}'"


def test_cli_import_is_light():
    """`bench --help` must not import torch or vllm (lazy registries)."""
    import subprocess

    code = "import sys, harness.cli; print(any(m in sys.modules for m in ('torch', 'vllm', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BenchError, match="did you mean 'pddpo'"):
        METHODS.get("pdpo")


def _fake_distribution(tmp_path, name: str, group: str, entries: dict[str, str], module_src: str | None = None):
    """HELM's trick: a .dist-info folder on sys.path makes importlib.metadata see an installed plugin."""
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    if module_src:
        (tmp_path / f"{name.replace('-', '_')}.py").write_text(textwrap.dedent(module_src))


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "fake-bench-plugin", "bench.methods",
                       {"my-method": "fake_bench_plugin:MyMethod", "sft": "fake_bench_plugin:MyMethod", "broken": "fake_bench_plugin:Missing"},
                       """
                       from dataclasses import dataclass
                       from methods.base import TrainResult

                       @dataclass
                       class Cfg:
                           pass

                       class MyMethod:
                           name = "my-method"
                           config_class = Cfg
                           def __init__(self, config): self.config = config
                           def train(self, ctx): return TrainResult(model_path=None)
                       """)
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS.unload_plugins()
    try:
        with pytest.warns(UserWarning, match="clashes with a built-in"):
            names = METHODS.names()
        assert "my-method" in names and not METHODS.is_builtin("my-method")
        assert METHODS.get("my-method").__name__ == "MyMethod"
        assert METHODS.get("sft").__module__ == "methods.sft", "built-ins win name clashes"
        with pytest.raises(BenchError, match="failed to load"):
            METHODS.get("broken")
    finally:
        METHODS.unload_plugins()
        sys.modules.pop("fake_bench_plugin", None)


def test_registry_check_rejects_wrong_kind():
    reg: Registry = Registry("thing", None, check=lambda o: isinstance(o, type))
    reg.register("x", "json:dumps")
    with pytest.raises(BenchError, match="does not implement"):
        reg.get("x")


def test_lazy_module_and_function_import_their_target_on_first_use_only(tmp_path, monkeypatch):
    """A hand-built module records its import: binding it lazily imports nothing; the first attribute read (or
    call) imports it once, and a plain `import` elsewhere still gets the real module, not the stand-in."""
    from harness.registry import lazy_function, lazy_module

    (tmp_path / "lazy_probe_mod.py").write_text("import builtins\nbuiltins.lazy_probe_count = getattr(builtins, 'lazy_probe_count', 0) + 1\n"
                                                "def double(x):\n    return 2 * x\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_probe_mod", raising=False)
    import builtins

    monkeypatch.setattr(builtins, "lazy_probe_count", 0, raising=False)
    mod, double = lazy_module("lazy_probe_mod"), lazy_function("lazy_probe_mod:double")
    assert "lazy_probe_mod" not in sys.modules and builtins.lazy_probe_count == 0
    assert double(4) == 8 and mod.VALUE == 7 and mod.double(1) == 2
    assert builtins.lazy_probe_count == 1  # imported once, by the first use
    import lazy_probe_mod

    assert sys.modules["lazy_probe_mod"] is lazy_probe_mod and lazy_probe_mod is not mod
    with pytest.raises(AttributeError):
        mod.missing
