"""tools/mutation_report.py: a run replaces the rows of the files it covered and keeps the others (with their dates),
and the shares in docs/mutation.md are computed from the merged JSON and the equivalence notes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("mutation_report", REPO / "tools" / "mutation_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_partial_run_replaces_its_files_rows_and_keeps_the_others(tmp_path, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "short_diff", lambda name: f"- old {name[-1]} / + new {name[-1]}")
    meta = tmp_path / "mutants" / "pkg" / "mod.py.meta"
    meta.parent.mkdir(parents=True)
    # 4 killed (exit 1, or a timeout), 2 survived (exit 0), 1 unreached (33), 1 not checked (None)
    codes = {"pkg.mod.x_f__mutmut_1": 1, "pkg.mod.x_f__mutmut_2": 1, "pkg.mod.x_f__mutmut_3": 0, "pkg.mod.x_f__mutmut_4": 0,
             "pkg.mod.x_g__mutmut_1": 33, "pkg.mod.x_f__mutmut_5": 36, "pkg.mod.x_f__mutmut_6": 3, "pkg.mod.x_h__mutmut_1": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    store = tmp_path / "mutation.json"
    old = {"mutants": 10, "killed": 9, "survived": 1, "no_tests": 0, "not_checked": 0, "date": "2026-01-01", "run": "an older run",
           "survivors": {"other.x_k__mutmut_9": "- a / + b"}, "unreached": {}}
    stale_row = dict(old, killed=0, survived=10, date="2020-01-01", run="stale")
    store.write_text(json.dumps({"other.py": old, "pkg/mod.py": stale_row}))
    notes = tmp_path / "notes.md"
    notes.write_text("- `pkg.mod.x_f__mutmut_3`: equivalent — hand-checked\n- `other.x_k__mutmut_9`: not equivalent, a gap\n")
    out = tmp_path / "mutation.md"
    monkeypatch.setattr(sys, "argv", ["mutation_report.py", "--root", str(tmp_path / "mutants"), "--json", str(store), "--notes", str(notes),
                                      "--out", str(out), "--runtime", "the new run", "--date", "2026-12-07"])
    tool.main()

    merged = json.loads(store.read_text())
    assert merged["other.py"] == old  # a file this run did not cover keeps its row, date and survivors
    new = merged["pkg/mod.py"]  # the covered file's stale row is replaced
    assert {k: new[k] for k in ("mutants", "killed", "survived", "no_tests", "not_checked", "date", "run")} == {
        "mutants": 8, "killed": 4, "survived": 2, "no_tests": 1, "not_checked": 1, "date": "2026-12-07", "run": "the new run"}
    assert list(new["survivors"]) == ["pkg.mod.x_f__mutmut_3", "pkg.mod.x_f__mutmut_4"] and new["unreached"] == {"g": 1}
    text = out.read_text()
    # killed / reached = 4/6; non-equivalent = 4/(6 - 1); shares round DOWN to 0.1
    assert "| `pkg/mod.py` | 8 | 4 | 2 | 1 | 1 | 1 | 66.6% | 80.0% | 2026-12-07 |" in text
    assert "| `other.py` | 10 | 9 | 1 | 0 | 0 | 0 | 90.0% | 90.0% | 2026-01-01 |" in text
    assert "| **all** | 18 | 13 | 3 | 1 | 1 | 1 | 81.2% | 86.6% | |" in text
    assert "- the new run" in text and "- an older run" in text and "stale" not in text.split("## Planted")[0]
    assert "**Incomplete: 1 of 18 mutants were not checked**" in text
    assert "`x_f__mutmut_3`: `- old 3 / + new 3` — equivalent — hand-checked" in text
    assert "- `pkg/mod.py`: g (1)" in text


def test_function_names_of_mutants():
    tool = _tool()
    assert tool.function_name("pkg.mod.x_f__mutmut_3") == "f"
    assert tool.function_name("pkg.mod.x_x_ray__mutmut_1") == "x_ray"
    assert tool.function_name("pkg.mod.x\u01c1Xbox\u01c1fit__mutmut_12") == "Xbox.fit"
