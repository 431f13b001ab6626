"""`bench`: train and evaluate safe-alignment methods, inspect data, list runs, build leaderboards.

Heavy libraries (torch, transformers, vllm) are imported inside commands, never at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import BenchError, RunFailed

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
list_app = typer.Typer(help="List registered methods, datasets, scorers, generators or built-in models.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets: schema, folds, counts, label balance.", no_args_is_help=True)
app.add_typer(list_app, name="list")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

SetOpt = typer.Option(None, "--set", help="Override any config field: --set train.learning_rate=1e-5 --set method.num_iterations=2")


@app.callback()
def main(verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
         quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors and the result: no stage lines, no progress bars."),
         debug: bool = typer.Option(False, "--debug", help="On a failed run, print the traceback too (it is always in the run's run.log).")) -> None:
    global _DEBUG
    _DEBUG = debug
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[_rich_handler()])
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:
        os.environ["BENCH_QUIET"] = "1"
    global _QUIET
    _QUIET = quiet  # the stage lines follow -q itself; BENCH_QUIET alone (as the tests set it) quiets only the bars


_QUIET = False


def _rich_handler() -> logging.Handler:
    from rich.logging import RichHandler

    return RichHandler(console=err, show_path=False, show_time=False)


def _config(profile: str, overrides: list[str] | None, **fields):
    from harness.config import load_config

    return load_config(profile, overrides, **fields)


@app.command()
def run(
    method: str = typer.Option(None, "--method", "-m", help="Method name (`bench list methods`; default sft)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="pku-saferlhf | truthfulqa | hh-rlhf-harmless (default: the profile's)."),
    model: str = typer.Option(None, "--model", help="Hub id, local folder, smollm2-135m-instruct or tiny-random."),
    profile: str = typer.Option(None, "--profile", "-p", help="tiny | cpu | cpu-long | gpu, or a YAML file (default cpu)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the profile's, 0)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Read datasets from local copies (default $BENCH_DATA_DIR)."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where runs and bench.sqlite live (default ./runs)."),
    wandb: Optional[str] = typer.Option(None, "--wandb", help="offline (default) | online | disabled."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Generation backend: auto | hf | vllm."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Resume RUN_ID from its saved config (skips finished stages); "
                                         "--runs-dir and --wandb apply, options that would change the config are refused."),
    launcher: str = typer.Option("none", "--launcher", help="none | accelerate (multi-GPU / DeepSpeed)."),
    accelerate_config: str = typer.Option("ddp", "--accelerate-config", help="ddp (DDP; gloo on CPU) | zero2 | zero3 | a YAML path (with --launcher accelerate)."),
    num_processes: int = typer.Option(1, "--num-processes", help="Processes for --launcher accelerate."),
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Train METHOD, generate for the eval prompts, score, compute metrics. Re-running skips finished stages."""
    from harness import runs
    from harness.errors import check_folder

    if launcher not in ("none", "accelerate"):
        raise BenchError(f"unknown launcher '{launcher}': use none or accelerate")
    cores = os.cpu_count() or 1
    if not 1 <= num_processes <= cores:  # torch-elastic asserts on < 1; more processes than cores is a typo, not a plan
        raise BenchError(f"--num-processes {num_processes}: give 1 to {cores} (this machine's CPU cores; one process per GPU)")
    check_folder(runs_dir or Path("runs"), "--runs-dir")
    if data_dir is not None:
        check_folder(data_dir, "--data-dir")
    if launcher == "accelerate" and os.environ.get("ACCELERATE_PROCESS_ID") is None and "LOCAL_RANK" not in os.environ:
        command = accelerate_command(accelerate_config, num_processes, sys.argv[1:])
        if not resume:  # a DeepSpeed preset that disagrees with the run config fails here, not after the launch
            from harness.scaleout import check_preset, preset_path

            check_preset(preset_path(accelerate_config), _config(profile or "cpu", overrides, method=method or "sft", model=model, seed=seed))
        os.execvp(command[0], command)
    fields = {"method": method, "dataset": dataset, "model": model, "seed": seed, "data.data_dir": str(data_dir) if data_dir else None,
              "generation.backend": backend}
    if resume:
        cfg = resume_config(runs_dir or Path("runs"), resume, profile, overrides, fields, wandb)
    else:
        fields.update({"runs_dir": str(runs_dir) if runs_dir else None, "wandb.mode": wandb})
        cfg = _config(profile or "cpu", overrides, **{**fields, "method": method or "sft"})
    execute(cfg)


