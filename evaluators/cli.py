"""`bench scorer train|eval`: train the harness's reward/cost score models and report their held-out accuracy next
to the trivial baselines (response length, random score, majority sign). Mounted by `harness.cli` as `bench scorer`.

Config as for `bench run` (`--profile`, `--dataset`, `--set key=value`); keys starting with `scorer.` set the score
model's own training settings (`evaluators.score_models.ScoreModelSettings`), e.g. `--set scorer.epochs=1`.
Heavy libraries are imported inside the commands so `bench --help` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import BenchError

scorer_app = typer.Typer(help=__doc__, no_args_is_help=True)
console = Console()

KindOpt = typer.Option(..., "--kind", "-k", help="reward | cost")
ProfileOpt = typer.Option("cpu", "--profile", "-p", help="tiny | cpu | gpu, or a YAML file.")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="pku-saferlhf | truthfulqa | hh-rlhf-harmless (default: the profile's).")
DataDirOpt = typer.Option(None, "--data-dir", help="Local dataset copies (default $BENCH_DATA_DIR).")
SetOpt = typer.Option(None, "--set", help="Config override key=value; scorer.<field>=... sets score-model training (scorer.epochs=1).")


def _config(profile: str, dataset: str | None, data_dir: Path | None, overrides: list[str] | None):
    """(RunConfig, ScoreModelSettings): `scorer.*` overrides go to the settings, the rest to the run config."""
    from harness.config import load_config, parse_overrides
    from evaluators.score_models import settings_for

    overrides = overrides or []
    run_over = [o for o in overrides if not o.strip().startswith("scorer.")]
    scorer_over = {k[len("scorer."):]: v for k, v in parse_overrides([o for o in overrides if o.strip().startswith("scorer.")])}
    cfg = load_config(profile, run_over, dataset=dataset, **{"data.data_dir": str(data_dir) if data_dir else None})
    return cfg, settings_for(cfg, **scorer_over)


def _check_kind(kind: str) -> None:
    if kind not in ("reward", "cost"):
        raise BenchError(f"--kind must be reward or cost, got {kind!r}")


def _fmt(ci: dict[str, float] | None) -> str:
    if not isinstance(ci, dict):
        return "-"
    return f"{ci['value']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"


def print_eval(metrics: dict[str, Any], title: str) -> None:
    """Accuracy table: the scorer vs the length / random / majority-sign baselines on the same held-out pairs."""
    b = metrics.get("baselines", {})
    t = Table(title=title)
    t.add_column("metric")
    t.add_column(metrics.get("scorer", "scorer"), justify="right")
    t.add_column("length", justify="right")
    t.add_column("random", justify="right")
    if metrics["kind"] == "cost":
        t.add_column("majority", justify="right")
    rows = [("pairwise accuracy", "pairwise_accuracy")] + ([("sign accuracy", "sign_accuracy")] if metrics["kind"] == "cost" else [])
    for label, key in rows:
        cells = [label, _fmt(metrics.get(key)), _fmt(b.get("length", {}).get(key)), _fmt(b.get("random", {}).get(key))]
        if metrics["kind"] == "cost":
            maj = b.get("majority_sign", {}).get("sign_accuracy") if key == "sign_accuracy" else None
            cells.append(f"{maj:.3f}" if maj is not None else "-")
        t.add_row(*cells)
    console.print(t)
    extra = f", {metrics['n_labelled_responses']} labelled responses" if "n_labelled_responses" in metrics else ""
    console.print(f"held-out pairs: {metrics['n_pairs']}{extra}; 95% bootstrap CIs; ties count 1/2")


@scorer_app.command("train")
def train(
    kind: str = KindOpt,
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if the cached model exists."),
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Train the dataset's KIND score model on its scorer fold (cached; reused by `bench run`), evaluate on the eval fold."""
    from evaluators.score_models import cached_score_model, scorer_folds

    _check_kind(kind)
    cfg, settings = _config(profile, dataset, data_dir, overrides)
    bundle, train_pairs, eval_pairs = scorer_folds(cfg, kind)
    console.print(f"[bold]scorer train[/] minilm-{kind} on {cfg.dataset} ({bundle.source}): {len(train_pairs)} scorer-fold pairs, "
                  f"{len(eval_pairs)} held-out (eval fold); encoder={settings.encoder} max_length={settings.max_length} "
                  f"epochs={settings.epochs} batch={settings.batch_size} lr={settings.learning_rate}")
    start = time.time()
    scorer = cached_score_model(kind, cfg, settings=settings, retrain=retrain, bundle=bundle)
    wall = time.time() - start
    card = scorer.card
    if "eval" not in card:
        raise BenchError(f"{scorer.path} has no held-out metrics (eval fold empty?): run `bench scorer eval --kind {kind}`")
    print_eval(card["eval"], f"minilm-{kind} on {cfg.dataset}: held-out accuracy")
    tr = card.get("train", {})
    console.print(f"trained {card['n_pairs']} pairs, {tr.get('steps')} steps in {tr.get('wall_s')} s on {tr.get('device')} "
                  f"(this command: {wall:.0f} s{', cached model reused' if wall < 0.5 * (tr.get('wall_s') or 0) else ''})")
    console.print(f"saved: {scorer.path}")


@scorer_app.command("eval")
def evaluate(
    kind: str = KindOpt,
    profile: str = ProfileOpt,
    dataset: Optional[str] = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    scorer: Optional[str] = typer.Option(None, "--scorer", help="A registered scorer instead (e.g. beaver-cost, length)."),
    path: Optional[Path] = typer.Option(None, "--path", help="A saved score-model folder instead."),
    max_pairs: int = typer.Option(0, "--max-pairs", help="Cap held-out pairs (0 = the profile's scorer.max_eval_pairs)."),
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Held-out pairwise (and, for cost, sign) accuracy of a scorer on the dataset's eval fold, with baselines."""
    from evaluators.score_models import ScoreModelScorer, cached_score_model, evaluate_score_model, scorer_folds
    from harness.datasets.common import cap

    _check_kind(kind)
    cfg, settings = _config(profile, dataset, data_dir, overrides)
    bundle, _, eval_pairs = scorer_folds(cfg, kind)
    if path is not None:
        s = ScoreModelScorer(path, kind=kind, device=cfg.device, precision=cfg.train.precision)
    elif scorer is not None:
        from harness.registries import SCORERS

        s = SCORERS.get(scorer)(cfg, kind=kind) if scorer in ("length", "random") else SCORERS.get(scorer)(cfg)
        if s.kind != kind:
            raise BenchError(f"scorer '{scorer}' is a {s.kind} scorer, not {kind}")
    else:
        s = cached_score_model(kind, cfg, settings=settings, bundle=bundle)
    pairs = cap(eval_pairs, max_pairs or settings.max_eval_pairs)
    metrics = evaluate_score_model(s, pairs, kind, n_boot=cfg.scoring.bootstrap, seed=settings.seed)
    print_eval(metrics, f"{s.name} on {cfg.dataset} (eval fold): held-out accuracy")
