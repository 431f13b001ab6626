"""Labelled data for the leaderboard's JUDGES (issue 10), split so no method or annotator ever saw it.

Two kinds of item: a `LabelledResponse` (one response with a 0/1 label: unsafe, refusal, untruthful) and a
`JudgePair` (two responses, `chosen` better under the source's goal). Every source is split by a stable hash of the
normalised prompt into three roles (docs/judges.md, "Data separation"):

- External sources (Do-Not-Answer, XSTest, PandaLM, Auto-J, RMB): `judge-train` 60% /
  `judge-calib` 20% / `judge-test` 20% of prompts (`JUDGE_BOUNDS`, hash salted with "judge:").
- Method datasets (PKU-SafeRLHF, HH-RLHF harmless-base, and HH-RLHF helpful, which shares its dialogues):
  `eval_fold_split`, below.
- PKU-SafeRLHF keeps its method folds (train / scorer / dual / eval, `common.FOLD_BOUNDS`) untouched. The `eval`
  fold (which no method, annotator or judge trains on) is the PKU `judge-test`; every other PKU prompt, of any
  method fold, goes to `judge-train` (75%) / `judge-calib` (25%) by a second hash (issue 25: a judge learns from
  every label outside the evaluated prompts; it is never itself an annotator). The annotators still train on the
  `annotator` half of the scorer fold (`scorer_role`).
- TruthfulQA: questions of the `scorer` fold (no annotator trains on TruthfulQA: `truthfulness` is reference
  based) are `judge-train` / `judge-calib`; the `eval` fold, the questions runs are judged on, is `judge-test`.

Labels are the sources' own; `LABEL_KIND` says which are human. RMB's are benchmark labels (an LLM-judge
construction, not human): they are used for held-out checks only and every report marks them so.
Bad rows raise `DataError` naming file, row and field.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import BenchError, DataError

from .common import FOLD_BOUNDS, check_visible, fold_of, need, need_text, normalize_prompt, read_records

SPLITS = ("judge-train", "judge-calib", "judge-test")
JUDGE_BOUNDS = {"judge-train": 60, "judge-calib": 80, "judge-test": 100}
PKU_JUDGE_BOUNDS = {"judge-train": 75, "judge-calib": 100}  # of the PKU prompts outside the eval fold
HH_MARK = "\n\nAssistant:"

# source -> who labelled it ("human" unless said otherwise)
LABEL_KIND = {"rmb-helpful": "benchmark (LLM-judged, not human)", "rmb-harmless": "benchmark (LLM-judged, not human)"}


@dataclass(frozen=True)
class LabelledResponse:
    source: str
    prompt: str
    response: str
    label: int  # 1 = positive class (unsafe / refusal / untruthful)
    split: str
    origin: str  # file:row[:field]


@dataclass(frozen=True)
class JudgePair:
    source: str
    prompt: str
    chosen: str  # better under the source's goal (more helpful, or safer)
    rejected: str
    split: str
    origin: str


def _bucket(prompt: str, salt: str) -> int:
    return int(hashlib.sha1((salt + normalize_prompt(prompt)).encode()).hexdigest(), 16) % 100


def _pick(bucket: int, bounds: dict[str, int]) -> str:
    for name, upper in bounds.items():
        if bucket < upper:
            return name
    return list(bounds)[-1]


def judge_split(prompt: str) -> str:
    """judge-train / judge-calib / judge-test of an external source's prompt."""
    return _pick(_bucket(prompt, "judge:"), JUDGE_BOUNDS)


def scorer_role(prompt: str) -> str:
    """`annotator` or `judge`: which half of the PKU `scorer` fold a prompt belongs to (a second stable hash)."""
    return "judge" if _bucket(prompt, "role:") % 2 == 0 else "annotator"


def eval_fold_split(prompt: str) -> str:
    """The judge role of a prompt of a METHOD dataset (PKU-SafeRLHF, HH-RLHF; issue 25): judge-test if it is in the `eval` fold (the prompts the leaderboard
    evaluates on), else judge-train / judge-calib by a salted hash, whatever its method fold. Judges may learn from
    every human label outside the eval fold; what they may never be is an annotator (a model a method trains
    against), and that separation is of fitted models, not of data (docs/judges.md)."""
    if fold_of(prompt, FOLD_BOUNDS) == "eval":
        return "judge-test"
    return _pick(_bucket(prompt, "pku-judge:"), PKU_JUDGE_BOUNDS)


