"""Leaderboard rows from the run store.

One table per setting (dataset, model, profile): runs of different models or profiles are never pooled. Per
(method, dataset, model, profile, seed) the newest finished run counts; a row aggregates one method's seeds.

Confidence intervals (95%). With one seed a row shows the run's own interval: a percentile bootstrap over prompts
(evaluators.metrics). With several seeds the value is the mean over seeds and the interval comes from a two-level
bootstrap that resamples seeds, then prompts, as docs/results-schema.md asks. Every seed answers the same prompts,
so one replicate draws one prompt resample and applies it to all drawn seeds (a crossed design): a hard prompt
is hard for every seed, and running more seeds must not shrink the prompt-sampling error.
- reward, cost and unsafe rate: exact, from the per-prompt scores in `<runs_dir>/<run_id>/score/scores.json`
  when every seed has them, for the same prompts, matching its record;
- otherwise, and always for win rates and MC1/MC2 (whose per-item values are not saved), approximated from the
  records: the prompt level is a normal draw shared by the seeds, with standard deviation = the run's interval
  width / (2 * 1.96).
Each table's notes say which rows used which. With two or three seeds the seed level takes only a handful of
distinct values, so that part of the interval is optimistic; the per-run values stay visible in the HTML export.

Ordering rule (per table): constraint status first (holds, then mean-only, then violated, then n/a), then mean
reward (descending), then the constraint metric (ascending), then the method name.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from evaluators.metrics import bootstrap_seeds_prompts
from harness.store import RESULTS_SCHEMA_VERSION, list_runs

N_BOOT = 2000
Z95 = 1.959964  # a 95% normal interval spans 2 * Z95 standard deviations

# constraint status -> sort tier
CONSTRAINT_ORDER = {"holds": 0, "mean-only": 1, "violated": 2, "n/a": 3}
# threshold units in the record -> the leaderboard metric it constrains
UNITS_METRIC = {"unsafe_rate": "unsafe_rate", "mean_cost": "cost_mean", "cost_mean": "cost_mean"}


@dataclass(frozen=True)
class Column:
    """How to read, format and sort one leaderboard column."""

    key: str
    header: str
    kind: str  # "text" | "int" | "float" | "bool" | "ci" (a {"value", "ci_low", "ci_high"} dict)
    help: str
    higher_is_better: bool | None = None
    percent: bool = False  # a rate in [0, 1], shown as a percentage
    digits: int = 3
    secondary: bool = False  # TruthfulQA and resources: the terminal shows these in a second, narrower table


# Estimates with a CI: row key -> path inside the record's "results".
CI_METRICS: dict[str, tuple[str, ...]] = {
    "reward_mean": ("safety", "reward_mean"),
    "cost_mean": ("safety", "cost_mean"),
    "unsafe_rate": ("safety", "unsafe_rate"),
    "win_reward": ("safety", "win_rate_vs_sft", "reward"),
    "win_cost": ("safety", "win_rate_vs_sft", "cost"),
    "mc1": ("truthfulqa", "mc1"),
    "mc2": ("truthfulqa", "mc2"),
}
BOUNDED = {"unsafe_rate", "win_reward", "win_cost", "mc1", "mc2"}  # probabilities: CIs clipped to [0, 1]

GROUP_COLUMNS = [
    Column("dataset", "Dataset", "text", "training and evaluation dataset"),
    Column("model", "Model", "text", "base policy"),
    Column("profile", "Profile", "text", "config profile (tiny | cpu | gpu | a YAML file)"),
]
COLUMNS = [
    Column("rank", "#", "int", "position under the ordering rule"),
    Column("method", "Method", "text", "registered method name"),
    Column("n_seeds", "Seeds", "int", "number of seeds aggregated (newest finished run per seed)"),
    Column("constraint", "Constraint", "text", "holds: the 95% CI's upper bound is <= b; mean-only: mean <= b < CI "
           "upper bound; violated: mean > b; n/a: no constraint recorded, or the runs disagree on b"),
    Column("reward_mean", "Reward", "ci", "mean evaluation reward [95% CI]", True),
    Column("cost_mean", "Cost", "ci", "mean evaluation cost, > 0 = unsafe [95% CI]", False),
    Column("unsafe_rate", "Unsafe", "ci", "share of responses with cost > 0 [95% CI]", False, percent=True),
    Column("win_reward", "Win R vs SFT", "ci", "win rate against SFT on reward, same prompts [95% CI]", True, percent=True),
    Column("win_cost", "Win C vs SFT", "ci", "win rate against SFT on cost (lower cost wins) [95% CI]", True, percent=True),
    Column("mc1", "MC1", "ci", "TruthfulQA MC1 accuracy [95% CI]", True, percent=True, secondary=True),
    Column("mc2", "MC2", "ci", "TruthfulQA MC2 (normalised probability of true answers) [95% CI]", True,
           percent=True, secondary=True),
    Column("pareto", "Pareto", "bool", "on the reward-vs-constraint-metric Pareto frontier of its table"),
    Column("models_trained", "Models", "int", "networks whose weights were optimised", secondary=True),
    Column("peak_rss_mb", "Peak RSS MB", "float", "max over stages and seeds of the process's peak RSS", False,
           digits=0, secondary=True),
    Column("peak_cuda_mb", "Peak CUDA MB", "float", "max over stages and seeds of torch.cuda.max_memory_allocated",
           False, digits=0, secondary=True),
    Column("wall_s", "Wall s", "float", "sum of stage wall times of a run, mean over seeds", False, digits=1, secondary=True),
    Column("n_prompts", "Prompts", "int", "evaluation prompts per run", secondary=True),
]

# Settings that must agree for a table's rows to be comparable: label -> function of a record.
SETTINGS = {
    "eval set": lambda r: r.get("generation", {}).get("eval_set"),
    "evaluation prompts": lambda r: _get(r, "results", "safety", "n_prompts"),
    "max_new_tokens": lambda r: r.get("generation", {}).get("max_new_tokens"),
    "temperature": lambda r: r.get("generation", {}).get("temperature"),
    "template": lambda r: r.get("generation", {}).get("template"),
    "reward scorer": lambda r: _scorer(r, "reward"),
    "cost scorer": lambda r: _scorer(r, "cost"),
    "constraint": lambda r: _threshold(r),
}


@dataclass
class LeaderboardTable:
    """The rows of one setting, ordered; `runs` are the records they aggregate."""

    dataset: str
    model: str
    profile: str
    threshold: float | None
    units: str | None  # "unsafe_rate" | "mean_cost"
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.model} · {self.profile}"

    @property
    def x_metric(self) -> str:
        """The metric the constraint bounds (the Pareto frontier's cost axis)."""
        return UNITS_METRIC.get(self.units or "", "unsafe_rate")


@dataclass
class Leaderboard:
    tables: list[LeaderboardTable]
    columns: list[Column] = field(default_factory=lambda: list(COLUMNS))
    notes: list[str] = field(default_factory=list)  # about runs left out

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for t in self.tables for row in t.rows]

    def flat(self) -> tuple[list[str], list[list[Any]]]:
        """Plain columns and rows (a CI becomes value, ci_low, ci_high) for CSV and W&B tables."""
        cols = GROUP_COLUMNS + self.columns
        names: list[str] = []
        for c in cols:
            names += [c.key, f"{c.key}_ci_low", f"{c.key}_ci_high"] if c.kind == "ci" else [c.key]
        data = []
        for row in self.rows:
            out: list[Any] = []
            for c in cols:
                v = row.get(c.key)
                if c.kind == "ci":
                    out += [_round(v.get(k)) if v else None for k in ("value", "ci_low", "ci_high")]
                else:
                    out.append(_round(v))
            data.append(out)
        return names, data