def execute(cfg, title: str = "run") -> None:
    """Check every input (`runs.preflight`), run the stages with one line each, print the record (`bench run`, `bench eval`)."""
    from harness import runs

    from harness.progress import StageLines, stage_eta

    plan = runs.preflight(cfg)  # every input checked before any output or work
    quiet = _QUIET
    rid = runs.run_id(cfg)
    if not quiet:
        what = f"checkpoint={cfg.method_section()['checkpoint']} " if title == "eval" else ""
        console.print(f"[bold]{title}[/] {rid}  method={cfg.method} {what}dataset={cfg.dataset} model={cfg.model} "
                      f"profile={cfg.profile} seed={cfg.seed}  (log: {Path(cfg.runs_dir) / rid / runs.RUN_LOG})")
    prefix = rid[: rid.rindex("-s") + 2]  # <method>-<dataset>-<profile>-s: earlier runs' stage times give the ETA
    lines = StageLines(eta=lambda stage: stage_eta(cfg.runs_dir, prefix, stage), quiet=quiet)
    try:
        record = runs.run(cfg, on_stage=lines, plan=plan)
    except BaseException:
        lines.close(failed=True)
        raise
    lines.close()
    if record is not None:  # None: a non-zero rank of a data-parallel run (rank 0 writes and prints the record)
        print_record(record)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="The checkpoint: a local transformers folder, a hub id or a built-in name (`bench list models`)."),
    name: str = typer.Option(..., "--name", help="The leaderboard row and the record's method (not a registered method's name)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Whose eval prompts and judges: pku-saferlhf | truthfulqa | hh-rlhf-harmless (default: the profile's)."),
    profile: str = typer.Option(None, "--profile", "-p", help="tiny | cpu | cpu-long | gpu, or a YAML file (default cpu); its `model` is the SFT "
                                "policy the win rates compare against and whose leaderboard table the row joins."),
    seed: int = typer.Option(None, "--seed", help="Seed of sampling and bootstrap resampling (default: the profile's, 0)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Read datasets from local copies (default $BENCH_DATA_DIR)."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where runs and bench.sqlite live (default ./runs)."),
    wandb: Optional[str] = typer.Option(None, "--wandb", help="offline (default) | online | disabled."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Generation backend: auto | hf | vllm."),
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Evaluate a checkpoint as it is: generate, score and compute metrics with `bench run`'s judges and eval sets; the
    record joins the leaderboard as NAME (with the checkpoint's path and fingerprint)."""
    from harness.checkpoint import check_name, eval_fields

    check_name(name)
    fields = {**eval_fields(name, model), "dataset": dataset, "seed": seed, "generation.backend": backend,
              "data.data_dir": str(data_dir) if data_dir else None, "runs_dir": str(runs_dir) if runs_dir else None, "wandb.mode": wandb}
    execute(_config(profile or "cpu", overrides, **fields), title="eval")


def resume_config(runs_dir: Path, rid: str, profile: str | None, overrides: list[str] | None, fields: dict, wandb: str | None):
    """The saved config of RUN_ID. --runs-dir (where the run lives) and --wandb (not part of the results) apply;
    any other option is refused unless it equals the saved value, since it would make a different run."""
    from harness import runs

    cfg = runs.load_run_config(runs_dir, rid)
    if runs.run_id(cfg) != rid:  # resuming would train (and record) another run under the same name
        raise BenchError(f"--resume {rid}: its saved config.yaml no longer matches the run id (it now gives {runs.run_id(cfg)}; "
                         "edited by hand, or saved by another version): restore the file to resume, or start a new run "
                         f"from it with `bench run --profile {Path(runs_dir) / rid / 'config.yaml'}`")
    asked = {k: v for k, v in fields.items() if v is not None}
    if profile is not None:
        asked["profile"] = Path(profile).stem
    saved = cfg.to_dict()
    for key, value in list(asked.items()):
        node = saved
        for part in key.split("."):
            node = node[part]
        if str(node) == str(value):
            asked.pop(key)
    if overrides:
        from harness.config import apply_overrides, config_from_dict

        if config_from_dict(apply_overrides(cfg.to_dict(), overrides)).fingerprint() != cfg.fingerprint():
            asked["--set"] = " ".join(overrides)
    if asked:
        flags = ", ".join(f"--{k.split('.')[-1].replace('_', '-')}" if k != "--set" else "--set" for k in asked)
        raise BenchError(f"--resume {rid} uses the run's saved config, but {flags} would change it: drop {flags}, "
                         "or start a new run without --resume")
    cfg.runs_dir = str(runs_dir)
    if wandb:
        cfg.wandb.mode = wandb
    from harness.config import validate_config

    return validate_config(cfg)


def accelerate_command(config: str, num_processes: int, argv: list[str]) -> list[str]:
    """`accelerate launch --config_file <packaged preset> --num_processes N -m harness.cli <argv>` (launcher stripped),
    run as `python -m accelerate.commands.launch` with this interpreter, so it works without an activated venv."""
    from harness.scaleout import preset_path

    path = preset_path(config)
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--launcher", "--accelerate-config", "--num-processes"):
            skip = True
            continue
        if a.startswith(("--launcher=", "--accelerate-config=", "--num-processes=")):
            continue
        rest.append(a)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path), "--num_processes", str(num_processes), "-m", "harness.cli", *rest]


def print_record(record: dict) -> None:
    s = record["results"]["safety"]
    t = Table(title=f"{record['method']} on {record['dataset']} ({record['generation']['eval_set']}, n={s['n_prompts']})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")

    def row(name: str, m: dict | None) -> None:
        if isinstance(m, dict) and "value" in m:
            value = "n/a" if m["value"] is None else f"{m['value']:.3f}"
            ci = "" if m.get("ci_low") is None or m.get("ci_high") is None else f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            t.add_row(name, value, ci)

    for k in ("reward_mean", "reward_lc", "cost_mean", "unsafe_rate", "unsafe_rate_corrected"):
        row(k, s.get(k))
    row("refusal rate (XSTest safe)", (record["results"].get("refusal") or {}).get("refusal_rate"))
    row("judge accuracy (held-out)", (record["results"].get("judge") or {}).get("accuracy"))
    wr = s.get("win_rate_vs_sft") or {}
    row("win rate vs SFT (reward)", wr.get("reward"))
    row("win rate vs SFT (cost)", wr.get("cost"))
    tq = record["results"].get("truthfulqa") or {}
    row("TruthfulQA MC1", tq.get("mc1"))
    row("TruthfulQA MC2", tq.get("mc2"))
    row("truthful rate (gen)", (record["results"].get("truthfulness") or {}).get("true_rate"))
    c = s.get("constraint", {})
    if c:
        t.add_row(f"constraint {c['units']} <= {c['threshold']}", "holds" if c["satisfied"] else "violated", "")
    console.print(t)
    traj = record["train"].get("trajectory") or []
    if traj and any("lambda" in r for r in traj):
        console.print("lambda trajectory: " + ", ".join(f"{r['lambda']:.3g}" for r in traj if "lambda" in r))
    if record["train"].get("learning"):  # the methods' own learning checks (harness/training/learning.py)
        console.print(f"learned: {record['train'].get('learned')}  (" + "; ".join(
            f"{e['stage']} {e['check']} {e['value']:.3g}" for e in record["train"]["learning"]
            if e.get("passed") is not None and isinstance(e.get("value"), (int, float))) + ")")
    judges = record.get("judges") or {}
    if judges:
        console.print("judges: " + ", ".join(f"{role}={j['name']}" for role, j in judges.items())
                      + "; annotators: " + ", ".join(f"{k}={a['name']}" for k, a in (record.get("annotators") or {}).items()))
    if record.get("self_judged"):
        console.print(f"[yellow]note:[/] judged by its own annotator ({', '.join(record['self_judged'])}): the leaderboard lists it unranked")
    for n in record["data"].get("notes", []):
        console.print(f"[yellow]note:[/] {n}")
    console.print(f"results: {Path(record['config']['runs_dir']) / record['run_id'] / 'results.json'}")


@list_app.command("methods")
def list_methods(name: Optional[str] = typer.Argument(None, help="A method: print its config fields (methods.<name>.<field>).")) -> None:
    """Registered methods (built-in and plugins); with NAME, the method's config fields with default and help."""
    if name is None:
        _list("METHODS")
        return
    import dataclasses

    from rich.markup import escape

    from harness.config import describe_fields
    from harness.registries import METHODS

    cls = METHODS.get(name)
    config_class = getattr(cls, "config_class", None)
    console.print(f"[bold]{name}[/] ({METHODS.source(name)}); set a field with --set methods.{name}.<field>=VALUE")
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class) and dataclasses.fields(config_class)):
        console.print("(no config fields)")
        return
    t = Table("field", "type", "default", "help")
    for field_name, tp, default, help_text in describe_fields(config_class):
        t.add_row(field_name, escape(tp), escape(repr(default)), escape(help_text))  # help holds [paper]/[ours] tags, not markup
    console.print(t)