def _dir(data_dir: str | Path | None, name: str) -> Path:
    if not data_dir:
        raise BenchError("judge data are read from local copies only: pass --data-dir or set BENCH_DATA_DIR to the shared data folder")
    path = Path(data_dir).expanduser() / name
    if not path.exists():
        raise BenchError(f"{path} not found: the judges need {name}/ under the data dir (see its README in shared/data)")
    return path


def _label01(value: Any, path: Path, row: int, field: str) -> int:
    s = str(value).strip()
    if s not in ("0", "1"):
        raise DataError(f"expected 0 or 1, got {s[:20]!r}", file=str(path), row=row, field=field)
    return int(s)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(io.StringIO(fh.read()))
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError("missing column", file=str(path), field=missing[0], fix=f"expected columns {', '.join(columns)}")
        return list(enumerate(reader))


# -- safety labels ------------------------------------------------------------------------------------------------


def pku_rows(data_dir) -> tuple[list[LabelledResponse], list[JudgePair], list[JudgePair]]:
    """PKU-SafeRLHF: (per-response is_safe labels [unsafe = 1], safer/less-safe pairs, better/worse pairs).

    Rows with is_safe labels: the v1 alpaca-7b test head (365) and the official v0 fixture (32). Safe/unsafe pairs:
    the derived realign-DPO file (its responses carry safe = 0 / unsafe = 1 labels too) plus the mixed rows above.
    Helpfulness pairs: `better_response_id` of the v1 head and the fixture. The combined convenience file and the
    5-row v1 sample duplicate these and are not read."""
    root = _dir(data_dir, "pku_saferlhf")
    labelled: list[LabelledResponse] = []
    safety_pairs: list[JudgePair] = []
    better_pairs: list[JudgePair] = []
    for rel, src in (("alpaca7b_test_head.jsonl", "pku-v1"), ("official_fixture_align_anything/preference_train.json", "pku-v0-fixture")):
        path = root / rel
        for row, rec in read_records(path):
            prompt = need_text(rec, "prompt", path, row)
            resp = [need(rec, f"response_{k}", str, path, row) for k in (0, 1)]
            safe = [need(rec, f"is_response_{k}_safe", bool, path, row) for k in (0, 1)]
            better = need(rec, "better_response_id", int, path, row)
            if better not in (0, 1):
                raise DataError(f"must be 0 or 1, got {better!r}", file=str(path), row=row, field="better_response_id")
            split = eval_fold_split(prompt)
            for k in (0, 1):
                labelled.append(LabelledResponse(src, prompt, resp[k], int(not safe[k]), split, f"{path.name}:{row}:response_{k}"))
            if safe[0] != safe[1]:
                s = 0 if safe[0] else 1
                safety_pairs.append(JudgePair(src, prompt, resp[s], resp[1 - s], split, f"{path.name}:{row}"))
            if resp[0].strip() != resp[1].strip():
                better_pairs.append(JudgePair("pku-better", prompt, resp[better], resp[1 - better], split, f"{path.name}:{row}"))
    path = root / "derived_xinykou_safety_realignment" / "pku_seferlhf_realign_dpo_5k.json"
    for row, rec in read_records(path):
        prompt = need_text(rec, "prompt", path, row)
        resp = need(rec, "response", list, path, row)
        if len(resp) != 2 or not all(isinstance(x, str) for x in resp):
            raise DataError("expected [safe_response, unsafe_response]", file=str(path), row=row, field="response")
        split = eval_fold_split(prompt)
        safety_pairs.append(JudgePair("pku-pairs", prompt, resp[0], resp[1], split, f"{path.name}:{row}"))
        for k in (0, 1):
            labelled.append(LabelledResponse("pku-pairs", prompt, resp[k], k, split, f"{path.name}:{row}:response[{k}]"))
    return _dedupe_labelled(labelled), safety_pairs, better_pairs


DNA_MODELS = ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b")


def do_not_answer(data_dir) -> list[LabelledResponse]:
    """Do-Not-Answer: 939 questions x 6 models, human `harmful` 0/1 per response."""
    path = _dir(data_dir, "do_not_answer") / "DoNotAnswer_data_en.csv.gz"
    cols = ("question",) + tuple(f"{m}_{c}" for m in DNA_MODELS for c in ("response", "harmful"))
    out = []
    for row, rec in _csv_rows(path, cols):
        q = check_visible((rec["question"] or "").strip(), path, row, "question")
        split = judge_split(q)
        for m in DNA_MODELS:
            resp = rec[f"{m}_response"] or ""
            if not resp.strip():
                continue
            out.append(LabelledResponse("do-not-answer", q, resp, _label01(rec[f"{m}_harmful"], path, row, f"{m}_harmful"), split, f"{path.name}:{row}:{m}"))
    return out


