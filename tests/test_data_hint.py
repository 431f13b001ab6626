"""Without the Makefile (no BENCH_DATA_DIR) and with the hub unreachable: the local hub cache is read, or one line names
--data-dir / BENCH_DATA_DIR at once, never after the hub client's retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harness.datasets import hub
from harness.errors import BenchError
from hub_cache import add_snapshot

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, so the connection is refused at once (no network needed)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def unreachable_hub(tmp_path, monkeypatch):
    """This process, online by its settings, with the hub endpoint unreachable and an empty hub cache under tmp_path."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets, "load_dataset", _fail_if_online(datasets.load_dataset))
    hub.hub_reachable.cache_clear()
    yield tmp_path / "hub"
    hub.hub_reachable.cache_clear()


def _fail_if_online(load):
    def guarded(path, *args, **kwargs):
        assert os.path.isdir(path), f"asked the hub for {path}"  # only a cached snapshot folder may be read
        return load(path, *args, **kwargs)

    return guarded


def test_an_uncached_dataset_fails_in_one_line_naming_the_fix_before_any_retry(unreachable_hub):
    start = time.perf_counter()
    with pytest.raises(BenchError) as err:
        hub.load_split("org/not-cached", COMMIT, "train")
    assert time.perf_counter() - start < 5  # the client's retries took 24 s
    message = str(err.value)
    assert "\n" not in message and "unreachable" in message and "--data-dir" in message and "BENCH_DATA_DIR" in message


def test_a_cached_dataset_is_read_with_a_one_line_hint(unreachable_hub, caplog):
    rows = [{"prompt": "p1", "label": 1}, {"prompt": "p2", "label": 0}]
    add_snapshot(unreachable_hub, "org/cached", COMMIT, {"data/train.jsonl": "".join(json.dumps(r) + "\n" for r in rows).encode()})
    with caplog.at_level("WARNING", logger="bench"):
        split = hub.load_split("org/cached", COMMIT, "train")
    assert [dict(r) for r in split] == rows
    [hint] = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert "--data-dir" in hint and "BENCH_DATA_DIR" in hint


def test_bench_data_show_without_a_data_dir_is_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "BENCH_DATA_DIR", "HF_HUB_CACHE", "HF_DATASETS_CACHE")}
    env.update(HF_ENDPOINT=CLOSED, HF_HOME=str(tmp_path / "hf-home"))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "data", "show", "pku-saferlhf"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--data-dir" in lines[0] and "BENCH_DATA_DIR" in lines[0] and "Retrying" not in out.stderr, out.stderr