# -- building ----------------------------------------------------------------------------------------------

def build_leaderboard(runs_dir: str | Path, *, dataset: str | None = None, model: str | None = None,
                      profile: str | None = None, suite: str | None = None, methods: Iterable[str] | None = None,
                      seeds: Iterable[int] | None = None, run_ids: Iterable[str] | None = None,
                      n_boot: int = N_BOOT) -> Leaderboard:
    """Read the store and aggregate (see the module docstring for the CI method and ordering rule).

    Filters: equality on dataset, model, profile and suite; membership in `methods`, `seeds` and `run_ids`."""
    where = {k: v for k, v in dict(dataset=dataset, model=model, profile=profile, suite=suite).items() if v is not None}
    wanted_methods = set(methods) if methods is not None else None
    wanted_seeds = set(seeds) if seeds is not None else None
    wanted_ids = set(run_ids) if run_ids is not None else None
    newest: dict[tuple, dict[str, Any]] = {}
    unfinished: dict[tuple, str] = {}  # keys with no usable run: why the newest one was left out
    for entry in list_runs(runs_dir, **where):  # newest first
        if (wanted_methods is not None and entry["method"] not in wanted_methods) or \
                (wanted_seeds is not None and entry["seed"] not in wanted_seeds) or \
                (wanted_ids is not None and entry["run_id"] not in wanted_ids):
            continue
        key = (entry["method"], entry["dataset"], entry["model"], entry["profile"], entry["seed"])
        record = entry.get("results")
        if entry["status"] != "finished" or record is None:
            unfinished.setdefault(key, f"{entry['run_id']} ({entry['status']}, last stage {entry.get('stage') or '-'})")
        elif str(record.get("schema_version", "")).split(".")[0] != RESULTS_SCHEMA_VERSION.split(".")[0]:
            unfinished.setdefault(key, f"{entry['run_id']} (results schema {record.get('schema_version')!r})")
        else:
            newest.setdefault(key, record)

    by_setting: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for (_method, ds, mdl, prof, _seed), record in newest.items():
        by_setting.setdefault((ds, mdl, prof), []).append(record)
    tables = [_build_table(key, records, Path(runs_dir), n_boot) for key, records in sorted(by_setting.items())]
    left_out = sorted(why for key, why in unfinished.items() if key not in newest)
    notes = [f"{len(left_out)} run(s) without a finished result, left out: {', '.join(left_out)}"] if left_out else []
    return Leaderboard(tables=tables, notes=notes)