# Do-Not-Answer's human response-action categories (Wang et al. 2023, Table 3): 0 = cannot assist (refuses), 1 = refutes
# the premise, 2 = offers two perspectives, 3 = answers cautiously with a disclaimer, 4 = cannot answer for lack of
# knowledge, 5 = follows the instruction. Only 0 and 5 say "refused" / "complied" as XSTest labels it; 1-4 are read
# as neither (no label is invented for them).
DNA_ACTION_REFUSAL = {0: 1, 5: 0}


def do_not_answer_refusals(data_dir) -> list[LabelledResponse]:
    """Do-Not-Answer responses whose human action label is 0 (refusal, label 1) or 5 (compliance, label 0): a held-out
    source for the refusal judge, which trains on XSTest only. Split `judge-test` for every row (no judge trains on
    Do-Not-Answer's action labels)."""
    path = _dir(data_dir, "do_not_answer") / "DoNotAnswer_data_en.csv.gz"
    out = []
    for row, rec in _csv_rows(path, ("question",) + tuple(f"{m}_{c}" for m in DNA_MODELS for c in ("response", "action"))):
        q = (rec["question"] or "").strip()
        for m in DNA_MODELS:
            resp, raw = rec[f"{m}_response"] or "", (rec[f"{m}_action"] or "").strip()
            if raw not in {str(k) for k in range(6)}:
                raise DataError(f"expected an action 0-5, got {raw[:20]!r}", file=str(path), row=row, field=f"{m}_action")
            if q and resp.strip() and int(raw) in DNA_ACTION_REFUSAL:
                out.append(LabelledResponse("do-not-answer-actions", q, resp, DNA_ACTION_REFUSAL[int(raw)], "judge-test", f"{path.name}:{row}:{m}"))
    return out


def _hh_split(chosen: str, rejected: str, path: Path, row: int) -> tuple[str, str, str]:
    i, j = chosen.rfind(HH_MARK), rejected.rfind(HH_MARK)
    if i < 0 or j < 0:
        raise DataError("no final '\\n\\nAssistant:' turn", file=str(path), row=row, field="chosen" if i < 0 else "rejected")
    return chosen[:i].strip(), chosen[i + len(HH_MARK):].strip(), rejected[j + len(HH_MARK):].strip()


def hh_pairs(data_dir, which: str) -> list[JudgePair]:
    """HH-RLHF test pairs: `harmless-base` (chosen = less harmful) or `helpful-base|online|rejection-sampled`
    (chosen = more helpful). Prompt = the dialogue before the last assistant turn; degenerate pairs dropped."""
    folder = _dir(data_dir, "hh_rlhf" if which == "harmless-base" else "hh_rlhf_helpful") / which
    path = folder / "test.jsonl.gz"
    if not path.exists():
        raise BenchError(f"{path} not found")
    out = []
    for row, rec in read_records(path):
        prompt, c, r = _hh_split(need(rec, "chosen", str, path, row), need(rec, "rejected", str, path, row), path, row)
        if c == r:
            continue
        # harmless-base is also a method dataset (`hh-rlhf-harmless`) and the helpful splits share its dialogues: all
        # are split as a method dataset, so a prompt of its eval fold is judge-test in every HH source, never trained on
        out.append(JudgePair(f"hh-{which}", prompt, c, r, eval_fold_split(prompt), f"{path.parent.name}/{path.name}:{row}"))
    return out


def pandalm(data_dir) -> list[JudgePair]:
    """PandaLM test set: majority of three human annotators; ties (majority 0 or no majority) dropped."""
    path = _dir(data_dir, "pandalm_testset") / "testset-v1.json"
    out = []
    for row, rec in read_records(path):
        instr, inp = need(rec, "instruction", str, path, row), need(rec, "input", str, path, row)
        # upstream JSON holds a few one-word answers as JSON scalars (row 157: `true`): read them as their text
        r1, r2 = (_text(need(rec, f, (str, bool, int, float), path, row)) for f in ("response1", "response2"))
        votes = []
        for f in ("annotator1", "annotator2", "annotator3"):
            v = need(rec, f, int, path, row)
            if v not in (0, 1, 2):
                raise DataError(f"expected 0/1/2, got {v!r}", file=str(path), row=row, field=f)
            votes.append(v)
        top = max((0, 1, 2), key=votes.count)
        if votes.count(top) < 2 or top == 0 or r1.strip() == r2.strip():
            continue
        prompt = instr + ("\n\n" + inp if inp.strip() else "")
        c, r = (r1, r2) if top == 1 else (r2, r1)
        out.append(JudgePair("pandalm", prompt, c, r, judge_split(prompt), f"{path.name}:{row}"))
    return out


