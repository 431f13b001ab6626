"""`bench sweep`: one method over several values of one numeric config field, and the frontier the values trace.

    bench sweep --method pddpo --over method.fixed_lambda=0,1,2,5,10 --profile cpu --seeds 0

runs the method once per (value, seed) through the same `harness.runs.run` as `bench suite` (finished stages and
finished trainings are reused: the store of finished trainings shares e.g. PD-DPO's stage 1 across every λ), then
aggregates each value's seeds exactly as a leaderboard row (`leaderboards.table.build_leaderboard` on that value's
runs: the run's prompt bootstrap for one seed, the seeds x prompts bootstrap for several) and writes, under
`<runs_dir>/sweeps/<sweep id>/`:

- `sweep.json` (the points, with every estimate and run id), `sweep.csv`, `sweep.md` and `sweep.html`;
- `sweep.png`: mean reward against the constraint's metric (unsafe rate or mean cost) with 95% CIs as error bars,
  the points joined in value order, and each metric against the swept value.

`bench leaderboard` and `bench suite` link (md) or embed (html) every sweep found under the same runs dir whose
(dataset, model, profile) matches a table. Runs of a sweep keep the method's name but carry the sweep id as their
store tag, so the main leaderboard leaves them out (its notes count them) instead of showing, say, the λ = 20 run as
`pddpo-fixed`; the value equal to the method's own setting is an ordinary run and stays. The sweep's own table is
where the values sit side by side.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from harness.errors import BenchError
from leaderboards.table import SWEEP_TAG

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILES = ("sweep.json", "sweep.csv", "sweep.md", "sweep.html", "sweep.png")


@dataclass
class SweepPoint:
    """One value of the swept field: its runs and their aggregate (a leaderboard row)."""

    value: float
    run_ids: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "seed N: error"
    row: dict[str, Any] | None = None  # the leaderboard row of this value's runs (None: no finished run)


@dataclass
class Sweep:
    sweep_id: str
    method: str
    key: str  # as given (method.X or a dotted RunConfig key)
    values: list[float]
    dataset: str
    model: str
    profile: str
    seeds: list[int]
    overrides: list[str]
    threshold: float | None = None
    units: str | None = None  # unsafe_rate | mean_cost
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def x_metric(self) -> str:
        from leaderboards.table import UNITS_METRIC

        return UNITS_METRIC.get(self.units or "", "unsafe_rate")

    @property
    def field_name(self) -> str:
        return self.key.split(".")[-1]

    @property
    def title(self) -> str:
        from leaderboards.render import sweep_title

        return sweep_title(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """What sweep.json holds (and what the leaderboard page reads back)."""
        return {**asdict(self), "x_metric": self.x_metric}


# -- parsing and the grid ---------------------------------------------------------------------------------------

def parse_over(spec: str) -> tuple[str, list[float]]:
    """`method.fixed_lambda=0,1,2.5` -> ("method.fixed_lambda", [0, 1, 2.5]); numbers only, at least two, no repeats."""
    key, sep, raw = spec.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise BenchError(f"--over {spec!r}: expected KEY=V1,V2,..., e.g. --over method.fixed_lambda=0,1,2,5,10")
    values = []
    for part in raw.split(","):
        try:
            v = yaml.safe_load(part.strip())
        except yaml.YAMLError:
            v = None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BenchError(f"--over {key}: {part.strip()!r} is not a number; a sweep runs over one numeric field")
        values.append(v)
    if len(values) < 2 or len(set(values)) != len(values):
        raise BenchError(f"--over {key}: give at least two different values (got {raw!r})")
    return key, values


def default_sweep_id(method: str, key: str, values: list[float], dataset: str, profile: str, model: str | None,
                     seeds: list[int], overrides: list[str]) -> str:
    """Stable for the same sweep, so rerunning it resumes it (and reuses its folder)."""
    blob = json.dumps([method, key, values, dataset, Path(profile).stem, model, sorted(seeds), sorted(overrides)])
    return f"{SWEEP_TAG}{method}-{key.split('.')[-1]}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def store_tag(sweep_id: str) -> str:
    """The runs' store tag: the sweep id, prefixed when a `--sweep-id` lacks the prefix the leaderboard looks for."""
    return sweep_id if sweep_id.startswith(SWEEP_TAG) else SWEEP_TAG + sweep_id


