"""`bench judge train|eval`: train the leaderboard judges (cached; `bench run` reuses them) and print, per judge and
per held-out source, accuracy with a 95% CI next to the length / random / majority / TF-IDF baselines, calibration
(ECE) and sensitivity / specificity with their counts. Mounted by `harness.cli` as `bench judge`.

Config as for `bench run` (`--profile`, `--set key=value`); keys starting with `judge.` set the judge's own training
settings (`evaluators.judges.core.JudgeSettings`), e.g. `--set judge.members=tfidf+minilm+surface`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import BenchError

judge_app = typer.Typer(help=__doc__, no_args_is_help=True)
console = Console() if sys.stdout.isatty() else Console(width=200)  # piped: keep the wide tables readable

JudgeOpt = typer.Option(None, "--judge", "-j", help="safety-judge | reward-judge | refusal-judge | truthfulness-judge (default: all).")
ProfileOpt = typer.Option("cpu", "--profile", "-p", help="tiny | cpu | gpu, or a YAML file.")
DataDirOpt = typer.Option(None, "--data-dir", help="Local dataset copies (default $BENCH_DATA_DIR).")
SetOpt = typer.Option(None, "--set", help="Override key=value; judge.<field>=... sets judge training (judge.members=tfidf+surface).")
JsonOpt = typer.Option(None, "--json", help="Also write the cards (held-out report) to this JSON file, and the table beside it (.md).")


def _names(judge: str | None) -> list[str]:
    from evaluators.judges.core import JUDGES

    if judge is None:
        return list(JUDGES)
    if judge not in JUDGES:
        raise BenchError(f"unknown judge {judge!r}: choose one of {', '.join(JUDGES)}")
    return [judge]


def _config(profile: str, data_dir: Path | None, overrides: list[str] | None):
    from harness.config import load_config, parse_overrides

    overrides = overrides or []
    run_over = [o for o in overrides if not o.strip().startswith("judge.")]
    judge_over = {k[len("judge."):]: v for k, v in parse_overrides([o for o in overrides if o.strip().startswith("judge.")])}
    cfg = load_config(profile, run_over, **{"data.data_dir": str(data_dir) if data_dir else None})
    return cfg, judge_over


def _ci(d: dict[str, Any] | None) -> str:
    if not isinstance(d, dict) or d.get("value") is None:
        return "-"
    return f"{d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _v(d: dict[str, Any] | None) -> str:
    return f"{d['value']:.3f}" if isinstance(d, dict) and d.get("value") is not None else "-"


def print_card(card: dict[str, Any]) -> None:
    """One table per judge: a row per held-out source."""
    cal = card.get("calibration", {})
    t = Table(title=f"{card['name']} ({card.get('backbone')}): held-out accuracy, 95% bootstrap CIs", title_justify="left")
    for col in ("source", "labels", "n", "accuracy [CI]", "pairwise", "length", "random", "majority", "tfidf-lr", "other", "ECE",
                "sens (tp/fn)", "spec (tn/fp)"):
        t.add_column(col, justify="left" if col in ("source", "labels") else "right")
    for src, h in card["heldout"].items():
        b = h.get("baselines") or {}
        other = ", ".join(f"{k} {_v(v)}" for k, v in b.items() if k not in ("length", "random", "majority", "tfidf_lr"))
        sens, spec = h.get("sensitivity"), h.get("specificity")
        t.add_row(src, "human" if h.get("labels") == "human" else "benchmark", str(h.get("n", "-")), _ci(h.get("accuracy")),
                  _v(h.get("pairwise_accuracy")) if "sensitivity" in h else "-", _v(b.get("length")), _v(b.get("random")),
                  _v(b.get("majority")), _v(b.get("tfidf_lr")), other or "-",
                  f"{h['ece']:.3f}" if isinstance(h.get("ece"), float) else "-",
                  f"{sens['value']:.3f} ({sens['tp']}/{sens['fn']})" if sens else "-",
                  f"{spec['value']:.3f} ({spec['tn']}/{spec['fp']})" if spec else "-")
    console.print(t)
    console.print(f"calibration: {cal.get('method')} on {cal.get('n')} judge-calib rows, ECE {cal.get('ece_before', float('nan')):.3f} -> "
                  f"{cal.get('ece_after', float('nan')):.3f}; primary held-out source: {card.get('primary_heldout')}; "
                  f"threshold {card.get('threshold')}; trained on "
                  + ", ".join(f"{r['source']}/{r['split']} {r['n']}" for r in card.get("trained_on", [])))
    below = [s for s, h in card["heldout"].items()
             if isinstance(h.get("accuracy"), dict) and any(isinstance(v, dict) and v.get("value") is not None and v["value"] >= h["accuracy"]["value"]
                                                            for v in (h.get("baselines") or {}).values())]
    if below:
        console.print(f"[yellow]does NOT beat every baseline on:[/] {', '.join(below)}")


def markdown_table(cards: dict[str, dict[str, Any]]) -> str:
    """judge x held-out source: accuracy [CI], baselines, ECE, sensitivity/specificity with counts (docs, README)."""
    lines = ["| judge | held-out source (labels) | n | accuracy [95% CI] | pairwise | length | random | majority | TF-IDF LR | other baseline | ECE | sens. (tp/fn) | spec. (tn/fp) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, card in cards.items():
        for src, h in card["heldout"].items():
            b = h.get("baselines") or {}
            other = ", ".join(f"{k.replace('_', ' ')} {_v(v)}" for k, v in b.items() if k not in ("length", "random", "majority", "tfidf_lr")) or "–"
            sens, spec = h.get("sensitivity"), h.get("specificity")
            lab = "human" if h.get("labels") == "human" else "**benchmark, not human**"
            cells = [f"`{name}`", f"{src} ({lab})", str(h.get("n")), _ci(h.get("accuracy")),
                     _v(h.get("pairwise_accuracy")) if sens else "–", _v(b.get("length")), _v(b.get("random")),
                     _v(b.get("majority")) if b.get("majority") else "–", _v(b.get("tfidf_lr")), other,
                     f"{h['ece']:.3f}" if isinstance(h.get("ece"), float) else "–",
                     f"{sens['value']:.3f} ({sens['tp']}/{sens['fn']})" if sens else "–",
                     f"{spec['value']:.3f} ({spec['tn']}/{spec['fp']})" if spec else "–"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run(names: list[str], profile: str, data_dir: Path | None, overrides: list[str] | None, retrain: bool, json_out: Path | None) -> None:
    from evaluators.judges.core import cached_judge, judge_settings

    cfg, judge_over = _config(profile, data_dir, overrides)
    cards = {}
    for name in names:
        settings = judge_settings(name, cfg, **judge_over)
        start = time.time()
        j = cached_judge(name, cfg, settings, retrain=retrain)
        wall = time.time() - start
        print_card(j.card)
        tr = j.card.get("train", {})
        console.print(f"{name}: {tr.get('rows')} training rows, fit in {tr.get('wall_s')} s (this command {wall:.0f} s); saved {j.path}\n")
        cards[name] = j.card
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(cards, indent=2, default=float))
        json_out.with_suffix(".md").write_text(markdown_table(cards))
        console.print(f"cards written to {json_out} (table: {json_out.with_suffix('.md')})")


@judge_app.command("train")
def train(judge: Optional[str] = JudgeOpt, profile: str = ProfileOpt, data_dir: Optional[Path] = DataDirOpt,
          retrain: bool = typer.Option(False, "--retrain", help="Train again even if the cached judge exists."),
          overrides: Optional[list[str]] = SetOpt, json_out: Optional[Path] = JsonOpt) -> None:
    """Train (or reuse) the judges and print their held-out report."""
    _run(_names(judge), profile, data_dir, overrides, retrain, json_out)


@judge_app.command("eval")
def evaluate(judge: Optional[str] = JudgeOpt, profile: str = ProfileOpt, data_dir: Optional[Path] = DataDirOpt,
             overrides: Optional[list[str]] = SetOpt, json_out: Optional[Path] = JsonOpt) -> None:
    """Print the held-out report of the judges (training them first if they are not cached)."""
    _run(_names(judge), profile, data_dir, overrides, False, json_out)
