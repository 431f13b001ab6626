"""Content-addressed reuse (harness.training.artifacts): a finished training is found by what decides it, never by run or
method name; corrupt entries are discarded; two methods sharing stage 1 train it once and the record says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness import runs
from harness.training.artifacts import entry_path, lookup, materialise, publish
from harness.config import load_config
from harness.training.dpo import read_train_record, train_dpo, train_key
from harness.monitor import StageMonitor, phase
from harness.types import PreferencePair

PAIRS = [PreferencePair(prompt=f"Where do I keep rice, case {i}?", chosen="In a dry sealed jar.", rejected="Outside in the rain.")
         for i in range(4)]


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w" * 1000)
    (src / "config.json").write_text("{}")
    return src


def test_store_publishes_links_and_discards_corrupt_entries(tmp_path) -> None:
    path = publish("demo", "k1", _folder(tmp_path), {"run_name": "first"})
    assert lookup("demo", "k1") == path and lookup("demo", "k2") is None
    dst = tmp_path / "run" / "model"
    how = materialise(path, dst)
    assert (dst / "config.json").read_text() == "{}" and "bench_store.json" not in os.listdir(dst)
    if how != "copy":  # same file system: the weights share the store's inode, costing no disk
        assert os.path.samefile(dst / "model.safetensors", path / "model.safetensors")
    (path / "model.safetensors").write_bytes(b"w" * 10)  # truncated behind the store's back
    assert lookup("demo", "k1") is None and not entry_path("demo", "k1").exists()


def test_key_ignores_run_name_but_not_inputs() -> None:
    cfg = load_config("tiny", method="dpo-helpful")
    base = train_key(PAIRS, None, "init", "init", 0.1, cfg)
    assert base == train_key(list(PAIRS), None, "init", "init", 0.1, load_config("tiny", method="pddpo"))
    assert base != train_key(PAIRS[:3], None, "init", "init", 0.1, cfg)
    assert base != train_key(PAIRS, [0.0] * 4, "init", "init", 0.1, cfg)
    assert base != train_key(PAIRS, None, "init", "init", 0.05, cfg)
    assert base != train_key(PAIRS, None, "init", "other-ref", 0.1, cfg)
    assert base != train_key(PAIRS, None, "init", "init", 0.1, load_config("tiny", method="dpo-helpful", seed=1))
    assert train_key(PAIRS, None, None, None, 0.1, cfg) is None  # in-memory models: never reused


def test_train_dpo_reuses_across_run_names_and_records_it(tiny_model_path, tmp_path) -> None:
    cfg = load_config("tiny", method="dpo-helpful")
    with StageMonitor() as first:
        a = train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "a", cfg=cfg, device="cpu",
                      run_name="method-one", ref_cache_dir=tmp_path / "ref")
    assert "reused" not in first.record and "method-one/train_steps" in first.record["phases"]
    with StageMonitor() as second:
        b = train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "b", cfg=cfg, device="cpu",
                      run_name="method-two", ref_cache_dir=tmp_path / "ref")
    rec_a, rec_b = read_train_record(a), read_train_record(b)
    (event,) = second.record["reused"]
    assert event["kind"] == "dpo" and event["trained_as"] == "method-one" and event["name"] == "method-two"
    assert rec_b["reused_from"] == event["source"] and rec_b["trained_as"] == "method-one" and rec_a["reused_from"] is None
    assert rec_b["train_loss"] == rec_a["train_loss"] and rec_b["key"] == rec_a["key"]
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temp folders left


def test_phases_nest_and_count() -> None:
    with StageMonitor(interval=0.01) as mon:
        for _ in range(2):
            with phase("outer"):
                with phase("inner"):
                    blob = bytearray(64 << 20)  # noqa: F841 - 64 MB held inside the inner phase
                    del blob
    ph = mon.record["phases"]
    assert ph["outer"]["count"] == 2 and ph["inner"]["count"] == 2
    assert ph["outer"]["peak_rss_mb"] >= ph["inner"]["peak_rss_mb"] > 0 and mon.record["peak_rss_mb"] >= ph["outer"]["peak_rss_mb"]


def test_two_methods_share_stage_one_on_the_tiny_profile(tiny_cfg) -> None:
    """dpo-helpful trains π_r̂; PD-DPO's stage 1 is the same training, so it is reused, and its record says from where."""
    helpful = runs.run(tiny_cfg("dpo-helpful"))
    assert not [e for e in helpful["stages"]["train"].get("reused", []) if e["kind"] == "dpo"]  # ref log-probs may hit
    pd = runs.run(tiny_cfg("pddpo", ["methods.pddpo.num_iterations=1"]))
    dpo_events = [e for e in pd["stages"]["train"].get("reused", []) if e["kind"] == "dpo"]
    assert [(e["name"], e["trained_as"]) for e in dpo_events] == [("pddpo-stage1", "dpo-helpful")]
    phases = pd["stages"]["train"]["phases"]
    assert "pddpo-primal-1/train_steps" in phases and "pddpo-stage1/train_steps" not in phases
    assert json.loads(json.dumps(pd["stages"]))  # the record stays plain JSON