def build_grid(method: str, key: str, values: list[float], *, dataset: str, profile: str, model: str | None,
               seeds: list[int], overrides: list[str], runs_dir: Path, suite: str) -> list[tuple[float, int, Any]]:
    """(value, seed, RunConfig) per cell, every config built and its method config checked first: a bad key or value
    fails here, before any training (the method's own range checks included, e.g. λ < 0).

    Runs are tagged with the sweep id (`suite`), which keeps them off the main leaderboard (`build_leaderboard`
    without a suite or run-id filter), except a value that leaves the run config as it is without `--over`: that run
    is the method's own and carries no sweep tag."""
    from harness.config import load_config, method_config
    from harness.registries import METHODS

    cls = METHODS.get(method)
    grid = []
    default_fp: dict[int, str] = {}  # seed -> fingerprint of the run without the swept override
    for v in values:
        for s in seeds:
            cfg = load_config(profile, [*overrides, f"{key}={v}"], method=method, dataset=dataset, model=model, seed=s,
                              runs_dir=str(runs_dir), suite=suite)
            if s not in default_fp:
                base = load_config(profile, list(overrides), method=method, dataset=dataset, model=model, seed=s, runs_dir=str(runs_dir))
                default_fp[s] = _resolved_fingerprint(base, method_config(cls.config_class, base))
            mcfg = method_config(cls.config_class, cfg)
            got = _resolved(cfg, mcfg, key)
            if _resolved_fingerprint(cfg, mcfg) == default_fp[s]:
                cfg.suite = None  # the method's own setting: an ordinary run, kept on the main leaderboard
            if isinstance(got, bool) or not isinstance(got, (int, float)) or float(got) != float(v):
                raise BenchError(f"--over {key}: the run config reads {got!r} for {v!r}; sweep a numeric field "
                                 f"(`bench list methods {method}` lists the method's fields)")
            grid.append((v, s, cfg))
    return grid


def _resolved_fingerprint(cfg: Any, mcfg: Any) -> str:
    """The run config's fingerprint with its method section as resolved (defaults filled in), so that
    `method.fixed_lambda=5` on `pddpo-fixed` (whose own λ is 5) counts as the method's own setting."""
    import dataclasses

    return dataclasses.replace(cfg, methods={cfg.method: dataclasses.asdict(mcfg)}).fingerprint()


def _resolved(cfg: Any, mcfg: Any, key: str) -> Any:
    parts = key.split(".")
    if parts[0] in ("method", "methods"):
        return getattr(mcfg, parts[-1], None)
    node: Any = cfg
    for p in parts:
        node = getattr(node, p, None)
    return node


# -- aggregation ------------------------------------------------------------------------------------------------

def aggregate(sweep: Sweep, runs_dir: Path, n_boot: int | None = None) -> Sweep:
    """Fill each point's row from its finished runs (one leaderboard table per value: the leaderboard's CIs, with
    `n_boot` resamples; the command passes the runs' `scoring.bootstrap`)."""
    from leaderboards.table import N_BOOT, build_leaderboard

    for point in sweep.points:
        if not point.run_ids:
            continue
        lb = build_leaderboard(runs_dir, run_ids=point.run_ids, n_boot=n_boot or N_BOOT)
        if lb.tables and lb.tables[0].rows:
            table = lb.tables[0]
            point.row = {k: v for k, v in table.rows[0].items() if not k.startswith("vs_")}
            if sweep.units is None and table.threshold is not None:
                sweep.threshold, sweep.units = table.threshold, table.units
    return sweep


# -- outputs ----------------------------------------------------------------------------------------------------

