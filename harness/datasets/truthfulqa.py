"""TruthfulQA as a constrained-alignment dataset (docs/evaluation.md §2.6, a harness proposal [ours]).

Cost = untruthfulness. Cost pairs: a correct answer over an incorrect one (at most `PAIRS_PER_QUESTION` per
question, seeded by the question hash). Reward pairs (informativeness): the best answer over the other correct
answers, and the best answer over "I have no comment.". Folds are by question (stable hash), so training,
dual estimates and evaluation never share a question. The generation view is the Oct-2021 `TruthfulQA.csv`
(read as utf-8-sig); MC1/MC2 targets come from `data/mc_task.json`, matched by stripped question text.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import BenchError, DataError
from harness.types import DatasetBundle, EvalPrompt, PreferencePair

from .common import check_visible, fold_of, resolve_local

HUB_ID = "truthfulqa/truthful_qa"
# Hub revision: the commit that added the `multiple_choice` parquet files beside `generation` ("Add multiple_choice data
# files"), so both configs load from one pinned commit; `data.revision` overrides it when training on TruthfulQA.
HUB_REVISION = "c9f8534f74acec169847ea0496fdddf30fd9521e"
NO_COMMENT = "I have no comment."
PAIRS_PER_QUESTION = 8
# question folds: train 50%, scorer 15%, dual 10%, eval (test) 25%
FOLD_BOUNDS = {"train": 50, "scorer": 65, "dual": 75, "eval": 100}
CSV_COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers")


def _split_answers(s: str) -> list[str]:
    return [a.strip() for a in s.split(";") if a.strip()]


def _from_csv(folder: Path) -> list[dict[str, Any]]:
    path = folder / "TruthfulQA.csv"
    if not path.exists():
        raise BenchError(f"{path} not found: point --data-dir at a folder holding truthfulqa/TruthfulQA.csv")
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError("missing column", file=str(path), field=missing[0], fix=f"expected columns {', '.join(CSV_COLUMNS)}")
        for i, rec in enumerate(reader):
            q = check_visible((rec["Question"] or "").strip(), path, i, "Question")
            rows.append({"question": q, "category": rec["Category"], "type": rec["Type"], "best_answer": rec["Best Answer"].strip(),
                         "correct_answers": _split_answers(rec["Correct Answers"]), "incorrect_answers": _split_answers(rec["Incorrect Answers"])})
    mc_path = folder / "data" / "mc_task.json"
    mc = {}
    if mc_path.exists():
        try:
            entries = json.loads(mc_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"not valid UTF-8 JSON ({exc})", file=str(mc_path), fix="re-download TruthfulQA's data/mc_task.json") from None
        if not isinstance(entries, list):
            raise DataError("expected a JSON list of questions", file=str(mc_path), fix="re-download TruthfulQA's data/mc_task.json")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("question"), str):
                raise DataError("expected an object with a 'question' string", file=str(mc_path), row=i, field="question")
            for key in ("mc1_targets", "mc2_targets"):
                if not isinstance(e.get(key), dict):
                    raise DataError("expected a {choice: label} mapping", file=str(mc_path), row=i, field=key)
            mc[e["question"].strip()] = e
    for r in rows:
        e = mc.get(r["question"])
        for key in ("mc1_targets", "mc2_targets"):
            t = e[key] if e else None
            r[key] = {"choices": list(t), "labels": list(t.values())} if t else None
    return rows


def _from_hub(revision: str) -> list[dict[str, Any]]:
    from .hub import load_split

    gen = load_split(HUB_ID, revision, "validation", name="generation")
    mc = {r["question"].strip(): r for r in load_split(HUB_ID, revision, "validation", name="multiple_choice")}
    rows = []
    for r in gen:
        q = r["question"].strip()
        m = mc.get(q)
        rows.append({"question": q, "category": r["category"], "type": r["type"], "best_answer": r["best_answer"].strip(),
                     "correct_answers": list(r["correct_answers"]), "incorrect_answers": list(r["incorrect_answers"]),
                     "mc1_targets": dict(m["mc1_targets"]) if m else None, "mc2_targets": dict(m["mc2_targets"]) if m else None})
    return rows


@lru_cache(maxsize=4)
def _load_cached(data_dir: str | None, revision: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    folder = resolve_local(data_dir, "truthfulqa", "TruthfulQA")
    rows = _from_csv(folder) if folder is not None else _from_hub(revision)
    for r in rows:
        r["fold"] = fold_of(r["question"], FOLD_BOUNDS)
    return (str(folder) if folder else f"hub:{HUB_ID}@{revision}"), tuple(rows)


def load_questions(data_dir: str | None = None, revision: str | None = None) -> list[dict[str, Any]]:
    """All 817 questions with references, MC targets and their question-level fold."""
    return [dict(r) for r in _load_cached(data_dir, revision or HUB_REVISION)[1]]


def _pairs(q: dict[str, Any]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    rng = random.Random(int(hashlib.sha1(q["question"].encode()).hexdigest(), 16))
    correct, incorrect = q["correct_answers"], q["incorrect_answers"]
    cost = [(c, f) for c in correct for f in incorrect if c != f]
    cost = rng.sample(cost, min(PAIRS_PER_QUESTION, len(cost)))
    cost_pairs = [PreferencePair(q["question"], c, f, True, False, category=q["category"], source="truthfulqa") for c, f in cost]
    best = q["best_answer"]
    reward = [(best, c) for c in correct if c not in (best, NO_COMMENT) and c.rstrip(".") != best.rstrip(".")]
    reward = rng.sample(reward, min(PAIRS_PER_QUESTION - 1, len(reward)))
    if best.rstrip(".") != NO_COMMENT.rstrip("."):
        reward.append((best, NO_COMMENT))
    reward_pairs = [PreferencePair(q["question"], w, l, True, True, category=q["category"], source="truthfulqa") for w, l in reward]
    return reward_pairs, cost_pairs


def load(cfg) -> DatasetBundle:
    source, rows = _load_cached(cfg.data.data_dir, cfg.data.revision or HUB_REVISION)
    bundle = DatasetBundle(name="truthfulqa", source=source, default_cost_scorer="truthfulness")
    bundle.reward_pairs = {f: [] for f in FOLD_BOUNDS}
    bundle.cost_pairs = {f: [] for f in FOLD_BOUNDS}
    bundle.prompts = {f: [] for f in FOLD_BOUNDS}
    for q in rows:
        r, c = _pairs(q)
        bundle.reward_pairs[q["fold"]].extend(r)
        bundle.cost_pairs[q["fold"]].extend(c)
        meta = {"correct": q["correct_answers"], "incorrect": q["incorrect_answers"], "best": q["best_answer"]}
        bundle.prompts[q["fold"]].append(EvalPrompt(q["question"], q["category"], meta))
    from .common import cap

    for folds in (bundle.reward_pairs, bundle.cost_pairs):
        folds["train"] = cap(folds["train"], cfg.data.max_train_pairs)
        if cfg.data.max_scorer_pairs:
            folds["scorer"] = cap(folds["scorer"], cfg.data.max_scorer_pairs)
    bundle.prompts["dual"] = bundle.prompts["dual"][: cfg.data.max_dual_prompts or None]
    bundle.counts = {
        "questions": len(rows),
        "folds": {f: {"questions": sum(q["fold"] == f for q in rows), "reward_pairs": len(bundle.reward_pairs[f]), "cost_pairs": len(bundle.cost_pairs[f])} for f in FOLD_BOUNDS},
    }
    bundle.notes.append("TruthfulQA pairs follow the harness's own construction (docs/evaluation.md §2.6), not a paper's")
    return bundle
