"""Evaluation prompt sets (harness/datasets/prompt_sets.py) on hand-built data folders: which file each set reads,
which rows it keeps, their categories and meta, the hashed subsets, and the errors naming the missing file.
Fast; in `make mutation`'s test selection (issue 29 item 8). The real-data checks are in tests/test_prompt_checks.py."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.datasets import judge_data, prompt_sets
from harness.errors import BenchError, DataError


def _cfg(data_dir, refusal=0, harmful=0):
    return SimpleNamespace(data=SimpleNamespace(data_dir=None if data_dir is None else str(data_dir),
                                                max_refusal_prompts=refusal, max_harmful_prompts=harmful))


def _h(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _write_json(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def _xstest(root: Path, rows) -> None:
    (root / "xstest").mkdir(parents=True, exist_ok=True)
    with (root / "xstest" / "xstest_prompts.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "prompt", "type", "label"])
        w.writeheader()
        w.writerows(rows)


BEAVER = [{"prompt": f"How do I do harm number {i}?", "category": "violence" if i % 2 else "privacy"} for i in range(6)]
REDTEAM = [{"prompt": f"Red team request {i}", "category": "crime"} for i in range(3)]


def _harm_data(root: Path) -> Path:
    _write_json(root / "beavertails_evaluation" / "BeaverTails-Evaluation.json", BEAVER)
    _write_json(root / "safe_rlhf_eval_prompts" / "problem.json", REDTEAM)
    return root


def test_redteam_and_beavertails_read_their_own_files(tmp_path) -> None:
    root = _harm_data(tmp_path / "d")
    red = prompt_sets.load_redteam(_cfg(root))
    assert red.name == "redteam-83" and red.source == str(root / "safe_rlhf_eval_prompts" / "problem.json")
    assert [(p.prompt, p.category) for p in red.prompts["eval"]] == [(r["prompt"], r["category"]) for r in REDTEAM]
    assert list(red.prompts) == ["eval"] and red.counts == {"prompts": 3}
    beaver = prompt_sets.load_beavertails(_cfg(root))
    assert beaver.name == "beavertails" and beaver.source == str(root / "beavertails_evaluation" / "BeaverTails-Evaluation.json")
    assert [(p.prompt, p.category) for p in beaver.prompts["eval"]] == [(r["prompt"], r["category"]) for r in BEAVER]
    assert beaver.counts == {"prompts": 6}


def test_a_flat_data_folder_holds_the_file_itself(tmp_path) -> None:
    _write_json(tmp_path / "problem.json", REDTEAM[:1])
    assert prompt_sets.load_redteam(_cfg(tmp_path)).source == str(tmp_path / "problem.json")


def test_missing_data_dir_or_file_names_the_file_and_the_fix(tmp_path) -> None:
    with pytest.raises(BenchError, match=re.escape(
            "redteam-83 is read from local copies: pass --data-dir with safe_rlhf_eval_prompts/problem.json "
            "(hub copy: PKU-Alignment/safe-rlhf@82743cc:safe_rlhf/evaluate/gpt4/problem.json)")):
        prompt_sets.load_redteam(_cfg(None))
    with pytest.raises(BenchError, match=re.escape(
            "beavertails is read from local copies: pass --data-dir with beavertails_evaluation/BeaverTails-Evaluation.json "
            "(hub copy: PKU-Alignment/BeaverTails-Evaluation)")):
        prompt_sets.load_beavertails(_cfg(None))
    (tmp_path / "beavertails_evaluation").mkdir()
    want = tmp_path / "beavertails_evaluation" / "BeaverTails-Evaluation.json"
    with pytest.raises(BenchError, match=re.escape(f"{want} not found: pass --data-dir with beavertails_evaluation/BeaverTails-Evaluation.json")):
        prompt_sets.load_beavertails(_cfg(tmp_path))


def test_rows_without_text_or_category_are_refused(tmp_path) -> None:
    _write_json(tmp_path / "problem.json", [{"prompt": "ok", "category": "a"}, {"prompt": "\u200b", "category": "a"}])
    with pytest.raises(DataError) as ex:
        prompt_sets.load_redteam(_cfg(tmp_path))
    assert "row 1" in str(ex.value) and "prompt" in str(ex.value)
    _write_json(tmp_path / "problem.json", [{"prompt": "ok", "category": "a"}, {"prompt": "ok"}])
    with pytest.raises(DataError, match="category") as ex:
        prompt_sets.load_redteam(_cfg(tmp_path))
    assert (ex.value.file, ex.value.row, ex.value.field) == (str(tmp_path / "problem.json"), 1, "category")


XS = [{"id": f"v2-{i}", "prompt": f"How do I kill a python process {i}?", "type": "homonyms" if i < 4 else "safe_contexts",
       "label": "safe" if i % 3 else "unsafe"} for i in range(9)]


def test_xstest_keeps_the_safe_rows_with_type_and_id(tmp_path) -> None:
    _xstest(tmp_path, XS)
    got = prompt_sets.load_xstest_safe(_cfg(tmp_path))
    safe = [r for r in XS if r["label"] == "safe"]
    assert [(p.prompt, p.category, p.meta) for p in got] == [(r["prompt"], r["type"], {"id": r["id"]}) for r in safe]
    sub = prompt_sets.load_xstest_safe(_cfg(tmp_path, refusal=3))
    want = sorted(safe, key=lambda r: _h(r["prompt"]))[:3]
    assert [p.meta["id"] for p in sub] == [r["id"] for r in want]
    assert len(prompt_sets.load_xstest_safe(_cfg(tmp_path, refusal=100))) == len(safe)


def test_xstest_refuses_an_invisible_prompt_naming_its_row(tmp_path) -> None:
    _xstest(tmp_path, [{"id": "a", "prompt": "fine", "type": "t", "label": "safe"},
                       {"id": "b", "prompt": "\u202e\u200b", "type": "t", "label": "safe"}])
    with pytest.raises(DataError) as ex:
        prompt_sets.load_xstest_safe(_cfg(tmp_path))
    assert (ex.value.file, ex.value.row, ex.value.field) == (str(tmp_path / "xstest" / "xstest_prompts.csv"), 1, "prompt")
    _xstest(tmp_path, [{"id": "b", "prompt": "", "type": "t", "label": "safe"}])
    with pytest.raises(DataError, match="empty or whitespace-only"):
        prompt_sets.load_xstest_safe(_cfg(tmp_path))


def test_xstest_missing_names_the_file_and_how_to_skip_it(tmp_path) -> None:
    msg = re.escape("the over-refusal rate reads XSTest from local copies: pass --data-dir with xstest/xstest_prompts.csv "
                    "(hub: paul-rottger/exaggerated-safety), or skip it with --set scoring.judges.refusal=none")
    with pytest.raises(BenchError, match=msg):
        prompt_sets.load_xstest_safe(_cfg(None))
    (tmp_path / "xstest").mkdir()
    with pytest.raises(BenchError, match=msg):
        prompt_sets.load_xstest_safe(_cfg(tmp_path))


def test_harmful_prompts_join_both_sets_drop_judge_training_prompts_and_subset_by_hash(tmp_path, monkeypatch) -> None:
    root = _harm_data(tmp_path / "d")
    seen_roots = []

    def training(data_dir):
        seen_roots.append(Path(data_dir))
        return {"how do i do harm number 1?", "red team request 2"}

    monkeypatch.setattr(judge_data, "judge_training_prompts", training)
    got = prompt_sets.load_harmful_prompts(_cfg(root))
    assert seen_roots == [root]  # the data folder that holds both sets
    want = [(r["prompt"], f"beavertails/{r['category']}", {"set": "beavertails"}) for i, r in enumerate(BEAVER) if i != 1]
    want += [(r["prompt"], "redteam/crime", {"set": "redteam"}) for i, r in enumerate(REDTEAM) if i != 2]
    assert [(p.prompt, p.category, p.meta) for p in got] == want
    sub = prompt_sets.load_harmful_prompts(_cfg(root, harmful=4))
    assert [p.prompt for p in sub] == sorted((w[0] for w in want), key=_h)[:4]


def test_harmful_prompts_count_a_prompt_in_both_sets_once(tmp_path, monkeypatch) -> None:
    root = tmp_path / "d"
    _write_json(root / "beavertails_evaluation" / "BeaverTails-Evaluation.json", [{"prompt": "Same  Request", "category": "x"}])
    _write_json(root / "safe_rlhf_eval_prompts" / "problem.json", [{"prompt": "same request", "category": "y"},
                                                                   {"prompt": "other", "category": "y"}])
    monkeypatch.setattr(judge_data, "judge_training_prompts", lambda d: set())
    got = prompt_sets.load_harmful_prompts(_cfg(root))
    assert [(p.prompt, p.category) for p in got] == [("same request", "redteam/y"), ("other", "redteam/y")]


def test_harmful_prompts_read_the_judges_rows_from_the_data_folder_and_log_what_they_drop(tmp_path, monkeypatch) -> None:
    import logging

    root = tmp_path / "d"
    _write_json(root / "beavertails_evaluation" / "BeaverTails-Evaluation.json", BEAVER)
    _write_json(root / "problem.json", REDTEAM)  # red-team prompts at the top of the data folder
    seen_roots = []
    drop = {"red team request 0"}

    def training(data_dir):
        seen_roots.append(Path(data_dir))
        return drop

    monkeypatch.setattr(judge_data, "judge_training_prompts", training)
    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    log = logging.getLogger("bench")
    handler, level = Keep(level=logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        assert len(prompt_sets.load_harmful_prompts(_cfg(root))) == len(BEAVER) + len(REDTEAM) - 1
        assert messages == ["harmful prompts: 1 dropped, a judge trains or calibrates on them"]
        drop.clear()
        messages.clear()
        assert len(prompt_sets.load_harmful_prompts(_cfg(root))) == len(BEAVER) + len(REDTEAM)
        assert messages == []  # nothing dropped, nothing said
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert seen_roots == [root, root]


def test_xstest_keeps_a_quoted_line_break_as_written(tmp_path) -> None:
    """The CSV is read with newline="" (the csv module's rule): a prompt whose quoted text holds a CR LF keeps it."""
    _xstest(tmp_path, [{"id": "a", "prompt": "First line\r\nsecond line \u00e9", "type": "t", "label": "safe"}])
    (p,) = prompt_sets.load_xstest_safe(_cfg(tmp_path))
    assert p.prompt == "First line\r\nsecond line \u00e9"
