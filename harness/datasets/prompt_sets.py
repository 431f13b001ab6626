"""Evaluation-only prompt sets with harm categories: Safe-RLHF's 83 red-team prompts and BeaverTails-Evaluation."""

from __future__ import annotations

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
