"""Regenerate docs/results-cpu.md's results table (and docs/methods-overview.md's learning block) from the leaderboard
export and the runs' records (`scripts/cpu_suite.sh` calls this; the README's own numbers are scripts/readme_numbers.py's).

    python scripts/readme_results.py docs/leaderboard-cpu.md [--seeds 0,1,2] [--readme docs/results-cpu.md]
                                     [--runs-dir results/cpu-suite --suite cpu-suite --methods sft,pddpo,...]
                                     [--learned-page docs/methods-overview.md]

Everything between the markers `<!-- cpu-results:begin -->` and `<!-- cpu-results:end -->` is replaced by the
leaderboard's markdown (its table, tiers and the notes that say in words which differences are significant; the
paired-comparison tables and column definitions stay in the export, linked),
preceded by one line naming the source file, the seeds and the date. With `--runs-dir`, the block between
`<!-- cpu-learned:begin -->` and `<!-- cpu-learned:end -->` (under the README's method table) is replaced by what
each method's cpu runs learned, one row per method: how many seeds passed every check, and each learning check
(harness/training/learning.py) with its value and mark per seed, read from the runs' `results.json`; `--learned-doc PAGE`
also writes every check of every run, with its CI, to PAGE. `--methods` names the suite's methods (cpu_suite.sh
passes its METHODS): one of them without a finished run gets a row saying so instead of silently missing. Nothing is typed by hand in between, so the README can never claim more than the
leaderboard and the records do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- cpu-results:begin -->", "<!-- cpu-results:end -->"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
LEARNED = ("<!-- cpu-learned:begin -->", "<!-- cpu-learned:end -->")


def replace_block(readme: str, body: str, markers: tuple[str, str] = (BEGIN, END)) -> str:
    """`readme` with the text between the markers replaced by `body` (markers kept)."""
    begin, end = markers
    if readme.count(begin) != 1 or readme.count(end) != 1 or readme.index(begin) > readme.index(end):
        raise ValueError(f"the README needs exactly one {begin} ... {end} block")
    head, rest = readme.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body.rstrip()}\n{end}{tail}"


def _num(x: object) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _mark(entry: dict) -> str:
    """✓ passed, ✗ failed, · informational (passed is None)."""
    return {True: "✓", False: "✗"}.get(entry.get("passed"), "·")


def describe(entry: dict) -> str:
    """One learning check in a few words: `stage check value [CI] ✓/✗ (short reason)`."""
    ci = entry.get("ci")
    ci_txt = f" [{_num(ci[0])}, {_num(ci[1])}]" if ci and len(ci) == 2 else ""
    mark = _mark(entry)
    short = entry.get("short") or ""
    return f"{mark} {entry.get('stage', '?')} {entry.get('check', '?')} {_num(entry.get('value'))}{ci_txt}" + (f" ({short})" if short and entry.get("passed") is not True else "")


def _finished_runs(runs_dir: Path, suite: str | None) -> list[dict]:
    """The results records of the suite's finished runs, sorted by (method, seed)."""
    recs = [json.loads(res.read_text()) for res in sorted(runs_dir.glob("*/results.json"))]
    return sorted((r for r in recs if not suite or r.get("suite") == suite), key=lambda r: (r["method"], r["seed"]))


def _by_method(runs_dir: Path, suite: str | None, methods: list[str] | None) -> dict[str, list[dict]]:
    """method -> its finished runs (by seed): the named methods first, in their order (a method without a finished
    run maps to []), then any other method of the suite, by name."""
    by_method: dict[str, list[dict]] = {m: [] for m in methods or []}
    for rec in _finished_runs(runs_dir, suite):
        by_method.setdefault(rec["method"], []).append(rec)
    return by_method


NO_RUN = "no finished run yet"
NO_RUNS = "**No finished runs of the suite yet**: run `scripts/cpu_suite.sh`."


def learned_table(runs_dir: Path, suite: str | None, methods: list[str] | None = None) -> str:
    """Markdown: one row per finished run of the suite (method, seed): the learned summary and every check; one row
    per method of `methods` without a finished run."""
    by_method = _by_method(runs_dir, suite, methods)
    if not by_method:
        return NO_RUNS
    out = ["| method | seed | learned | checks (✓ passed, ✗ failed; value [95% CI]) |", "|---|---:|---|---|"]
    for method, recs in by_method.items():
        if not recs:
            out.append(f"| `{method}` | – | – | {NO_RUN} |")
        for rec in recs:
            train = rec.get("train") or {}
            checks = "<br>".join(describe(e) for e in train.get("learning") or []) or "no checks (nothing trained)"
            out.append(f"| `{method}` | {rec['seed']} | {train.get('learned') or 'n/a'} | {checks} |")
    return "\n".join(out)


