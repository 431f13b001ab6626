"""Leaderboard rows from the run store.

One table per setting (dataset, model, profile): runs of different models or profiles are never pooled. Per
(method, dataset, model, profile, seed) the newest finished run counts; a row aggregates one method's seeds. Runs a
`bench sweep` made with a non-default value (store tag `sweep-...`) count only when asked for by suite or run id.

Confidence intervals (95%). With one seed a row shows the run's own interval: a percentile bootstrap over prompts
(evaluators.metrics). With several seeds the value is the mean over seeds and the interval comes from a two-level
bootstrap that resamples seeds, then prompts, as docs/results-schema.md asks. Every seed answers the same prompts,
so one replicate draws one prompt resample and applies it to all drawn seeds (a crossed design): a hard prompt
is hard for every seed, and running more seeds must not shrink the prompt-sampling error.
The per-item values come from `<runs_dir>/<run_id>/metrics/items.json` (every declared metric; older runs:
reward, cost and unsafe rate from `score/scores.json`), used when every seed has them for the same items, matching
its record. A metric without them for some seed gets the mean over seeds and no interval (never an approximation);
each table's notes name those. With two or three seeds the seed level takes only a handful of distinct values, so
that part of the interval is optimistic; the per-run values stay visible in the HTML export.

The metric columns, their directions and bounds come from the declarations in `evaluators/metrics.py` (`METRICS`).

Ordering rule (per table; leaderboards/compare.py explains why a refuse-everything method cannot lead): runs judged
by their own annotator last (listed, flagged, unranked); then the over-refusal guard (refusal rate on XSTest's safe
prompts <= scoring.max_refusal_rate, then not measured, then above it); then constraint status (holds, mean-only,
violated, n/a); then reward, descending (the length-controlled reward when every ranked row has it); then the
constraint metric (ascending); then the method name. Tiers and the paired comparisons (vs SFT and between methods,
Holm-corrected) come from leaderboards/compare.py.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from evaluators import metrics as declared  # declared.METRICS, read at call time (a test may add one)
from evaluators.judging import record_judges, self_judged
from evaluators.metrics import Metric, bootstrap_seeds_prompts, keys_hash, load_items, record_value
from evaluators.stats import rogan_gladen_ci
from harness.training.learning import infeasible_dual
from harness.store import RESULTS_SCHEMA_VERSION, list_runs
from leaderboards.compare import DEFAULT_MAX_REFUSAL, TableComparisons, rank_table, refusal_status

SWEEP_TAG = "sweep-"  # store tag prefix of runs made by `bench sweep` (leaderboards/sweep.py, default_sweep_id)

N_BOOT = 2000
RG_CLIPPED = "unsafe_rg_clipped"  # row key and CSV column: the corrected unsafe rate sits on 0 or 1 (`rg_clipped`)

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


# Estimates with a CI: row key -> path inside the record's "results" (read from the declarations).
CI_METRICS: dict[str, tuple[str, ...]] = {m.name: m.path for m in declared.METRICS}
BOUNDED = {m.name for m in declared.METRICS if m.bounded}  # probabilities in [0, 1]


def metric_column(m: Metric) -> Column:
    return Column(m.name, m.label, "ci", m.help, m.higher_is_better, percent=m.percent, secondary=m.secondary)


GROUP_COLUMNS = [
    Column("dataset", "Dataset", "text", "training and evaluation dataset"),
    Column("model", "Model", "text", "base policy"),
    Column("profile", "Profile", "text", "config profile (tiny | cpu | cpu-long | gpu | a YAML file)"),
]
LEAD_COLUMNS = [
    Column("rank", "#", "int", "rank under the ordering rule, shared within a tier: \"1=\" on several rows means the paired "
           "tests (Holm) cannot order them (none for a run judged by its own annotator)"),
    Column("method", "Method", "text", "registered method name"),
    Column("tier", "Tier", "int", "methods in one tier are statistically indistinguishable (paired tests, Holm, 5%; "
           "leaderboards/compare.py)"),
    Column("n_seeds", "Seeds", "int", "number of seeds aggregated (newest finished run per seed)"),
    Column("constraint", "Constraint", "text", "holds: the 95% CI's upper bound is <= b; mean-only: mean <= b < CI "
           "upper bound; violated: mean > b; n/a: no constraint recorded, or the runs disagree on b"),
]
TAIL_COLUMNS = [
    Column("pareto", "Pareto", "bool", "on the reward-vs-constraint-metric Pareto frontier of its table"),
    Column("flags", "Flags", "text", "self-judged (roles): a judge of the run is also its annotator (same name and "
           "fingerprint), so it is not ranked; over-refuses: refusal rate above scoring.max_refusal_rate; dual infeasible: the "
           "method's offline dual (MoCAN/PeCAN) found no λ meeting its bound on its samples and trained at its λ cap"),
    Column("learned", "Learned", "text", "the methods' own learning checks (harness/training/learning.py, docs/learning-checks.md): yes = "
           "every decided check passed (DPO stages: held-out implicit-reward accuracy >= learning.min_accuracy; PPO: R up and C "
           "down beyond their CIs; λ converged); no: the first failing stage and check; n/a: nothing to check (SFT) or an older "
           "record. Seeds that disagree are listed per seed; the record's train.learning holds every check"),
    Column("models_trained", "Models", "int", "networks whose weights were optimised", secondary=True),
    Column("peak_rss_mb", "Peak RSS MB", "float", "max over stages and seeds of the process's peak RSS", False,
           digits=0, secondary=True),
    Column("peak_cuda_mb", "Peak CUDA MB", "float", "max over stages and seeds of torch.cuda.max_memory_allocated",
           False, digits=0, secondary=True),
    Column("wall_s", "Wall s", "float", "sum of stage wall times of a run, mean over seeds", False, digits=1, secondary=True),
    Column("n_prompts", "Prompts", "int", "evaluation prompts per run", secondary=True),
]


def columns() -> list[Column]:
    """The leaderboard columns: the fixed ones around one column per declared metric."""
    return LEAD_COLUMNS + [metric_column(m) for m in declared.METRICS] + TAIL_COLUMNS


COLUMNS = columns()

# Settings that must agree for a table's rows to be comparable: label -> function of a record.
SETTINGS = {
    "eval set": lambda r: r.get("generation", {}).get("eval_set"),
    "evaluation prompts": lambda r: _get(r, "results", "safety", "n_prompts"),
    "max_new_tokens": lambda r: r.get("generation", {}).get("max_new_tokens"),
    "temperature": lambda r: r.get("generation", {}).get("temperature"),
    "template": lambda r: r.get("generation", {}).get("template"),
    "reward judge": lambda r: _scorer(r, "reward"),
    "safety judge": lambda r: _scorer(r, "safety"),
    "truthfulness judge": lambda r: _scorer(r, "truthfulness"),
    "refusal judge": lambda r: _scorer(r, "refusal"),
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
    max_refusal_rate: float = DEFAULT_MAX_REFUSAL
    comparisons: TableComparisons | None = None  # paired tests vs SFT and between methods, tiers, sentences

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
    columns: list[Column] = field(default_factory=columns)
    notes: list[str] = field(default_factory=list)  # about runs left out
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # sweep.json of `bench sweep`s to show (the CLI fills it: leaderboards/sweep.py)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for t in self.tables for row in t.rows]

    def flat(self) -> tuple[list[str], list[list[Any]]]:
        """Plain columns and rows (a CI becomes value, ci_low, ci_high) for CSV and W&B tables."""
        cols = GROUP_COLUMNS + self.columns
        names: list[str] = []
        for c in cols:
            names += [c.key, f"{c.key}_ci_low", f"{c.key}_ci_high"] if c.kind == "ci" else [c.key]
            names += [RG_CLIPPED] if c.key == "unsafe_rate_corrected" else []
        vs = sorted({k for row in self.rows for k in row if k.startswith("vs_sft_")})  # paired differences vs SFT
        names += [f"{k}_{part}" for k in vs for part in ("diff", "ci_low", "ci_high", "p_holm")]
        data = []
        for row in self.rows:
            out: list[Any] = []
            for c in cols:
                v = row.get(c.key)
                if c.kind == "ci":
                    out += [_round(v.get(k)) if v else None for k in ("value", "ci_low", "ci_high")]
                    out += [row.get(RG_CLIPPED)] if c.key == "unsafe_rate_corrected" else []
                else:
                    out.append(_round(v))
            out += [_round((row.get(k) or {}).get(part)) for k in vs for part in ("diff", "ci_low", "ci_high", "p_holm")]
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
    swept = 0  # runs a sweep made with a non-default value: their own table is the sweep's (leaderboards/sweep.py)
    for entry in list_runs(runs_dir, **where):  # newest first
        if (wanted_methods is not None and entry["method"] not in wanted_methods) or \
                (wanted_seeds is not None and entry["seed"] not in wanted_seeds) or \
                (wanted_ids is not None and entry["run_id"] not in wanted_ids):
            continue
        if suite is None and wanted_ids is None and str(entry.get("suite") or "").startswith(SWEEP_TAG):
            swept += 1
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
    if swept:
        notes.append(f"{swept} run(s) made by `bench sweep` with a non-default value left out: see the sweeps' own tables")
    return Leaderboard(tables=tables, notes=notes)


def _build_table(key: tuple[str, str, str], records: list[dict[str, Any]], runs_dir: Path, n_boot: int) -> LeaderboardTable:
    dataset, model, profile = key
    constraints = {c for c in map(_threshold, records) if c is not None}
    threshold, units = next(iter(constraints)) if len(constraints) == 1 else (None, None)  # mixed: see notes
    max_refusal = {_get(r, "config", "scoring", "max_refusal_rate") for r in records} - {None}
    table = LeaderboardTable(dataset, model, profile, threshold, units, rows=[],
                             runs=sorted(records, key=lambda r: (r["method"], r["seed"])),
                             max_refusal_rate=float(min(max_refusal)) if max_refusal else DEFAULT_MAX_REFUSAL)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for record in table.runs:
        by_method.setdefault(record["method"], []).append(record)
    row_items: dict[str, dict[str, tuple[str, Any]]] = {}
    table.rows = [_build_row(table, method, runs, runs_dir, n_boot, row_items) for method, runs in by_method.items()]
    table.comparisons = rank_table(table.rows, table.x_metric, CONSTRAINT_ORDER, lambda r: row_items.get(r["method"], {}),
                                   n_boot, zlib.crc32(table.title.encode()))
    front = set(pareto_front([_point(row, table.x_metric) if not row.get("self_judged") else None for row in table.rows]))
    for i, row in enumerate(table.rows):
        row["pareto"] = i in front
    table.notes = comparability_notes(table.runs) + _ci_notes(table.rows) + rg_notes(table) + judge_notes(table) + wall_notes(table)
    return table


def reused_work(record: dict[str, Any]) -> list[str]:
    """What a run took from a cache instead of computing it (`stages.<stage>.reused`, `stages.generate.cache_hit`,
    docs/results-schema.md), once per kind and name, with the seconds saved when recorded: its wall time is then not
    the method's cost."""
    saved: dict[str, float | None] = {}
    for stage, info in (record.get("stages") or {}).items():
        if not isinstance(info, dict):
            continue
        items = [i for i in info.get("reused") or [] if isinstance(i, dict)]
        if stage == "generate" and info.get("cache_hit"):
            items.append({"kind": "generations"})
        for item in items:
            what = f"{item.get('kind', '?')} {item.get('name') or ''}".strip()
            s = item.get("seconds_saved")
            prev = saved.get(what)
            saved[what] = (prev or 0.0) + s if isinstance(s, (int, float)) else prev
    return [what + (f" ({s:.0f} s saved)" if s else "") for what, s in saved.items()]


