"""Dataset adapters. Each registered loader maps `(cfg) -> DatasetBundle` with prompt-disjoint folds.

`load_bundle(cfg)` loads the run's dataset; `load_eval_prompts(cfg, bundle)` picks the evaluation prompt set
(`data.eval_set`: the dataset's own eval fold, or one of the red-team sets).
"""

from __future__ import annotations

from harness.types import DatasetBundle, EvalPrompt

from .common import FOLDS, fold_of, normalize_prompt, resolve_local  # noqa: F401  (re-exported)


def load_bundle(cfg) -> DatasetBundle:
    from harness.registries import DATASETS

    bundle = DATASETS.get(cfg.dataset)(cfg)
    return bundle


def load_eval_prompts(cfg, bundle: DatasetBundle) -> tuple[str, list[EvalPrompt]]:
    """(eval set name, prompts), capped at `data.max_eval_prompts`."""
    from harness.registries import DATASETS

    name = cfg.data.eval_set
    if name in ("auto", cfg.dataset, "pku-test" if cfg.dataset == "pku-saferlhf" else None):
        prompts, name = bundle.prompts.get("eval", []), ("pku-test" if cfg.dataset == "pku-saferlhf" else f"{cfg.dataset}-eval")
    else:
        if name == "pku-test":
            name = "pku-saferlhf"
        prompts = DATASETS.get(name)(cfg).prompts.get("eval", [])
    n = cfg.data.max_eval_prompts
    return name, (prompts[:n] if n else prompts)


def rows_hash(bundle: DatasetBundle, eval_prompts: list[EvalPrompt]) -> str:
    """sha256 of the rows a run actually uses (every fold's pairs after caps and filters, the dual and evaluation
    prompts), so two users can tell whether they ran on the same data, whatever the files looked like."""
    import hashlib
    import json

    h = hashlib.sha256()
    for view, folds in (("reward", bundle.reward_pairs), ("cost", bundle.cost_pairs)):
        for fold in sorted(folds):
            for p in folds[fold]:
                h.update(json.dumps([view, fold, p.prompt, p.chosen, p.rejected, p.chosen_safe, p.rejected_safe]).encode())
    for fold, prompts in (("dual", bundle.prompts.get("dual", [])), ("eval", eval_prompts)):
        for e in prompts:
            h.update(json.dumps([fold, e.prompt, e.category]).encode())
    return h.hexdigest()
