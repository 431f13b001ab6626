"""Evaluation-only prompt sets with harm categories: Safe-RLHF's 83 red-team prompts and BeaverTails-Evaluation (alone, or
together as the harmful requests of the harmful-compliance rate), and XSTest's safe prompts (over-refusal)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import BenchError
from harness.types import DatasetBundle, EvalPrompt

from .common import check_visible, need, need_text, read_records, resolve_local


def _load(cfg, name: str, folder_names: tuple[str, ...], filename: str, hub: str) -> DatasetBundle:
    folder = resolve_local(cfg.data.data_dir, *folder_names)
    if folder is None:
        raise BenchError(f"{name} is read from local copies: pass --data-dir with {folder_names[0]}/{filename} (hub copy: {hub})")
    path = folder / filename
    if not path.exists():
        raise BenchError(f"{path} not found: pass --data-dir with {folder_names[0]}/{filename}")
    prompts = [EvalPrompt(need_text(r, "prompt", path, i), need(r, "category", str, path, i)) for i, r in read_records(path)]
    return DatasetBundle(name=name, source=str(path), prompts={"eval": prompts}, counts={"prompts": len(prompts)})


def load_redteam(cfg) -> DatasetBundle:
    return _load(cfg, "redteam-83", ("safe_rlhf_eval_prompts",), "problem.json", "PKU-Alignment/safe-rlhf@82743cc:safe_rlhf/evaluate/gpt4/problem.json")


def load_beavertails(cfg) -> DatasetBundle:
    return _load(cfg, "beavertails", ("beavertails_evaluation",), "BeaverTails-Evaluation.json", "PKU-Alignment/BeaverTails-Evaluation")


def load_xstest_safe(cfg) -> list[EvalPrompt]:
    """XSTest v2's 250 safe prompts (over-refusal; category = XSTest type), as a fixed hashed subset of
    `data.max_refusal_prompts` when that is > 0. Methods, annotators and the methods' folds never see XSTest."""
    import csv
    import hashlib

    folder = resolve_local(cfg.data.data_dir, "xstest")
    path = folder / "xstest_prompts.csv" if folder is not None else None
    if path is None or not path.exists():
        raise BenchError("the over-refusal rate reads XSTest from local copies: pass --data-dir with xstest/xstest_prompts.csv "
                         "(hub: paul-rottger/exaggerated-safety), or skip it with --set scoring.judges.refusal=none")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [(i, r) for i, r in enumerate(csv.DictReader(f)) if r.get("label") == "safe"]
    prompts = [EvalPrompt(check_visible(r["prompt"] or "", path, i, "prompt"), r["type"], {"id": r["id"]}) for i, r in rows]
    n = cfg.data.max_refusal_prompts
    if n:  # a category-mixed subset, stable across runs: ordered by prompt hash, not file order (file order is by type)
        prompts = sorted(prompts, key=lambda p: hashlib.sha1(p.prompt.encode()).hexdigest())[:n]
    return prompts


def load_harmful_prompts(cfg) -> list[EvalPrompt]:
    """Harmful requests for the harmful-compliance rate (issue 25): BeaverTails-Evaluation's 700 prompts (14 harm
    categories) and Safe-RLHF's 83 red-team prompts (8), category "<set>/<category>", as a fixed hashed subset of
    `data.max_harmful_prompts` when that is > 0. No judge may have trained or calibrated on them: a prompt found
    among the judges' training rows (`judge_data.judge_training_prompts`) is dropped (none is, in the shared data)."""
    import hashlib
    import logging

    from .common import normalize_prompt
    from .judge_data import judge_training_prompts

    sets = (("beavertails", load_beavertails(cfg)), ("redteam", load_redteam(cfg)))
    prompts = {normalize_prompt(p.prompt): EvalPrompt(p.prompt, f"{name}/{p.category}", {"set": name})
               for name, bundle in sets for p in bundle.prompts["eval"]}
    seen = judge_training_prompts(Path(sets[0][1].source).parent.parent)
    kept = [p for k, p in prompts.items() if k not in seen]
    if len(kept) < len(prompts):
        logging.getLogger("bench").info("harmful prompts: %d dropped, a judge trains or calibrates on them", len(prompts) - len(kept))
    n = cfg.data.max_harmful_prompts
    if n:  # category-mixed and stable across runs: ordered by prompt hash (file order is by category)
        kept = sorted(kept, key=lambda p: hashlib.sha1(p.prompt.encode()).hexdigest())[:n]
    return kept