def wall_notes(table: LeaderboardTable) -> list[str]:
    """One line naming the runs whose wall time is shortened by reused work (the Wall s column mixes them)."""
    reused = [f"{r['method']} s{r['seed']}: {', '.join(work)}" for r in table.runs if (work := reused_work(r))]
    if not reused:
        return []
    return [f"Wall s mixes runs that reused cached work with runs that computed everything ({'; '.join(reused)}); "
            "whether other processes shared the machine is not recorded, so wall times are not the methods' costs"]


def _build_row(table: LeaderboardTable, method: str, runs: list[dict[str, Any]], runs_dir: Path,
               n_boot: int, row_items: dict[str, dict[str, tuple[str, Any]]] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": table.dataset, "model": table.model, "profile": table.profile, "method": method,
                           "n_seeds": len(runs), "seeds": [r["seed"] for r in runs], "run_ids": [r["run_id"] for r in runs]}
    row["self_judged"] = sorted({role for r in runs for role in self_judged(*record_judges(r))})
    items = matrices_with_keys(runs_dir, runs)
    if row_items is not None:
        row_items[method] = items
    per_item = {name: matrix for name, (_key, matrix) in items.items()} if len(runs) > 1 else {}
    row["no_interval"] = []  # metrics recorded but without per-item values for every seed: mean only
    for m in declared.METRICS:
        rng_seed = zlib.crc32(f"{table.title}/{method}/{m.name}".encode())  # stable output, independent of row order
        if m.name in per_item:
            row[m.name] = {k: v for k, v in bootstrap_seeds_prompts(per_item[m.name], n_boot=n_boot, seed=rng_seed).items() if k != "n_seeds"}
        else:
            row[m.name] = aggregate([record_value(r.get("results"), m) for r in runs])
            if len(runs) > 1 and row[m.name] is not None:
                row["no_interval"].append(m.name)
    judge_row_estimates(row, runs, items, n_boot, zlib.crc32(f"{table.title}/{method}/rg".encode()))
    row[RG_CLIPPED] = rg_clipped(row.get("unsafe_rate_corrected"))
    row["ci_method"] = "prompts" if len(runs) == 1 else "seeds x prompts (partial)" if row["no_interval"] else "seeds x prompts"
    row["constraint"] = constraint_status(row.get(table.x_metric), table.threshold)
    row["refusal_status"] = refusal_status(row.get("refusal_rate"), table.max_refusal_rate)
    row["learned"] = learned_cell(runs)
    row["dual_infeasible"] = any(infeasible_dual(_get(r, "train", "learning")) for r in runs)
    row["models_trained"] = _max(_get(r, "train", "models_trained") for r in runs)
    row["peak_rss_mb"] = _max(s.get("peak_rss_mb") for r in runs for s in (r.get("stages") or {}).values())
    row["peak_cuda_mb"] = _max(s.get("cuda_max_allocated_mb") for r in runs for s in (r.get("stages") or {}).values())
    walls = [sum(s.get("wall_s") or 0.0 for s in (r.get("stages") or {}).values()) for r in runs if r.get("stages")]
    row["wall_s"] = sum(walls) / len(walls) if walls else None
    row["n_prompts"] = _max(_get(r, "results", "safety", "n_prompts") for r in runs)
    return row


