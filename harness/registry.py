"""Typed, lazy registries (one per kind), modelled on lm-evaluation-harness's `lm_eval/api/registry.py`.

Built-ins are registered as "module:attr" strings so that importing the registry imports neither torch nor
vllm; the target is imported on the first `get`. Third-party packages add entries through the entry-point
groups `bench.methods`, `bench.datasets` and `bench.scorers`, loaded once. Built-ins win name clashes; a
plugin that fails to load warns and is skipped.
"""

from __future__ import annotations

import difflib
import importlib
import types
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import BenchError

T = TypeVar("T")


def import_target(target: str) -> Any:
    """Import "package.module:attr" and return the attribute."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def lazy_function(target: str) -> Callable[..., Any]:
    """A module-level stand-in for the function "package.module:name", imported on each call (a dict lookup once
    loaded). A method module binds its torch/trl helpers this way, so importing it for its config (`bench list methods
    NAME`) imports neither; the name stays a module attribute that tests can patch."""
    module_name, _, attr = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return import_target(target)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"`{module_name}.{attr}`, imported on first call."
    return call


class LazyModule(types.ModuleType):
    """A stand-in for a module, imported on the first attribute read (`torch.softmax(...)` inside a function body).
    Unlike `importlib.util.LazyLoader` it never enters `sys.modules`, so a plain `import torch` elsewhere is untouched."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_module(name: str) -> types.ModuleType:
    """`torch = lazy_module("torch")` at the top of a method file: the module imports for its config alone (`bench list
    methods NAME`, the preflight) and torch loads when training first touches it."""
    return LazyModule(name)


class Registry(Generic[T]):
    """Name -> object, with lazy "module:attr" / EntryPoint placeholders resolved on first `get`."""

    def __init__(self, kind: str, entry_point_group: str | None = None, check: Callable[[Any], bool] | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._check = check
        self._entries: dict[str, T | str | EntryPoint] = {}
        self._builtin: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._plugins: set[str] = set()  # names that came from entry points (loaded or not)
        self._plugins_loaded = entry_point_group is None

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, target: T | str, *, aliases: tuple[str, ...] = (), builtin: bool = True) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = target
        if builtin:
            self._builtin.add(name)
        for alias in aliases:
            self._aliases[alias] = name

    def decorator(self, name: str) -> Callable[[T], T]:
        """`@REGISTRY.decorator("name")` for in-process registration (tests, notebooks)."""

        def wrap(obj: T) -> T:
            self.register(name, obj, builtin=False)
            return obj

        return wrap

    def load_plugins(self) -> None:
        """Read third-party entries from the entry-point group (once). Built-ins win clashes."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                if ep.name in self._builtin:
                    warnings.warn(f"plugin {self.kind} '{ep.name}' from {ep.value} clashes with a built-in; ignored")
                continue
            self._entries[ep.name] = ep
            self._plugins.add(ep.name)

    def unload_plugins(self) -> None:
        """Forget entry-point entries, loaded or not, so the next lookup re-reads them (tests install fake
        distributions)."""
        for name in self._plugins:
            self._entries.pop(name, None)
        self._plugins.clear()
        self._plugins_loaded = self.entry_point_group is None

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._entries)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def source(self, name: str) -> str:
        """Where an entry comes from, without importing it."""
        self.load_plugins()
        target = self._entries[self._aliases.get(name, name)]
        if isinstance(target, EntryPoint):
            return f"plugin {target.value}"
        if isinstance(target, str):
            return target
        return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"

    def get(self, name: str) -> T:
        self.load_plugins()
        key = self._aliases.get(name, name)
        if key not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise BenchError(f"unknown {self.kind} '{name}': {hint}choose one of {', '.join(self.names())}")
        target = self._entries[key]
        if isinstance(target, (str, EntryPoint)):
            try:
                obj = target.load() if isinstance(target, EntryPoint) else import_target(target)
            except (Exception, SystemExit) as exc:  # a broken plugin (or its sys.exit at import) must not take the CLI down
                if isinstance(target, EntryPoint):
                    del self._entries[key]
                    dist = getattr(getattr(target, "dist", None), "name", None) or target.value.split(":")[0].split(".")[0]
                    first = (str(exc).splitlines() or [""])[0][:160]
                    raise BenchError(f"{self.kind} plugin '{name}' ({target.value}) failed to load: {type(exc).__name__}: {first} "
                                     f"(fix the plugin, or pip uninstall {dist})") from exc
                raise
            if self._check is not None and not self._check(obj):
                raise BenchError(f"{self.kind} '{name}' ({self.source(key)}) does not implement the {self.kind} interface")
            self._entries[key] = obj
            return obj
        return target

    def __contains__(self, name: str) -> bool:
        self.load_plugins()
        return self._aliases.get(name, name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