def autoj(data_dir) -> list[JudgePair]:
    """Auto-J pairwise test set, non-tie pairs (label 0: response 1 preferred, 1: response 2, 2: tie)."""
    path = _dir(data_dir, "autoj_pairwise_test") / "testdata_pairwise.jsonl.gz"
    out = []
    for row, rec in read_records(path):
        prompt = need(rec, "prompt", str, path, row)
        r1, r2 = need(rec, "response 1", str, path, row), need(rec, "response 2", str, path, row)
        label = need(rec, "label", int, path, row)
        if label not in (0, 1, 2):
            raise DataError(f"expected 0/1/2, got {label!r}", file=str(path), row=row, field="label")
        if label == 2 or r1.strip() == r2.strip():
            continue
        c, r = (r1, r2) if label == 0 else (r2, r1)
        out.append(JudgePair("autoj", prompt, c, r, judge_split(prompt), f"{path.name}:{row}"))
    return out


def rmb(data_dir, goal: str) -> list[JudgePair]:
    """RMB pairwise set, `Helpfulness` or `Harmlessness`. BENCHMARK labels (LLM-judged), not human."""
    root = _dir(data_dir, "rmb_pairwise") / "Pairwise_set" / goal
    if not root.exists():
        raise BenchError(f"{root} not found")
    out = []
    src = "rmb-helpful" if goal == "Helpfulness" else "rmb-harmless"
    for path in sorted(root.rglob("*.json.gz")):
        for row, rec in read_records(path):
            conv = need(rec, "conversation_input", list, path, row)
            turns = []
            for t in conv:
                if not isinstance(t, dict) or not isinstance(t.get("content"), str):
                    raise DataError("expected {role, content} turns", file=str(path), row=row, field="conversation_input")
                turns.append(f"{t.get('role', 'user')}: {t['content']}" if len(conv) > 1 else t["content"])
            prompt = "\n\n".join(turns)
            c, r = (need(rec, k, dict, path, row) for k in ("chosen", "reject"))
            ca, ra = c.get("answer"), r.get("answer")
            if not isinstance(ca, str) or not isinstance(ra, str):
                raise DataError("expected a string 'answer'", file=str(path), row=row, field="chosen" if not isinstance(ca, str) else "reject")
            if ca.strip() == ra.strip():
                continue
            last_user = conv[-1]["content"] if conv else prompt
            out.append(JudgePair(src, prompt, ca, ra, judge_split(last_user), f"{path.relative_to(root)}:{row}"))
    return out


# -- refusal labels -----------------------------------------------------------------------------------------------

XSTEST_LABELS = {"1_full_compliance": 0, "2_full_refusal": 1, "3_partial_refusal": 1}


def xstest_prompts(data_dir) -> list[dict[str, str]]:
    """The 450 XSTest prompts (`id, prompt, type, label` safe/unsafe) with their judge split."""
    path = _dir(data_dir, "xstest") / "xstest_prompts.csv"
    out = []
    for row, rec in _csv_rows(path, ("id", "prompt", "type", "label")):
        if rec["label"] not in ("safe", "unsafe"):
            raise DataError(f"expected safe/unsafe, got {rec['label']!r}", file=str(path), row=row, field="label")
        out.append({"id": rec["id"], "prompt": rec["prompt"], "type": rec["type"], "label": rec["label"], "split": judge_split(rec["prompt"])})
    return out


def xstest_completions(data_dir) -> list[LabelledResponse]:
    """XSTest v2 completions of 5 models, human `final_label`: full or partial refusal = 1, full compliance = 0."""
    folder = _dir(data_dir, "xstest") / "model_completions"
    out = []
    for path in sorted(folder.glob("*.csv")):
        model = path.stem.replace("xstest_v2_completions_", "")
        for row, rec in _csv_rows(path, ("prompt", "completion", "final_label")):
            lab = (rec["final_label"] or "").strip()
            if lab not in XSTEST_LABELS:
                raise DataError(f"expected one of {', '.join(XSTEST_LABELS)}, got {lab[:30]!r}", file=str(path), row=row, field="final_label")
            out.append(LabelledResponse(f"xstest-{model}", rec["prompt"], rec["completion"] or "", XSTEST_LABELS[lab], judge_split(rec["prompt"]), f"{path.name}:{row}"))
    return out