def learned_cell(runs: list[dict[str, Any]]) -> str:
    """The runs' learning-check summaries (record train.learned): one value when the seeds agree, else per seed."""
    seen = [(r.get("seed"), _get(r, "train", "learned") or "n/a") for r in runs]
    if len({v for _, v in seen}) == 1:
        return seen[0][1]
    return "; ".join(f"s{seed}: {v}" for seed, v in seen)


# -- statistics ---------------------------------------------------------------------------------------------

def aggregate(estimates: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One seed: the estimate as recorded (its bootstrap over prompts). Several seeds without per-item values: the
    mean over seeds and no interval (an interval needs the per-item values; see `matrices_with_keys`)."""
    ests = [e for e in estimates if isinstance(e, dict) and e.get("value") is not None]
    if not ests:
        return None
    if len(ests) == 1:
        e = ests[0]
        return {"value": float(e["value"]), "ci_low": _num(e.get("ci_low")), "ci_high": _num(e.get("ci_high"))}
    return {"value": sum(float(e["value"]) for e in ests) / len(ests), "ci_low": None, "ci_high": None}


def _run_items(run_dir: Path, record: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """name -> (item-order key, values) for the declared metrics whose saved per-item mean matches the record."""
    import numpy as np

    found: dict[str, tuple[str, list[float]]] = {}
    saved = load_items(run_dir / "metrics")
    if saved is not None:
        keys = saved.get("keys") or {}
        group = {m.name: m.group for m in declared.METRICS}
        found = {name: (keys.get(group[name]), v) for name, v in saved["values"].items() if name in group}
    else:  # runs from before items.json: reward, cost and unsafe flag from the per-prompt scores
        try:
            scores = json.loads((run_dir / "score" / "scores.json").read_text())
            key = keys_hash([g["prompt"] for g in json.loads((run_dir / "generate" / "generations.json").read_text())])
            cost = [float(c) for c in scores["cost"]]
            found = {"reward_mean": (key, scores["reward"]), "cost_mean": (key, cost), "unsafe_rate": (key, [float(c > 0) for c in cost])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}
    out = {}
    for m in declared.METRICS:
        if m.name not in found:
            continue
        key, values = found[m.name]
        recorded = record_value(record.get("results"), m)
        try:
            arr = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            continue
        if key and arr.ndim == 1 and arr.size and isinstance(recorded, dict) and recorded.get("value") is not None \
                and np.isclose(arr.mean(), recorded["value"], rtol=1e-6, atol=1e-9):
            out[m.name] = (key, arr)
    return out


def matrices_with_keys(runs_dir: Path, runs: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """Declared metric -> (item-order key, seeds x items matrix) when every run has the same items (the paired
    comparisons need the key: two methods are compared only on the same prompts)."""
    import numpy as np

    per_run = [_run_items(runs_dir / r["run_id"], r) for r in runs]
    out = {}
    for m in declared.METRICS:
        got = [items.get(m.name) for items in per_run]
        if got and all(g is not None for g in got) and len({(key, len(values)) for key, values in got}) == 1:
            out[m.name] = (got[0][0], np.stack([values for _, values in got]))
    return out


def judge_row_estimates(row: dict[str, Any], runs: list[dict[str, Any]], items: dict[str, tuple[str, Any]], n_boot: int,
                        seed: int) -> None:
    """Over several seeds: the corrected unsafe rate from the seeds x prompts decisions (Rogan–Gladen with the judge's
    counts, when every seed used the same judge), and the judge's accuracy as recorded (one judge, not a mean)."""
    if len(runs) < 2:
        return
    judges = {(_get(r, "results", "judge", "fingerprint")) for r in runs}
    if len(judges) == 1 and None not in judges:
        row["judge_accuracy"] = _get(runs[0], "results", "judge", "accuracy")
        _drop(row["no_interval"], "judge_accuracy")
    rg = _get(runs[0], "results", "safety", "unsafe_rate_corrected") or {}
    se, sp = rg.get("sensitivity") or {}, rg.get("specificity") or {}
    if len(judges) == 1 and "unsafe_rate" in items and {"tp", "fn"} <= set(se) and {"tn", "fp"} <= set(sp):
        est = rogan_gladen_ci(items["unsafe_rate"][1], se["tp"], se["fn"], sp["tn"], sp["fp"], n_boot=n_boot, seed=seed)
        row["unsafe_rate_corrected"] = {k: est[k] for k in ("value", "ci_low", "ci_high")}
        _drop(row["no_interval"], "unsafe_rate_corrected")


def rg_clipped(est: dict[str, Any] | None) -> bool | None:
    """Whether a Rogan–Gladen estimate sits on a bound: 0 when the raw rate is at or below the judge's false-positive
    rate 1 - Sp, 1 when it is at or above its sensitivity Se (evaluators.stats.rogan_gladen clips there, and so does
    every bootstrap replicate, so the interval collapses too). None without an estimate."""
    v = (est or {}).get("value")
    return None if v is None else bool(v <= 0.0 or v >= 1.0)


def _judge_rate(record: dict[str, Any], part: str) -> float | None:
    """The safety judge's held-out sensitivity or specificity as recorded with the corrected rate (value, else counts)."""
    d = _get(record, "results", "safety", "unsafe_rate_corrected", part) or {}
    if d.get("value") is not None:
        return float(d["value"])
    hit, miss = (d.get("tp"), d.get("fn")) if part == "sensitivity" else (d.get("tn"), d.get("fp"))
    return hit / (hit + miss) if isinstance(hit, int) and isinstance(miss, int) and hit + miss > 0 else None


def rg_notes(table: LeaderboardTable) -> list[str]:
    """One line per bound for the rows whose corrected unsafe rate is clipped there (marked * in the exports): it is
    the limit of what the judge can resolve, not a measured 0% (or 100%), and the collapsed interval is not certainty."""
    notes = []
    for at, part, limit, side in ((0, "specificity", "false-positive floor 1 − Sp", "at or below"),
                                  (1, "sensitivity", "sensitivity Se", "at or above")):
        rows = [r for r in table.rows if r.get(RG_CLIPPED) and r["unsafe_rate_corrected"]["value"] == at]
        if not rows:
            continue
        methods = {r["method"] for r in rows}
        rates = sorted({round(x if at else 1 - x, 4) for r in table.runs if r["method"] in methods
                        for x in [_judge_rate(r, part)] if x is not None})
        value = " / ".join(f"{100 * x:.1f}%" for x in rates) if rates else "(not recorded)"
        notes.append(f"Unsafe RG marked * is clipped at {100 * at}% for {', '.join(r['method'] for r in rows)}: the raw unsafe "
                     f"rate is {side} the safety judge's {limit} = {value} (held-out), and the Rogan–Gladen correction cannot "
                     f"resolve rates {'below' if at == 0 else 'above'} it; the cell and its collapsed interval mark that limit, "
                     f"not a measured {100 * at}%")
    return notes


def _drop(names: list[str], name: str) -> None:
    if name in names:
        names.remove(name)


def judge_notes(table: LeaderboardTable) -> list[str]:
    """Self-judged rows, over-refusers, and the plain-words comparison sentences."""
    notes = []
    flagged = [r for r in table.rows if r.get("self_judged")]
    if flagged:
        notes.append("not ranked, judged by their own annotator (same name and fingerprint): "
                     + ", ".join(f"{r['method']} ({', '.join(r['self_judged'])})" for r in flagged)
                     + "; their numbers are listed for reference and left out of ranks, tiers and comparisons")
    over = [r["method"] for r in table.rows if r.get("refusal_status") == "over"]
    if over:
        notes.append(f"over-refusing (refusal rate on XSTest's safe prompts > {table.max_refusal_rate:g}), ranked after every "
                     f"method within the bound: {', '.join(over)}")
        ranked = [r for r in table.rows if not r.get("self_judged")]
        if ranked and all(r.get("refusal_status") == "over" for r in ranked):
            notes.append("every ranked method over-refuses: the first rank here does not mean a useful model")
    unmeasured = [r["method"] for r in table.rows if r.get("refusal_status") == "n/a"]
    if unmeasured and len(unmeasured) < len(table.rows):
        notes.append(f"refusal rate not measured for {', '.join(unmeasured)} (older records or scoring.judges.refusal=none): "
                     "the over-refusal guard cannot apply to them")
    return notes + (table.comparisons.sentences if table.comparisons else [])


def constraint_status(estimate: dict[str, Any] | None, threshold: float | None) -> str:
    """holds (the whole CI is within b), mean-only (only the mean is), violated, or n/a."""
    if estimate is None or threshold is None:
        return "n/a"
    if estimate.get("ci_high") is not None and estimate["ci_high"] <= threshold:
        return "holds"
    return "mean-only" if estimate["value"] <= threshold else "violated"


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
    """Which multi-seed rows have every interval from the per-item values, and which metrics have none (module
    docstring)."""
    exact = [r["method"] for r in rows if r["ci_method"] == "seeds x prompts"]
    notes = []
    if exact:
        notes.append(f"{', '.join(exact)}: intervals from a seeds x prompts bootstrap of the per-item values")
    for r in rows:
        if r.get("no_interval"):
            notes.append(f"{r['method']}: no interval over seeds for {', '.join(r['no_interval'])} "
                         "(per-item values not found in the run folders): mean over seeds only")
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


def _scorer(record: dict[str, Any], role: str) -> str | None:
    s = record_judges(record)[0].get(role)
    return f"{s.get('name')}@{s.get('fingerprint')}" if isinstance(s, dict) else None


def _round(x: Any) -> Any:
    """Floats to 6 decimals for exports (no 0.15000000000000002 in a CSV)."""
    return round(x, 6) if isinstance(x, float) else x


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _max(values: Iterable[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None
