"""`bench suite` (run a grid of methods x seeds, then rank them) and `bench leaderboard` (rank what the store holds).

Both are added to the main Typer app by `register(app)`. Local files are always written before anything goes to
W&B, and a W&B failure is a warning, never a lost result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from harness.errors import BenchError

WANDB_MODES = ("offline", "online", "disabled")
# Seeds of `bench suite` when --seeds is not given: three, so the leaderboard's intervals and paired tests carry the
# seed-to-seed variation (README "Reading the results"); the tiny test profile keeps one.
DEFAULT_SEEDS = "0,1,2"
PROFILE_SEEDS = {"tiny": "0"}


def register(app: typer.Typer) -> None:
    app.command("suite")(suite)
    app.command("sweep")(sweep)
    app.command("leaderboard")(leaderboard)


def execute_run(cfg: Any) -> dict[str, Any]:
    """One run of the grid (train -> generate -> score -> metrics, resuming finished stages). Tests patch this."""
    from harness.runs import run

    return run(cfg)


# -- bench suite -----------------------------------------------------------------------------------------------

def suite(
    methods: str = typer.Option(..., "--methods", help="Comma-separated method names, or 'all' for every registered method."),
    dataset: str = typer.Option("pku-saferlhf", "--dataset", help="Dataset every run trains and evaluates on."),
    profile: str = typer.Option("cpu", "--profile", help="Config profile: tiny | cpu | cpu-long | gpu | a YAML file."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: 0,1,2; the tiny profile: 0)."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model (default: the profile's)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable), applied to every run."),
    wandb: Optional[str] = typer.Option(None, "--wandb", help="offline | online | disabled (default: the profile's wandb.mode)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where runs and the store live."),
    suite_id: Optional[str] = typer.Option(None, "--suite-id", help="W&B group and store tag (default: derived from the grid, so a rerun resumes it)."),
    executor: str = typer.Option("local", "--executor", help="local (one run after the other, in this process) | ray (one Ray task per run)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: join this cluster (e.g. auto, ray://head:10001); default: a local Ray instance."),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", help="With --address: seconds to wait for the cluster before giving up (exit 2)."),
) -> None:
    """Run every (method, seed) of a grid, then print and save the leaderboard.

    `--executor local` (default) runs the grid in this process; `--executor ray` makes each run a Ray task with
    the profile's `resources` (CPUs, GPUs, memory), in parallel where they fit. Finished stages are skipped, so
    rerunning a suite resumes it (also after the driver was killed). A failing run is recorded and the suite goes
    on; the exit code is 1 if any run failed. The runs form one W&B group, and the suite adds a leaderboard run.
    """
    from rich.console import Console

    from harness.config import load_config
    from leaderboards import render
    from leaderboards.sweep import find_sweeps
    from leaderboards.table import build_leaderboard

    from harness.errors import check_folder
    from harness.executors import EXECUTORS, check_address, check_timeout, run_local, run_ray

    console = Console()
    if executor not in EXECUTORS:
        raise BenchError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise BenchError("--address needs --executor ray")
    check_timeout(connect_timeout, "--connect-timeout")
    check_folder(runs_dir, "--runs-dir")
    if address:
        check_address(address, connect_timeout)  # before the suite's folder exists: a wrong address leaves nothing behind
    names = parse_methods(methods)
    seed_list = parse_seeds(seeds if seeds is not None else PROFILE_SEEDS.get(Path(profile).stem, DEFAULT_SEEDS))
    _check_mode(wandb)
    suite_id = suite_id or default_suite_id(dataset, profile, model, names, seed_list, overrides)
    extra = {"wandb.mode": wandb} if wandb else {}
    # Build every config first: a bad --set fails before hours of training, not after.
    grid = [(m, s, load_config(profile, overrides, method=m, dataset=dataset, model=model, seed=s,
                               runs_dir=str(runs_dir), suite=suite_id, **extra)) for m in names for s in seed_list]
    from harness.config import method_config
    from harness.registries import METHODS

    for m, _, cfg in {cell[0]: cell for cell in grid}.values():  # each method's own section too (--set method.X=...)
        method_config(METHODS.get(m).config_class, cfg)
    cfg0 = grid[0][2]
    out_dir = Path(cfg0.runs_dir) / "suites" / suite_id
    out_dir.mkdir(parents=True, exist_ok=True)

    def started(i: int, cell: tuple) -> None:
        verb = "submitted" if executor == "ray" else ""
        console.rule(f"[bold]{suite_id}[/]  [{i}/{len(grid)}]  {cell[0]}  seed {cell[1]} {verb}".rstrip())

    errors_log = out_dir / "errors.log"
    if executor == "ray":
        results = run_ray(grid, address, on_start=started, errors_log=errors_log, connect_timeout=connect_timeout)
    else:
        results = run_local(grid, lambda cfg: execute_run(cfg), on_start=started, errors_log=errors_log)
    outcomes: list[dict[str, Any]] = []
    for o in results:
        outcomes.append(o)
        if o["status"] == "failed":
            console.print(f"[red]{o['method']} seed {o['seed']} failed:[/] {o['error']}")
        elif executor == "ray":
            console.print(f"[green]{o['method']} seed {o['seed']} finished[/] ({o['run_id']})")
    order = {(m, s): i for i, (m, s, _) in enumerate(grid)}
    outcomes.sort(key=lambda o: order[(o["method"], o["seed"])])

    # Exactly the runs of this grid: another finished run with the same (method, seed) but other overrides may be newer.
    lb = build_leaderboard(cfg0.runs_dir, run_ids=[o["run_id"] for o in outcomes if o.get("run_id")])
    lb.sweeps = find_sweeps(cfg0.runs_dir)
    files = {fmt: render.write(lb, fmt, out_dir / f"leaderboard.{fmt}") for fmt in ("md", "csv", "html")}
    summary = {"suite": suite_id, "dataset": dataset, "profile": profile, "model": cfg0.model, "methods": names,
               "seeds": seed_list, "overrides": list(overrides), "runs": outcomes,
               "files": {k: str(v) for k, v in files.items()}}
    (out_dir / "suite.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")

    render.print_leaderboard(lb, console)
    console.print(f"Saved {', '.join(str(p) for p in files.values())}")
    if cfg0.wandb.mode != "disabled":
        tracker = _tracker(cfg0.wandb.mode, cfg0.runs_dir, run_name=f"{suite_id}-leaderboard", group=suite_id,
                           config={k: summary[k] for k in ("suite", "dataset", "profile", "model", "methods", "seeds", "overrides")},
                           project=cfg0.wandb.project, entity=cfg0.wandb.entity)
        log_leaderboard(tracker, lb, artifact=files["html"], name=f"leaderboard-{suite_id}")

    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(grid)} run(s) failed[/] (tracebacks in {out_dir / 'errors.log'}):")
        for o in failed:
            console.print(f"  {o['method']} seed {o['seed']}: {o['error']}")
        raise typer.Exit(1)


# -- bench sweep ------------------------------------------------------------------------------------------------

def sweep(
    method: str = typer.Option(..., "--method", "-m", help="The method to sweep (`bench list methods`), e.g. pddpo."),
    over: str = typer.Option(..., "--over", help="KEY=V1,V2,...: one numeric config field and its values, e.g. "
                             "method.fixed_lambda=0,1,2,5,10 (PD-DPO's fixed λ) or method.threshold=0.1,0.2,0.3 (PD-DPO dual loop's b)."),
    dataset: str = typer.Option("pku-saferlhf", "--dataset", help="Dataset every run trains and evaluates on."),
    profile: str = typer.Option("cpu", "--profile", help="Config profile: tiny | cpu | cpu-long | gpu | a YAML file."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds per value (each value's CI then also covers seeds)."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model (default: the profile's)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable), applied to every run."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where runs, the store and sweeps/<id>/ live."),
    sweep_id: Optional[str] = typer.Option(None, "--sweep-id", help="Folder name and store tag (default: derived from the sweep, so a rerun resumes it)."),
) -> None:
    """Run METHOD once per value (and seed) of one config field, then write the reward / unsafe-rate frontier.

    Every config is built and checked before the first run. Runs resume finished stages, and trainings shared by
    several values (PD-DPO's stage 1) come from the store of finished trainings. Writes sweep.{json,csv,md,html,png}
    under RUNS_DIR/sweeps/<id>/; `bench leaderboard` links them. Exit code 1 if a run failed (the others are kept).
    """
    from rich.console import Console

    from harness.errors import check_folder
    from leaderboards import sweep as sw

    console = Console()
    check_folder(runs_dir, "--runs-dir")
    names = parse_methods(method)
    if len(names) != 1:
        raise BenchError(f"--method {method!r}: a sweep runs one method (use `bench suite` for several)")
    name = names[0]
    key, values = sw.parse_over(over)
    if any(o.partition("=")[0].strip() == key for o in overrides):
        raise BenchError(f"--set {key}=... and --over {key}=... both set the swept field; drop the --set")
    seed_list = parse_seeds(seeds)
    sid = sweep_id or sw.default_sweep_id(name, key, values, dataset, profile, model, seed_list, list(overrides))
    grid = sw.build_grid(name, key, values, dataset=dataset, profile=profile, model=model, seeds=seed_list,
                         overrides=list(overrides), runs_dir=runs_dir, suite=sw.store_tag(sid))
    cfg0 = grid[0][2]
    out_dir = Path(cfg0.runs_dir) / "sweeps" / sid
    out_dir.mkdir(parents=True, exist_ok=True)
    result = sw.Sweep(sid, name, key, values, dataset, cfg0.model, cfg0.profile, seed_list, list(overrides))
    field_name = key.split(".")[-1]

    def started(i: int, n: int, value: float, seed: int) -> None:
        console.rule(f"[bold]{sid}[/]  [{i}/{n}]  {name}  {field_name}={value:g}  seed {seed}")

    sw.run_sweep(result, grid, lambda cfg: execute_run(cfg), on_start=started, errors_log=out_dir / "errors.log")
    sw.aggregate(result, Path(cfg0.runs_dir), n_boot=cfg0.scoring.bootstrap)
    files = sw.write(result, out_dir)
    head, rows = sw.table_rows(result)
    from rich.table import Table

    t = Table(*head[:-1], title=result.title)  # run ids: in sweep.md / sweep.json
    for row in rows:
        t.add_row(*row[:-1])
    console.print(t)
    console.print(f"Saved {', '.join(str(p) for p in files.values())}")
    failed = [f"{field_name}={p.value:g} {f}" for p in result.points for f in p.failed]
    if failed:
        console.print(f"[red]{len(failed)} of {len(grid)} run(s) failed[/] (tracebacks in {out_dir / 'errors.log'}):")
        for f in failed:
            console.print(f"  {f}")
        raise typer.Exit(1)


# -- bench leaderboard ------------------------------------------------------------------------------------------

def leaderboard(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this dataset."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where the store (bench.sqlite) lives."),
    fmt: str = typer.Option("table", "--format", help="table (terminal) | md | csv | html | json (everything: rows, CIs, tiers, paired tests, notes, judges)."),
    wide: bool = typer.Option(False, "--wide", help="With --format table: every column (default: a compact view of the headline metrics that fits 100 columns)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the export here instead of stdout."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Only this profile."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Only runs tagged with this suite id."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots-dir", help="Also write each table's frontier and λ figures as PNGs here, and copy each sweep's figure and csv (the md page links the copies)."),
    wandb: str = typer.Option("disabled", "--wandb", help="offline | online | disabled: also log the leaderboard as a W&B table."),
    wandb_sync: bool = typer.Option(False, "--wandb-sync", help="Upload every offline W&B run under --runs-dir (`wandb sync`), "
                                    "e.g. after runs that fell back to offline because the server was down."),
) -> None:
    """Rank the finished runs in the store: one table per (dataset, model, profile); see leaderboards/README.md."""
    from harness.errors import check_folder
    from leaderboards import render
    from leaderboards.sweep import find_sweeps
    from leaderboards.table import build_leaderboard

    check_folder(runs_dir, "--runs-dir", must_exist=True, hint="point --runs-dir at the folder `bench run` or `bench suite` wrote (default ./runs)")
    if output is not None:
        if output.is_dir():
            raise BenchError(f"--output {output} is a folder: give a file path, e.g. {output / 'leaderboard.md'}")
        check_folder(output.parent, "--output's folder")
    if plots_dir is not None:
        check_folder(plots_dir, "--plots-dir")
    if wandb_sync:
        from leaderboards.wandb_tracker import sync_offline

        synced, failed = sync_offline(runs_dir)
        typer.echo(f"wandb sync: {synced} offline run(s) uploaded" + (f", {failed} failed (see above; retry later)" if failed else ""))

    if fmt not in render.FORMATS:
        raise BenchError(f"--format {fmt!r}: choose one of {', '.join(render.FORMATS)}")
    if fmt == "table" and output is not None:
        raise BenchError("--output needs --format md, csv, html or json")
    if wide and fmt != "table":
        raise BenchError(f"--wide shapes the terminal table; --format {fmt} already holds every column: drop --wide")
    _check_mode(wandb)
    lb = build_leaderboard(runs_dir, dataset=dataset, model=model, profile=profile, suite=suite)
    lb.sweeps = find_sweeps(runs_dir)
    if plots_dir is not None:  # the sweeps' figures beside the tables' (the Markdown page then links these copies)
        for path in render.copy_sweep_figures(lb.sweeps, plots_dir):
            typer.echo(f"wrote {path}")
    if fmt == "table":
        render.print_leaderboard(lb, wide=wide)
    elif output is not None:
        typer.echo(f"wrote {render.write(lb, fmt, output)}")
    else:
        typer.echo(render.render(lb, fmt), nl=False)
    if plots_dir is not None:
        from leaderboards.plots import save_figures

        for table in lb.tables:
            for path in save_figures(table, plots_dir):
                typer.echo(f"wrote {path}")
    if wandb != "disabled":
        tracker = _tracker(wandb, runs_dir, run_name="leaderboard", group=suite,
                           config={"dataset": dataset, "model": model, "profile": profile, "suite": suite})
        log_leaderboard(tracker, lb, artifact=output, name="leaderboard")


# -- helpers ----------------------------------------------------------------------------------------------------

def parse_methods(spec: str) -> list[str]:
    from harness.registries import METHODS

    names = METHODS.names() if spec.strip() == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise BenchError("--methods is empty: name methods (see `bench list methods`) or 'all'")
    for name in names:
        if name not in METHODS:
            METHODS.get(name)  # raises a BenchError with "did you mean"
    return list(dict.fromkeys(names))


def parse_seeds(spec: str) -> list[int]:
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"--seeds {spec!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise BenchError("--seeds is empty: e.g. --seeds 0,1,2")
    return list(dict.fromkeys(seeds))


def default_suite_id(dataset: str, profile: str, model: str | None, methods: list[str], seeds: list[int],
                     overrides: list[str]) -> str:
    """Stable for the same grid, so rerunning a suite resumes it under the same W&B group."""
    grid = json.dumps([dataset, profile, model, sorted(methods), sorted(seeds), sorted(overrides)])
    return f"suite-{dataset}-{Path(profile).stem}-{hashlib.sha256(grid.encode()).hexdigest()[:8]}"


def log_leaderboard(tracker: Any, lb: Any, *, artifact: Path | None, name: str) -> None:
    """The leaderboard as a W&B table, headline numbers in the summary, the export file as an artifact."""
    columns, rows = lb.flat()
    tracker.log_table("leaderboard", columns, rows)
    for row in lb.rows:
        prefix = "/".join((row["dataset"], Path(row["model"]).name, row["profile"], row["method"]))
        tracker.set_summary(f"{prefix}/rank", row["rank"])
        tracker.set_summary(f"{prefix}/constraint", row["constraint"])
        for key in ("reward_mean", "cost_mean", "unsafe_rate"):
            if row.get(key):
                tracker.set_summary(f"{prefix}/{key}", row[key]["value"])
    if artifact is not None and Path(artifact).exists():
        tracker.log_artifact(name, str(artifact), type="leaderboard")
    tracker.finish()


def _tracker(mode: str, runs_dir: str | Path, **kw: Any) -> Any:
    from leaderboards.wandb_tracker import WandbTracker

    return WandbTracker(mode=mode, job_type="leaderboard", dir=os.environ.get("WANDB_DIR") or runs_dir, **kw)


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in WANDB_MODES:
        raise BenchError(f"--wandb {mode!r}: choose one of {', '.join(WANDB_MODES)}")