@list_app.command("datasets")
def list_datasets() -> None:
    """Registered datasets and evaluation prompt sets."""
    _list("DATASETS")


@list_app.command("scorers")
def list_scorers() -> None:
    """Registered reward/cost scorers."""
    _list("SCORERS")


@list_app.command("generators")
def list_generators() -> None:
    """Generation backends."""
    _list("GENERATORS")


@list_app.command("models")
def list_models() -> None:
    """Built-in model names (any hub id or local folder also works)."""
    from harness.models import BUILTIN_MODELS, builtin_cache_path

    t = Table("model", "cached at")
    for name in BUILTIN_MODELS:
        p = builtin_cache_path(name)
        t.add_row(name, str(p) if (p / "config.json").exists() else "(built on first use)")
    console.print(t)


def _list(which: str) -> None:
    from harness import registries

    reg = getattr(registries, which)
    t = Table("name", "source", "kind")
    for name in reg.names():
        t.add_row(name, reg.source(name), "built-in" if reg.is_builtin(name) else "plugin")
    console.print(t)


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="Dataset name (`bench list datasets`)."),
    profile: str = typer.Option("cpu", "--profile", "-p"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Schema, source, folds with pair/prompt counts, dropped rows and label balance."""
    from dataclasses import fields

    from harness.datasets import load_bundle
    from harness.types import PreferencePair

    cfg = _config(profile, overrides, dataset=name, **({"data.data_dir": str(data_dir)} if data_dir else {}))
    b = load_bundle(cfg)
    console.print(f"[bold]{b.name}[/]  source: {b.source}")
    console.print("pair schema: " + ", ".join(f.name for f in fields(PreferencePair)))
    t = Table("fold", "reward pairs", "cost pairs", "prompts", "cost pairs (safe, unsafe) chosen/rejected")
    for fold in ("train", "scorer", "dual", "eval"):
        cp = b.cost_pairs.get(fold, [])
        bal = {}
        for p in cp:
            bal[(p.chosen_safe, p.rejected_safe)] = bal.get((p.chosen_safe, p.rejected_safe), 0) + 1
        bal_s = ", ".join(f"{_lbl(k[0])}/{_lbl(k[1])}: {v}" for k, v in sorted(bal.items(), key=lambda kv: -kv[1]))
        t.add_row(fold, str(len(b.reward_pairs.get(fold, []))), str(len(cp)), str(len(b.prompts.get(fold, []))), bal_s)
    console.print(t)
    counts = {k: v for k, v in b.counts.items() if k != "folds"}
    if counts:
        console.print_json(json.dumps(counts))
    for n in b.notes:
        console.print(f"[yellow]note:[/] {n}")


def _lbl(v) -> str:
    return {True: "safe", False: "unsafe", None: "?"}[v]


@app.command("runs")
def runs_cmd(runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"), method: Optional[str] = typer.Option(None, "--method"),
             reindex: bool = typer.Option(False, "--reindex", help="Rebuild bench.sqlite from the run folders (keeps a damaged store "
                                          "aside as bench.sqlite.damaged-<time>). Run it while no run writes to this runs dir.")) -> None:
    """Runs in the store with their status and headline numbers. Run ids are printed whole (paste them into --resume)."""
    from harness.errors import check_folder
    from harness.store import list_runs, reconcile
    from harness.store import reindex as rebuild

    check_folder(runs_dir, "--runs-dir")
    if reindex:
        counts = rebuild(runs_dir)
        console.print(f"reindexed {counts['runs']} run folder(s) under {runs_dir} ({counts['finished']} finished)"
                      + ("; the damaged store was kept beside it" if counts["damaged_store_kept"] else ""))
        for rid, problem in counts["skipped"]:  # never indexed, so no later listing trips over them
            console.print(f"[yellow]skipped[/] {rid}: {problem} (fix it or move the folder away, then reindex)", highlight=False,
                          soft_wrap=True)
    reconcile(runs_dir)  # rows whose process died are shown as interrupted, not running forever
    rows = list_runs(runs_dir, **({"method": method} if method else {}))
    if not rows:
        console.print(f"no runs under {runs_dir}")
        return
    width = max(len(r["run_id"]) for r in rows)
    t = Table()
    t.add_column("run id", no_wrap=True, min_width=width)  # never cut: users paste ids into --resume
    for name in ("status", "stage", "reward", "unsafe rate"):
        t.add_column(name)
    for r in rows:
        s = ((r["results"] or {}).get("results") or {}).get("safety") or {}
        fmt = lambda m: f"{m['value']:.3f}" if isinstance(m, dict) and isinstance(m.get("value"), (int, float)) else "-"  # noqa: E731
        t.add_row(r["run_id"], r["status"], r["stage"] or "-", fmt(s.get("reward_mean")), fmt(s.get("unsafe_rate")))
    out = console if console.width >= width + 50 else Console(width=width + 50)  # a narrow terminal wraps, never truncates
    out.print(t)


def _mount_optional() -> None:
    """Sub-apps from the evaluator and leaderboard packages (kept separate so each stays small)."""
    try:
        from evaluators.cli import scorer_app

        app.add_typer(scorer_app, name="scorer", help="Train and evaluate the harness's reward and cost score models.")
    except ImportError as exc:  # pragma: no cover
        logging.getLogger("bench").debug("scorer commands unavailable: %s", exc)
    try:
        from evaluators.judges.cli import judge_app

        app.add_typer(judge_app, name="judge", help="Train and evaluate the leaderboard judges (safety, reward, refusal, truthfulness).")
    except ImportError as exc:  # pragma: no cover
        logging.getLogger("bench").debug("judge commands unavailable: %s", exc)
    try:
        from leaderboards.cli import register

        register(app)
    except ImportError as exc:  # pragma: no cover
        logging.getLogger("bench").debug("leaderboard commands unavailable: %s", exc)


_mount_optional()


def entry() -> None:
    """Console entry point. Exit codes: 0 done, 1 a run that failed inside a stage (one line; the traceback in the run's
    run.log) or a suite with failed runs, 2 bad input or usage (one line on stderr, no traceback), 130 interrupted
    (Ctrl-C). Finished stages and records are never lost on any of these paths."""
    global _INTERRUPTED
    _INTERRUPTED = False  # a Ctrl-C belongs to the call it interrupted (in-process callers may call entry() again)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        rc = app(standalone_mode=False)
    except BenchError as exc:
        _fail(str(exc), 2)
    except RunFailed as exc:  # a method or scorer (plugin) failed inside a stage: the run is marked failed, exit 1
        if _DEBUG:
            print(exc.details, file=sys.stderr, end="")
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail(INTERRUPTED, 130)
    except SystemExit:
        raise
    except OSError as exc:
        from harness.errors import os_error_message

        message = os_error_message(exc)
        if message is None:
            raise
        _fail(message, 2)
    except Exception as exc:
        code, message = usage_error(exc)
        if code is None:
            raise
        _fail(message, code)
    # standalone_mode=False returns typer.Exit(n)'s code instead of exiting; typer turns Ctrl-C into Exit(130)
    if _INTERRUPTED or rc == 130:  # also when a library swallowed the KeyboardInterrupt: Ctrl-C never exits 0
        _fail(INTERRUPTED, 130)
    sys.exit(rc if isinstance(rc, int) else 0)


INTERRUPTED = "interrupted: finished stages are kept; rerun the same command or `bench run --resume RUN_ID` to continue"
_INTERRUPTED = False
_DEBUG = False  # `bench --debug`: a failed run's traceback is printed above its one line


def _on_sigint(signum, frame) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/] {escape(message)}" if code in (1, 2) else escape(message), highlight=False, soft_wrap=True)
    sys.exit(code)


def usage_error(exc: BaseException) -> tuple[int | None, str]:
    """(exit code, one line) for click's and typer's own (`typer._click`) exception classes; (None, "") otherwise.
    Matched by class name, so both the vendored and the upstream classes are handled."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "Abort" in names:  # click turns Ctrl-C inside a command into Abort
        return 130, INTERRUPTED
    if "UsageError" in names or "BadParameter" in names:
        ctx = getattr(exc, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "bench"
        msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return 2, f"{' '.join(msg.split())} (see `{cmd} --help`)"
    if "ClickException" in names:
        msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return 2, " ".join(msg.split())
    return None, ""


if __name__ == "__main__":
    entry()