def learned_summary(runs_dir: Path, suite: str | None, methods: list[str] | None = None) -> str:
    """Markdown: one row per method. How many of its seeds passed every check, then each (stage, check) once with
    its value and mark per seed, and the rule it failed (its short reason with the value as x, deduplicated).
    A method of `methods` without a finished run gets a row saying so."""
    by_method = _by_method(runs_dir, suite, methods)
    if not by_method:
        return NO_RUNS
    out = ["| method | seeds that learned | each check per seed (✓ passed, ✗ failed, · informational) |", "|---|---:|---|"]
    for method, recs in by_method.items():
        if not recs:
            out.append(f"| `{method}` | – | {NO_RUN} |")
            continue
        trained = [r for r in recs if (r.get("train") or {}).get("learning")]
        if not trained:
            out.append(f"| `{method}` | n/a | nothing trained ({len(recs)} seed{'s' if len(recs) != 1 else ''}) |")
            continue
        checks: dict[tuple[str, str], list[str]] = {}
        reasons: dict[tuple[str, str], list[str]] = {}
        for r in trained:
            for e in r["train"]["learning"]:
                key = (e.get("stage", "?"), e.get("check", "?"))
                mark = _mark(e)
                checks.setdefault(key, []).append(f"s{r['seed']} {_num(e.get('value'))} {mark}")
                short = _NUMBER.sub("x", e.get("short") or "", count=1)  # the rule, not this seed's value
                if e.get("passed") is not True and short and short not in reasons.setdefault(key, []):
                    reasons[key].append(short)
        n_yes = sum((r["train"].get("learned") or "").startswith("yes") for r in trained)
        cells = [f"{stage} {check}: " + ", ".join(vals) + (f" ({'; '.join(reasons[(stage, check)])})" if reasons.get((stage, check)) else "")
                 for (stage, check), vals in checks.items()]
        out.append(f"| `{method}` | {n_yes}/{len(trained)} | " + "<br>".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("leaderboard", type=Path, help="the leaderboard's markdown export (bench leaderboard --format md)")
    ap.add_argument("--seeds", default="?", help="seeds the suite ran, for the header line")
    ap.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results-cpu.md",
                    help="the page holding the cpu-results block")
    ap.add_argument("--learned-page", type=Path, default=None,
                    help="with --runs-dir: the page holding the cpu-learned block (default: the --readme page)")
    ap.add_argument("--runs-dir", type=Path, default=None, help="also regenerate the learning-checks block from these runs' records")
    ap.add_argument("--suite", default="cpu-suite", help="with --runs-dir: only this suite's runs")
    ap.add_argument("--learned-doc", type=Path, default=None,
                    help="with --runs-dir: also write every check of every run (one row per run) to this markdown page")
    ap.add_argument("--methods", default=None, help="with --runs-dir: the suite's methods (comma list); one without a "
                    "finished run is listed as such, not left out")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    if not a.leaderboard.exists():
        print(f"error: {a.leaderboard} does not exist: run scripts/cpu_suite.sh (or bench leaderboard --format md -o ...)",
              file=sys.stderr)
        return 2
    table = a.leaderboard.read_text().strip()
    lines = [ln for ln in table.splitlines() if not ln.startswith("# ")]  # the export's page title: the README has its own
    table = "\n".join("#### " + ln[3:] if ln.startswith("## ") else ln for ln in lines).strip()
    if "\n### " in table:  # the README carries the table and its notes; the paired-test tables stay in the export
        table = (table.split("\n### ", 1)[0].rstrip() + f"\n\nEvery paired comparison (test, p, Holm p) and the column "
                 f"definitions: [{a.leaderboard.as_posix()}]({a.leaderboard.as_posix()}).")
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    body = (f"_Generated {when} by `scripts/readme_results.py` from [{a.leaderboard.as_posix()}]({a.leaderboard.as_posix()}) "
            f"(seeds {a.seeds}); do not edit by hand._\n\n{table}")
    try:
        text = replace_block(a.readme.read_text(), body)
        if a.runs_dir is not None:
            source = (f"_Generated {when} by `scripts/readme_results.py` from the `results.json` of the runs in "
                      f"`{a.runs_dir.as_posix()}` (suite {a.suite}); do not edit by hand._")
            per_run = ""
            if a.learned_doc is not None:
                a.learned_doc.write_text(f"# What each cpu-suite run learned\n\n{source}\n\nEvery learning check of every "
                                         f"finished run (harness/training/learning.py; docs/learning-checks.md).\n\n"
                                         f"{learned_table(a.runs_dir, a.suite, methods)}\n")
                per_run = f" Every check of every run, with its 95% CI: [{a.learned_doc.as_posix()}]({a.learned_doc.as_posix()})."
            learned = f"{source}{per_run}\n\n{learned_summary(a.runs_dir, a.suite, methods)}"
            if a.learned_page is not None and a.learned_page != a.readme:
                a.learned_page.write_text(replace_block(a.learned_page.read_text(), learned, LEARNED))
            else:
                text = replace_block(text, learned, LEARNED)
        a.readme.write_text(text)
    except ValueError as exc:
        print(f"error: {a.readme}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
