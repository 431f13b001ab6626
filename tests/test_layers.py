"""The layers import one way: harness -> methods -> evaluators -> leaderboards (read: each may use those to its left).

Checked by walking the source with `ast` rather than with import-linter contracts, because the rule needs two
distinctions import-linter's graph does not make: an import at module level vs. one inside a function (the CLI,
`harness.cli`, is the composition root: it mounts the evaluator and leaderboard sub-apps lazily, by design), and an
import under `if TYPE_CHECKING:` (annotation only, never executed). The pipeline (`harness.runs`) gets no such pass:
it reaches methods, scorers, evaluator capabilities and trackers through the registries (`harness/registries.py`). No new dependency, and no import of the code under test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "evaluators", "leaderboards")
LAYER = {name: i for i, name in enumerate(PACKAGES)}
# the composition root (the `bench` entry point): it may reach any layer, but only inside functions (never at import time)
COMPOSERS = {"harness.cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_pkg: bool):
    """Yield (imported module, at_module_level) for every first-party import outside `if TYPE_CHECKING:`."""

    def resolve(node: ast.ImportFrom) -> list[str]:
        if node.level:  # relative: from .common import x
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [prefix] + [f"{prefix}.{a.name}" for a in node.names]

    def walk(nodes, top: bool):
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.orelse, top)
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name, top
            elif isinstance(node, ast.ImportFrom):
                for name in resolve(node):
                    yield name, top
            inner = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from walk(children, top and not inner)

    yield from walk(tree.body, True)


def import_graph() -> dict[str, dict[str, bool]]:
    """module -> {imported first-party module: True when imported at module level}."""
    files = {p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    modules = {_module_name(p): p for p in files}
    graph: dict[str, dict[str, bool]] = {}
    for mod, path in modules.items():
        edges: dict[str, bool] = {}
        for name, top in _imports(ast.parse(path.read_text()), mod, path.name == "__init__.py"):
            # `from pkg import sub` names a module when pkg.sub is one; otherwise take the longest module prefix
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != mod:
                edges[name] = edges.get(name, False) or top
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, dict[str, bool]], module_level_only: bool) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, top in graph[v].items():
            if module_level_only and not top:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(mod: str) -> int:
    return LAYER[mod.split(".")[0]]


def test_walker_sees_module_level_lazy_and_type_checking_imports():
    src = ("from typing import TYPE_CHECKING\nfrom harness.errors import BenchError\nif TYPE_CHECKING:\n    from methods.base import TrainContext\n"
           "def f():\n    from evaluators.metrics import bootstrap_ci\n")
    found = set(_imports(ast.parse(src), "harness.x", False))
    assert ("harness.errors.BenchError", True) in found
    assert ("evaluators.metrics.bootstrap_ci", False) in found
    assert not any(name.startswith("methods") for name, _ in found)  # annotation-only imports never run
    assert _cycles({"a": {"b": True}, "b": {"a": False}}, module_level_only=False) == [["a", "b"]]
    assert _cycles({"a": {"b": True}, "b": {"a": False}}, module_level_only=True) == []


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 40 and "harness.runs" in graph  # the walk found the packages
    assert _cycles(graph, module_level_only=False) == []


def test_layers_import_one_way():
    """No module imports a layer above its own, at module level or lazily, except the composition roots' lazy
    imports; in particular the harness imports neither methods nor evaluators at module level."""
    bad = []
    for mod, edges in import_graph().items():
        for target, top in edges.items():
            if _layer(target) <= _layer(mod):
                continue
            if mod in COMPOSERS and not top:
                continue
            bad.append(f"{mod} -> {target}" + (" (module level)" if top else " (in a function)"))
    assert bad == []
    # the pipeline reaches evaluators and the tracker through the registries, never by importing them
    assert not [t for t in import_graph()["harness.runs"] if t.split(".")[0] in ("methods", "evaluators", "leaderboards")]


def test_pipeline_hooks_are_registered():
    """Every evaluator capability `harness/runs.py` asks for by name (`hook("...")`) is an EVALUATION entry, so a
    renamed or misspelt hook fails here rather than after a run has trained."""
    from harness.registries import EVALUATION

    def names_asked(node: ast.AST) -> list[ast.AST]:  # hook("a") or map(hook, ("a", "b"))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            return []
        if node.func.id == "hook":
            return node.args
        if node.func.id == "map" and isinstance(node.args[0], ast.Name) and node.args[0].id == "hook":
            return node.args[1:]
        return []

    tree = ast.parse((ROOT / "harness" / "runs.py").read_text())
    asked = {c.value for node in ast.walk(tree) for arg in names_asked(node) for c in ast.walk(arg)
             if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert len(asked) >= 10  # the walk found the call sites
    assert sorted(asked - set(EVALUATION.names())) == []


def test_contracts_live_in_the_harness_and_are_re_exported():
    import evaluators.base
    import harness.api
    import methods.base

    assert methods.base.TrainContext is harness.api.TrainContext and methods.base.is_method is harness.api.is_method
    assert evaluators.base.Scorer is harness.api.Scorer and evaluators.base.is_scorer_factory is harness.api.is_scorer_factory


def test_require_pairs_names_the_method_counts_and_fix():
    from types import SimpleNamespace

    import pytest

    from harness.api import TrainContext
    from harness.errors import BenchError
    from harness.types import DatasetBundle, PreferencePair

    pair = PreferencePair("p", "a", "b")
    bundle = DatasetBundle("d", "src", reward_pairs={"train": [pair, pair]}, cost_pairs={"train": []})
    ctx = TrainContext(cfg=SimpleNamespace(dataset="toy"), data=bundle, policy_path="", out_dir=None, work_dir=None, device="cpu",
                       seed=0, make_generator=None, reward_annotator=None, cost_annotator=None, train_score_model=None)
    ctx.require_pairs("dpo-helpful", "reward")  # present: no error
    with pytest.raises(BenchError, match=r"pddpo needs reward and cost pairs in the train fold, but there are no cost pairs: "
                                         r"dataset 'toy' gave 2 reward and 0 cost preference pairs \(check data.max_train_pairs"):
        ctx.require_pairs("pddpo", "reward", "cost")
    with pytest.raises(BenchError, match="pddpo-online needs offline reward and cost pairs"):
        ctx.require_pairs("pddpo-online", "reward", "cost", what="offline")