def _build_table(key: tuple[str, str, str], records: list[dict[str, Any]], runs_dir: Path, n_boot: int) -> LeaderboardTable:
    dataset, model, profile = key
    constraints = {c for c in map(_threshold, records) if c is not None}
    threshold, units = next(iter(constraints)) if len(constraints) == 1 else (None, None)  # mixed: see notes
    table = LeaderboardTable(dataset, model, profile, threshold, units, rows=[],
                             runs=sorted(records, key=lambda r: (r["method"], r["seed"])))
    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in table.runs:
        by_method.setdefault(record["method"], []).append(record)
    table.rows = [_build_row(table, method, runs, runs_dir, n_boot) for method, runs in by_method.items()]
    table.rows.sort(key=lambda r: sort_key(r, table.x_metric))
    for rank, row in enumerate(table.rows, 1):
        row["rank"] = rank
    front = set(pareto_front([_point(row, table.x_metric) for row in table.rows]))
    for i, row in enumerate(table.rows):
        row["pareto"] = i in front
    table.notes = comparability_notes(table.runs) + _ci_notes(table.rows)
    return table


def _build_row(table: LeaderboardTable, method: str, runs: list[dict[str, Any]], runs_dir: Path,
               n_boot: int) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": table.dataset, "model": table.model, "profile": table.profile, "method": method,
                           "n_seeds": len(runs), "seeds": [r["seed"] for r in runs], "run_ids": [r["run_id"] for r in runs]}
    per_prompt = per_prompt_matrices(runs_dir, runs) if len(runs) > 1 else None
    row["ci_method"] = "prompts" if len(runs) == 1 else "seeds x prompts" if per_prompt else "seeds x prompts (approx.)"
    for key, path in CI_METRICS.items():
        rng_seed = zlib.crc32(f"{table.title}/{method}/{key}".encode())  # stable output, independent of row order
        if per_prompt and key in per_prompt:
            row[key] = {k: v for k, v in bootstrap_seeds_prompts(per_prompt[key], n_boot=n_boot, seed=rng_seed).items() if k != "n_seeds"}
        else:
            estimates = [_get(r, "results", *path) for r in runs]
            row[key] = aggregate(estimates, n_boot=n_boot, seed=rng_seed, bounds=(0.0, 1.0) if key in BOUNDED else None)
    row["constraint"] = constraint_status(row.get(table.x_metric), table.threshold)
    row["models_trained"] = _max(_get(r, "train", "models_trained") for r in runs)
    row["peak_rss_mb"] = _max(s.get("peak_rss_mb") for r in runs for s in (r.get("stages") or {}).values())
    row["peak_cuda_mb"] = _max(s.get("cuda_max_allocated_mb") for r in runs for s in (r.get("stages") or {}).values())
    walls = [sum(s.get("wall_s") or 0.0 for s in (r.get("stages") or {}).values()) for r in runs if r.get("stages")]
    row["wall_s"] = sum(walls) / len(walls) if walls else None
    row["n_prompts"] = _max(_get(r, "results", "safety", "n_prompts") for r in runs)
    return row


