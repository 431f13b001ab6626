"""Shared fixtures: offline, quiet, real local data via BENCH_DATA_DIR, tiny models, per-test run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("BENCH_QUIET", "1")
if SHARED_DATA.exists():
    os.environ.setdefault("BENCH_DATA_DIR", str(SHARED_DATA))


def pytest_sessionstart(session):
    """`make mutation` forks each mutant's test run from one process that has already run every test, so a loader's
    `lru_cache` would hand the mutant the unmutated result and nothing could kill it: empty the project's caches first."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    import sys

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("harness", "methods", "evaluators", "leaderboards") and module is not None:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                    value.cache_clear()


@pytest.fixture(autouse=True)
def _private_training_store(tmp_path, monkeypatch):
    """Each test gets its own store of finished trainings (harness.training.artifacts), so a training one test finished is
    never silently reused by another (or by the next `make test`); model and scorer caches stay shared."""
    monkeypatch.setenv("BENCH_STORE", str(tmp_path / "trained-store"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA_DIR", SHARED_DATA))
    if not path.exists():
        pytest.fail(f"real data not found at {path}: set BENCH_DATA_DIR to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from harness.models import resolve_model

    return Path(resolve_model("tiny-random"))


@pytest.fixture()
def tiny_cfg(tmp_path, data_dir):
    """A tiny-profile config writing runs under tmp_path. Call with method=..., overrides=[...]."""
    from harness.config import load_config

    def make(method: str = "sft", overrides: list[str] | None = None, **fields):
        return load_config("tiny", overrides, method=method, runs_dir=str(tmp_path / "runs"), **{"data.data_dir": str(data_dir), **fields})

    return make


def pytest_configure(config):
    """Fake judges (tests/fake_judges.py): always as fake-*, and under the real names until those are registered."""
    import fake_judges

    fake_judges.register()
