"""`make bench`'s page writer (benchmarks/run_all.py): every ratio against its target, hand notes appended, and the
load it states is the one recorded when the scripts ran (never the load at rewrite time)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_run_all(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DOC", tmp_path / "benchmarks.md")
    monkeypatch.setattr(mod, "NOTES", tmp_path / "benchmarks-notes.md")
    return mod


def test_page_rows_targets_notes_and_recorded_load(tmp_path, monkeypatch):
    mod = load_run_all(tmp_path, monkeypatch)
    (tmp_path / "benchmarks-notes.md").write_text("## Why\n\nP4 is far from peak.")
    results = {
        "P1": {"ratio": 0.99, "ratio_margin": 0.98, "met": True, "log": ["P1 line"], "loadavg": [0.5, 9.0, 0.4], "ended": "2026-01-02 03:04"},
        "P5": {"ratio": 4.2, "met": False, "log": [], "loadavg": [1.0, 1.0, 1.0], "ended": "2026-01-02 03:01"},
        "P2": {"error": "boom"},
    }
    monkeypatch.setattr(mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(mod.os, "cpu_count", lambda: 2)
    mod.write_doc(results)
    page = (tmp_path / "benchmarks.md").read_text()
    assert "| P1 | harness DPO step ÷ raw TRL `DPOTrainer` step (margin loss) | 0.990 (0.980) | ≤ 1.05 | yes |" in page
    assert "| P5 | batched ÷ one-by-one HF generation, tokens/s | 4.20 | ≥ 5 | no |" in page
    assert "- P2: failed: boom" in page
    assert "Measured 2026-01-02 03:04 UTC" in page  # the latest script end, not now
    assert "load average 0.5 / 9.0 / 0.4" in page and "at the busiest end of a script" in page
    assert "shared and loaded" in page  # 9.0 on the 5-min average > 1.5 x 2 cores
    results["P1"]["loadavg"] = [0.5, 2.0, 0.4]
    mod.write_doc(results)
    page = (tmp_path / "benchmarks.md").read_text()
    assert "shared and loaded" not in page and "the benchmarks' own processes" in page
    assert page.rstrip().endswith("P4 is far from peak.")
    assert (tmp_path / "benchmarks.json").exists()


def test_doc_only_needs_recorded_results(tmp_path, monkeypatch):
    mod = load_run_all(tmp_path, monkeypatch)
    monkeypatch.setattr(mod, "HERE", tmp_path / "benchmarks")
    monkeypatch.setattr("sys.argv", ["run_all.py", "--doc-only"])
    with pytest.raises(SystemExit, match="run `make bench` first"):
        mod.main()
    assert not (tmp_path / "benchmarks.md").exists()