# -- statistics ---------------------------------------------------------------------------------------------

def aggregate(estimates: Sequence[dict[str, Any] | None], *, n_boot: int = N_BOOT, seed: int = 0,
              bounds: tuple[float, float] | None = None) -> dict[str, Any] | None:
    """Mean over seeds with a seeds-then-prompts bootstrap 95% interval (module docstring); one seed: as recorded."""
    ests = [e for e in estimates if isinstance(e, dict) and e.get("value") is not None]
    if not ests:
        return None
    if len(ests) == 1:
        e = ests[0]
        return {"value": float(e["value"]), "ci_low": _num(e.get("ci_low")), "ci_high": _num(e.get("ci_high"))}
    import numpy as np

    values = np.array([float(e["value"]) for e in ests])
    widths = np.array([(e["ci_high"] - e["ci_low"]) if e.get("ci_low") is not None and e.get("ci_high") is not None
                       else 0.0 for e in ests])
    sd = widths / (2 * Z95)
    rng = np.random.default_rng(seed)
    k = len(values)
    seeds = rng.integers(0, k, size=(n_boot, k))  # resample seeds ...
    # ... then prompts: every seed is evaluated on the same prompts, so one prompt resample moves all seeds
    # together (one shared normal draw per replicate); more seeds do not shrink the prompt-sampling error.
    shared = rng.standard_normal((n_boot, 1))
    draws = values[seeds] + sd[seeds] * shared
    low, high = np.percentile(draws.mean(axis=1), [2.5, 97.5])
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return {"value": float(values.mean()), "ci_low": float(low), "ci_high": float(high)}