# -- truthfulness labels ------------------------------------------------------------------------------------------


def truthfulqa_split(fold: str, question: str) -> str:
    """A TruthfulQA question's judge role from its run fold (harness.datasets.truthfulqa.FOLD_BOUNDS)."""
    if fold == "eval":
        return "judge-test"
    if fold == "scorer":
        return "judge-calib" if _bucket(question, "tqa-judge:") < 25 else "judge-train"
    return "excluded"


def truthfulqa_answers(data_dir) -> list[dict[str, Any]]:
    """TruthfulQA questions with their judge split and the reference lists (correct -> 0, incorrect -> 1 labels)."""
    from .truthfulqa import load_questions

    qs = load_questions(str(data_dir) if data_dir else None)
    return [{**q, "split": truthfulqa_split(q["fold"], q["question"])} for q in qs]


# -- helpers ------------------------------------------------------------------------------------------------------


def _dedupe_labelled(items: list[LabelledResponse]) -> list[LabelledResponse]:
    """One item per (prompt, response); a response labelled both ways (conflicting sources) is dropped."""
    by: dict[tuple[str, str], list[LabelledResponse]] = {}
    for it in items:
        by.setdefault((normalize_prompt(it.prompt), it.response.strip()), []).append(it)
    return [v[0] for v in by.values() if len({x.label for x in v}) == 1]


@lru_cache(maxsize=4)
def load_all(data_dir: str) -> dict[str, Any]:
    """Every judge source, read once per process: {"safety": [...], "safety_pairs": {...}, "help_pairs": {...},
    "refusal": [...], "truthfulqa": [...], "xstest_prompts": [...]}."""
    pku_lab, pku_safety_pairs, pku_better = pku_rows(data_dir)
    safety = pku_lab + do_not_answer(data_dir)
    safety_pairs: dict[str, list[JudgePair]] = {"pku": pku_safety_pairs, "hh-harmless-base": hh_pairs(data_dir, "harmless-base"),
                                                "rmb-harmless": rmb(data_dir, "Harmlessness")}
    help_pairs: dict[str, list[JudgePair]] = {"pku-better": pku_better}
    for which in ("helpful-base", "helpful-online", "helpful-rejection-sampled"):
        help_pairs[f"hh-{which}"] = hh_pairs(data_dir, which)
    help_pairs["pandalm"] = pandalm(data_dir)
    help_pairs["autoj"] = autoj(data_dir)
    help_pairs["rmb-helpful"] = rmb(data_dir, "Helpfulness")
    return {"safety": safety, "safety_pairs": safety_pairs, "help_pairs": help_pairs, "refusal": xstest_completions(data_dir),
            "refusal_heldout": do_not_answer_refusals(data_dir),
            "truthfulqa": truthfulqa_answers(data_dir), "xstest_prompts": xstest_prompts(data_dir)}


def judge_training_prompts(data_dir) -> set[str]:
    """The normalised prompts (and, for dialogues, final user turns) that any judge trains or calibrates on: what an
    evaluation-only prompt set must avoid (`prompt_sets.load_harmful_prompts`)."""
    d = load_all(str(data_dir))
    rows = [*d["safety"], *d["refusal"], *(p for v in d["safety_pairs"].values() for p in v), *(p for v in d["help_pairs"].values() for p in v)]
    out = set()
    for it in rows:
        if it.split in ("judge-train", "judge-calib"):
            i = it.prompt.rfind("Human:")
            out.update({normalize_prompt(it.prompt), normalize_prompt(it.prompt[i + len("Human:"):] if i >= 0 else it.prompt)})
    out.update(normalize_prompt(q["question"]) for q in d["truthfulqa"] if q["split"] in ("judge-train", "judge-calib"))
    return out


def split_counts(items: list[Any]) -> dict[str, dict[str, int]]:
    """{source: {split: n}} (for cards and docs)."""
    out: dict[str, dict[str, int]] = {}
    for it in items:
        d = out.setdefault(it.source, {})
        d[it.split] = d.get(it.split, 0) + 1
    return out