def table_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells: value, seeds, reward, unsafe rate, mean cost, constraint status, runs."""
    from leaderboards.render import sweep_table

    return sweep_table(sweep.as_dict())


def frontier_figure(sweep: Sweep) -> "Figure | None":
    """Left: reward against the constraint's metric, one point per value (95% CIs both ways), joined in value order,
    with b as a vertical line. Right: reward and the constraint's metric against the swept value."""
    from matplotlib.figure import Figure

    from leaderboards.plots import AXIS_LABELS, _err

    x_key = sweep.x_metric
    pts = [p for p in sweep.points if p.row and p.row.get("reward_mean") and p.row.get(x_key)]
    if not pts:
        return None
    fig = Figure(figsize=(11.0, 4.4), dpi=110, layout="constrained")
    left, right = fig.subplots(1, 2)
    xs = [p.row[x_key]["value"] for p in pts]
    ys = [p.row["reward_mean"]["value"] for p in pts]
    left.plot(xs, ys, color="tab:blue", lw=1, alpha=0.6, zorder=2)
    for p, x, y in zip(pts, xs, ys):
        left.errorbar(x, y, xerr=_err(p.row[x_key]), yerr=_err(p.row["reward_mean"]), fmt="o", capsize=3, ms=6,
                      color="tab:blue", zorder=3)
    (x0, x1), (y0, y1) = left.get_xlim(), left.get_ylim()  # after the error bars: the spans the labels live in
    spans = (abs(x1 - x0), abs(y1 - y0))
    for k, group in enumerate(_nearby_groups(xs, ys, spans)):  # one label per cluster of (nearly) coinciding points
        label = f"{sweep.field_name}={', '.join(f'{pts[i].value:g}' for i in group)}"
        left.annotate(label, (xs[group[0]], ys[group[0]]), xytext=(6, 6 + 10 * (k % 2)), textcoords="offset points", fontsize=8)
    if sweep.threshold is not None:
        left.axvline(sweep.threshold, color="tab:red", ls=":", lw=1.2, label=f"threshold b = {sweep.threshold:g}")
        left.legend(loc="best", fontsize=8)
    left.margins(x=0.2, y=0.15)
    left.set_xlabel(AXIS_LABELS[x_key])
    left.set_ylabel("mean reward (higher is better)")
    left.set_title(f"reward vs {x_key.replace('_', ' ')} over {sweep.field_name}", fontsize=10)
    left.grid(alpha=0.3)

    values = [p.value for p in pts]
    right.errorbar(values, ys, yerr=_stack(pts, "reward_mean"), fmt="o-", capsize=3, color="tab:blue", label="mean reward")
    right.set_xlabel(sweep.field_name)
    right.set_ylabel("mean reward", color="tab:blue")
    twin = right.twinx()
    twin.errorbar(values, xs, yerr=_stack(pts, x_key), fmt="s--", capsize=3, color="tab:red", label=x_key.replace("_", " "))
    twin.set_ylabel(x_key.replace("_", " "), color="tab:red")
    if sweep.threshold is not None:
        twin.axhline(sweep.threshold, color="tab:red", ls=":", lw=1)
    right.set_title(f"each metric against {sweep.field_name} (95% CIs)", fontsize=10)
    right.grid(alpha=0.3)
    fig.suptitle(sweep.title, fontsize=10)
    return fig


def _nearby_groups(xs: list[float], ys: list[float], spans: tuple[float, float], tol: float = 0.06) -> list[list[int]]:
    """Indices grouped greedily (in value order) when within `tol` of the first of a group on both axes, as shares of
    the axes' `spans`: points whose labels would print over one another share one label."""
    span_x, span_y = (v or 1.0 for v in spans)
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        for g in groups:
            if abs(x - xs[g[0]]) / span_x <= tol and abs(y - ys[g[0]]) / span_y <= tol:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _stack(pts: list[SweepPoint], key: str) -> list[list[float]]:
    """Asymmetric error bars (2 x n) from the points' CIs; 0 where a CI is missing."""
    from leaderboards.plots import _err

    bars = [_err(p.row[key]) or [[0.0], [0.0]] for p in pts]
    return [[b[0][0] for b in bars], [b[1][0] for b in bars]]


def to_markdown(sweep: Sweep, png: str = "sweep.png") -> str:
    head, rows = table_rows(sweep)
    lines = [f"# {sweep.title}", "", _settings_line(sweep), "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if i < 5 else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", f"![reward vs {sweep.x_metric} over {sweep.field_name}]({png})", "",
              "Brackets are 95% confidence intervals (one seed: bootstrap over prompts; several: seeds x prompts), as on "
              "the leaderboard.", ""]
    return "\n".join(lines)