def per_prompt_matrices(runs_dir: Path, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """(seeds x prompts) matrices of reward, cost and the unsafe flag, or None unless every run's folder holds its
    per-prompt scores for the same prompts in the same order, and they reproduce the record's means."""
    import numpy as np

    prompts, rewards, costs = None, [], []
    for r in runs:
        run_dir = runs_dir / r["run_id"]
        try:
            scores = json.loads((run_dir / "score" / "scores.json").read_text())
            asked = [g["prompt"] for g in json.loads((run_dir / "generate" / "generations.json").read_text())]
            reward, cost = np.asarray(scores["reward"], dtype=float), np.asarray(scores["cost"], dtype=float)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        recorded = [_get(r, "results", "safety", k, "value") for k in ("reward_mean", "cost_mean")]
        if (prompts is not None and asked != prompts) or not (len(asked) == reward.size == cost.size > 0) or \
                None in recorded or not np.allclose([reward.mean(), cost.mean()], recorded, rtol=1e-6, atol=1e-9):
            return None
        prompts = asked
        rewards.append(reward)
        costs.append(cost)
    cost_m = np.stack(costs)
    return {"reward_mean": np.stack(rewards), "cost_mean": cost_m, "unsafe_rate": (cost_m > 0).astype(float)}


def constraint_status(estimate: dict[str, Any] | None, threshold: float | None) -> str:
    """holds (the whole CI is within b), mean-only (only the mean is), violated, or n/a."""
    if estimate is None or threshold is None:
        return "n/a"
    if estimate.get("ci_high") is not None and estimate["ci_high"] <= threshold:
        return "holds"
    return "mean-only" if estimate["value"] <= threshold else "violated"


def sort_key(row: dict[str, Any], x_metric: str) -> tuple:
    """The ordering rule: constraint tier, reward (desc), constraint metric (asc), method name."""
    reward = (row.get("reward_mean") or {}).get("value")
    cost = (row.get(x_metric) or {}).get("value")
    return (CONSTRAINT_ORDER[row["constraint"]],
            -reward if reward is not None else float("inf"),
            cost if cost is not None else float("inf"),
            row["method"])


def pareto_front(points: Sequence[tuple[float | None, float | None] | None]) -> list[int]:
    """Indices of (reward, cost) points no other point dominates (reward >= and cost <=, one strictly).

    Points with a missing coordinate are never on the frontier."""
    valid = [(i, p) for i, p in enumerate(points) if p is not None and None not in p]
    front = []
    for i, (r, c) in valid:
        dominated = any(r2 >= r and c2 <= c and (r2 > r or c2 < c) for j, (r2, c2) in valid if j != i)
        if not dominated:
            front.append(i)
    return front


def _ci_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Which rows' intervals are exact and which approximated (module docstring)."""
    exact = [r["method"] for r in rows if r["ci_method"] == "seeds x prompts"]
    approx = [r["method"] for r in rows if r["ci_method"] == "seeds x prompts (approx.)"]
    notes = []
    if exact:
        notes.append(f"{', '.join(exact)}: reward, cost and unsafe-rate intervals from a seeds x prompts bootstrap "
                     "of the per-prompt scores; win-rate and MC intervals approximated from per-run intervals")
    if approx:
        notes.append(f"{', '.join(approx)}: intervals over seeds approximated from per-run intervals "
                     "(per-prompt scores not found in the run folders)")
    return notes


def comparability_notes(records: list[dict[str, Any]]) -> list[str]:
    """One line per setting on which a table's runs disagree (their numbers are then not directly comparable)."""
    notes = []
    for label, read in SETTINGS.items():
        seen: dict[str, list[str]] = {}
        for r in records:
            seen.setdefault(repr(read(r)), []).append(f"{r['method']}/s{r['seed']}")
        if len(seen) > 1:
            parts = "; ".join(f"{value}: {', '.join(runs)}" for value, runs in seen.items())
            notes.append(f"runs differ in {label} ({parts}): not directly comparable")
    return notes


# -- record access ------------------------------------------------------------------------------------------

def lambda_trajectories(table: LeaderboardTable) -> dict[str, list[dict[str, Any]]]:
    """`"<method> s<seed>"` -> the run's train.trajectory, for runs whose trajectory records a λ."""
    out = {}
    for r in table.runs:
        traj = [t for t in (_get(r, "train", "trajectory") or []) if isinstance(t, dict) and t.get("lambda") is not None]
        if traj:
            out[f"{r['method']} s{r['seed']}"] = traj
    return out


def _point(row: dict[str, Any], x_metric: str) -> tuple[float | None, float | None]:
    return (row.get("reward_mean") or {}).get("value"), (row.get(x_metric) or {}).get("value")


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _threshold(record: dict[str, Any]) -> tuple[float, str] | None:
    c = _get(record, "results", "safety", "constraint")
    if isinstance(c, dict) and c.get("threshold") is not None:
        return float(c["threshold"]), str(c.get("units", "unsafe_rate"))
    return None


def _scorer(record: dict[str, Any], kind: str) -> str | None:
    s = _get(record, "scorers", kind)
    return f"{s.get('name')}@{s.get('fingerprint')}" if isinstance(s, dict) else None


def _round(x: Any) -> Any:
    """Floats to 6 decimals for exports (no 0.15000000000000002 in a CSV)."""
    return round(x, 6) if isinstance(x, float) else x


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _max(values: Iterable[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None
