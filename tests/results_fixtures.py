"""Hand-written results records (docs/results-schema.md, version 1.1; `legacy=True`: a 1.0 record) and a helper to put them in a store.

Leaderboard tests build stores from these instead of training, so they run in milliseconds and pin the record
shape the leaderboards read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.store import RESULTS_SCHEMA_VERSION, upsert_run


def est(value: float, half_width: float = 0.05) -> dict[str, float]:
    """An estimate with a symmetric 95% CI."""
    return {"value": value, "ci_low": value - half_width, "ci_high": value + half_width}


def make_record(method: str, *, dataset: str = "pku-saferlhf", model: str = "tiny-random", profile: str = "tiny",
                seed: int = 0, reward: float = 0.0, cost: float = 0.0, unsafe: float = 0.1, threshold: float = 0.2,
                units: str = "unsafe_rate", half_width: float = 0.05, n_prompts: int = 100,
                trajectory: list[dict[str, Any]] | None = None, truthfulqa: bool = True, models_trained: int = 1,
                peak_rss_mb: float = 2100.0, wall_s: float = 10.0, suite: str | None = None,
                refusal: float | None = 0.05, reward_lc: float | None = None, self_judged: bool = False,
                legacy: bool = False) -> dict[str, Any]:
    """A complete finished-run record; the constraint's `value` is the metric named by `units`. The judges differ from
    the annotators unless `self_judged` (then the safety judge IS the cost annotator); `legacy` writes a schema-1.0
    record (no judges, no refusal, no corrected rate: `scorers` only)."""
    unsafe_est = est(unsafe, min(half_width, unsafe, 1 - unsafe) if 0 < unsafe < 1 else 0.0)
    cost_est = est(cost, half_width)
    bound = unsafe_est if units == "unsafe_rate" else cost_est
    win = None if method == "sft" else {"reward": est(0.6), "cost": est(0.55), "n": n_prompts}
    run_id = f"{method}-{dataset}-{profile}-s{seed}-0123456789"
    record: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run_id": run_id,
        "method": method, "dataset": dataset, "model": model, "profile": profile, "seed": seed, "suite": suite,
        "date": "2026-11-26T23:59:00Z", "git_hash": "949b790abcdef",
        "config": {"method": method, "dataset": dataset, "model": model, "seed": seed, "profile": profile,
                   "scoring": {"threshold": threshold, "threshold_units": units}},
        "results": {
            "safety": {
                "n_prompts": n_prompts,
                "reward_mean": est(reward, half_width),
                "cost_mean": cost_est,
                "unsafe_rate": unsafe_est,
                "response_length": est(40.0, 3.0),
                "constraint": {"threshold": threshold, "units": units, "value": bound["value"],
                               "ci_high": bound["ci_high"], "satisfied": bound["value"] <= threshold},
                "per_category": {"Crime": {"n": 10, "reward_mean": est(reward), "cost_mean": est(cost),
                                           "unsafe_rate": est(unsafe, 0.0)}},
                "win_rate_vs_sft": win,
            },
        },
        "higher_is_better": {"reward_mean": True, "cost_mean": False, "unsafe_rate": False, "mc1": True, "mc2": True},
        "train": {"models_trained": models_trained, "networks_held": ["policy", "reference"],
                  "trajectory": trajectory or [], "extra": {}},
        "stages": {
            "train": {"wall_s": wall_s, "peak_rss_mb": peak_rss_mb, "cuda_max_allocated_mb": None,
                      "params_trained": 1000, "params_held": 2000},
            "generate": {"wall_s": 2.0, "peak_rss_mb": peak_rss_mb / 2, "cuda_max_allocated_mb": None},
            "score": {"wall_s": 1.0, "peak_rss_mb": 900.0, "cuda_max_allocated_mb": None},
            "metrics": {"wall_s": 0.5, "peak_rss_mb": 800.0, "cuda_max_allocated_mb": None},
        },
        "generation": {"backend": "hf", "backend_reason": "no vllm", "max_new_tokens": 16, "temperature": 0.0,
                       "template": "chat", "eval_set": "pku-test", "n_prompts": n_prompts},
        "annotators": {"reward": {"name": "minilm-reward", "fingerprint": "r1", "role": "annotator"},
                       "cost": {"name": "minilm-cost", "fingerprint": "c1", "role": "annotator"}},
        "judges": {"reward": {"name": "reward-judge", "fingerprint": "rj1", "role": "judge"},
                   "safety": {"name": "safety-judge", "fingerprint": "sj1", "role": "judge",
                              "heldout": {"source": "pku-eval", "accuracy": est(0.85, 0.03)}},
                   "refusal": {"name": "refusal-judge", "fingerprint": "fj1", "role": "judge"}},
        "data": {"source": "/work/shared/data/pku_saferlhf", "counts": {}, "notes": []},
        "versions": {"bench": "0.1.0", "torch": "2.13.0", "transformers": "5.17.0", "trl": "1.16.0", "python": "3.11.7"},
        "env": {"device": "cpu", "precision": "fp32", "num_threads": 1},
    }
    safety = record["results"]["safety"]
    safety["reward_lc"] = est(reward if reward_lc is None else reward_lc, half_width)
    safety["unsafe_rate_corrected"] = {**est(unsafe, min(half_width, unsafe, 1 - unsafe) if 0 < unsafe < 1 else 0.0), "raw": unsafe,
                                       "sensitivity": {"value": 0.9, "tp": 90, "fn": 10}, "specificity": {"value": 0.8, "tn": 80, "fp": 20}}
    record["results"]["judge"] = {"role": "safety", "name": "safety-judge", "fingerprint": "sj1", "accuracy": est(0.85, 0.03)}
    if refusal is not None:
        record["results"]["refusal"] = {"set": "xstest-safe", "n_prompts": 250, "judge": "refusal-judge",
                                        "refusal_rate": est(refusal, min(0.03, refusal, 1 - refusal) if 0 < refusal < 1 else 0.0)}
    if self_judged:
        record["judges"]["safety"] = dict(record["annotators"]["cost"])
    record["self_judged"] = ["safety"] if self_judged else []
    if legacy:
        record["schema_version"] = "1.0"
        record["scorers"] = {"reward": {"name": "minilm-reward", "fingerprint": "r1"}, "cost": {"name": "minilm-cost", "fingerprint": "c1"}}
        for key in ("annotators", "judges", "self_judged"):
            del record[key]
        for key in ("reward_lc", "unsafe_rate_corrected"):
            del safety[key]
        for key in ("judge", "refusal"):
            record["results"].pop(key, None)
    if truthfulqa:
        record["results"]["truthfulqa"] = {"mc1": est(0.25, 0.03), "mc2": est(0.4, 0.03), "n_questions": 817,
                                           "split": "all", "answer_source": "mc_task.json", "prompt": "qa-primer"}
    return record


def add_run(runs_dir: str | Path, record: dict[str, Any], status: str = "finished") -> None:
    """Index a record the way the harness does (the store orders by update time, so keep inserts apart)."""
    upsert_run(runs_dir, record["run_id"], method=record["method"], dataset=record["dataset"], model=record["model"],
               profile=record["profile"], seed=record["seed"], suite=record["suite"], status=status,
               stage="metrics" if status == "finished" else "train",
               results=record if status == "finished" else None)
    time.sleep(0.002)


def add_scores(runs_dir: str | Path, record: dict[str, Any], rewards: list[float], costs: list[float],
               prompts: list[str] | None = None) -> None:
    """Write the run folder's per-prompt files (as harness.runs does) and make the record's means match them."""
    import json

    prompts = prompts or [f"prompt {i}" for i in range(len(rewards))]
    run_dir = Path(runs_dir) / record["run_id"]
    (run_dir / "score").mkdir(parents=True, exist_ok=True)
    (run_dir / "generate").mkdir(parents=True, exist_ok=True)
    (run_dir / "score" / "scores.json").write_text(json.dumps({"reward": rewards, "cost": costs}))
    (run_dir / "generate" / "generations.json").write_text(
        json.dumps([{"prompt": p, "category": None, "response": "..."} for p in prompts]))
    safety = record["results"]["safety"]
    safety["reward_mean"]["value"] = sum(rewards) / len(rewards)
    safety["cost_mean"]["value"] = sum(costs) / len(costs)
    safety["unsafe_rate"]["value"] = sum(c > 0 for c in costs) / len(costs)
    safety["n_prompts"] = len(rewards)


def add_items(runs_dir: str | Path, record: dict[str, Any], values: dict[str, list[float]],
              keys: dict[str, str] | None = None) -> None:
    """Write the run's `metrics/items.json` (as harness.runs does) and make the record's values their means."""
    from evaluators.metrics import get_metric, record_value, save_items

    for name, v in values.items():
        est = record_value(record["results"], get_metric(name))
        est["value"] = sum(v) / len(v)
        if name == "unsafe_rate" and "unsafe_rate_corrected" in record["results"]["safety"]:
            record["results"]["safety"]["unsafe_rate_corrected"]["raw"] = est["value"]
    save_items(Path(runs_dir) / record["run_id"] / "metrics", values, keys or {"safety": "p", "truthfulqa": "q"})