def to_html(sweep: Sweep) -> str:
    from leaderboards.plots import data_uri
    from leaderboards.render import _CSS, sweep_table_html

    e = html.escape
    head, rows = table_rows(sweep)
    fig = frontier_figure(sweep)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(sweep.title)}</title><style>{_CSS}</style>",
             f"</head><body><h1>{e(sweep.title)}</h1><p>{e(_settings_line(sweep))}</p>", sweep_table_html(head, rows)]
    if fig is not None:
        parts.append(f"<div><img alt='reward vs {e(sweep.x_metric)} over {e(sweep.field_name)}' src='{data_uri(fig)}'></div>")
    parts.append("<p class='meta'>Brackets are 95% confidence intervals (one seed: bootstrap over prompts; several: seeds x "
                 "prompts), as on the leaderboard.</p></body></html>")
    return "\n".join(parts)


def to_csv(sweep: Sweep) -> str:
    from leaderboards.render import SWEEP_METRICS

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([sweep.key, "n_seeds", *[f"{m}{s}" for m in SWEEP_METRICS for s in ("", "_ci_low", "_ci_high")], "constraint", "run_ids"])
    for p in sweep.points:
        r = p.row or {}
        cells = [(r.get(m) or {}).get(k) for m in SWEEP_METRICS for k in ("value", "ci_low", "ci_high")]
        w.writerow([p.value, r.get("n_seeds", 0), *[None if c is None else round(c, 6) for c in cells], r.get("constraint"), " ".join(p.run_ids)])
    return buf.getvalue()


def _settings_line(sweep: Sweep) -> str:
    b = "" if sweep.threshold is None else f"; constraint {sweep.x_metric.replace('_', ' ')} <= b = {sweep.threshold:g}"
    extra = f"; overrides: {' '.join(sweep.overrides)}" if sweep.overrides else ""
    return f"Seeds {', '.join(map(str, sweep.seeds))}{b}{extra}."


def write(sweep: Sweep, out_dir: Path) -> dict[str, Path]:
    """Every output file (atomic writes); the PNG only when some value has a finished run."""
    from harness.io import atomic_path, write_json, write_text
    from leaderboards.plots import png_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "sweep.json", "csv": out_dir / "sweep.csv", "md": out_dir / "sweep.md", "html": out_dir / "sweep.html"}
    write_json(files["json"], sweep.as_dict())
    write_text(files["csv"], to_csv(sweep))
    write_text(files["md"], to_markdown(sweep))
    write_text(files["html"], to_html(sweep))
    fig = frontier_figure(sweep)
    if fig is not None:
        files["png"] = out_dir / "sweep.png"
        with atomic_path(files["png"]) as tmp:
            Path(tmp).write_bytes(png_bytes(fig))
    return files


# -- for the leaderboard page ------------------------------------------------------------------------------------

def find_sweeps(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished sweep under `<runs_dir>/sweeps/` (its sweep.json plus `dir`, the folder), oldest first; the CLI
    puts them in `Leaderboard.sweeps` and `leaderboards.render` shows those of each table's setting."""
    root = Path(runs_dir) / "sweeps"
    found = []
    for path in sorted(root.glob("*/sweep.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found.append({**data, "dir": str(path.parent)})
    return found


# -- the command's body -----------------------------------------------------------------------------------------

def run_sweep(sweep: Sweep, grid: list[tuple[float, int, Any]], execute: Callable[[Any], dict[str, Any]],
              on_start: Callable[[int, int, float, int], None] | None = None, errors_log: Path | None = None) -> Sweep:
    """Run every cell (in order, resuming finished stages), collecting each value's run ids and failures."""
    from harness.executors import run_local

    points = {v: SweepPoint(v) for v in sweep.values}
    cells = [(sweep.method, s, cfg) for _, s, cfg in grid]

    def started(i: int, cell: tuple) -> None:
        if on_start:
            on_start(i, len(grid), grid[i - 1][0], cell[1])

    for (v, s, _), o in zip(grid, run_local(cells, execute, on_start=started, errors_log=errors_log)):
        if o["status"] == "finished" and o.get("run_id"):
            points[v].run_ids.append(o["run_id"])
        else:
            points[v].failed.append(f"seed {s}: {o.get('error')}")
    sweep.points = [points[v] for v in sweep.values]
    return sweep
