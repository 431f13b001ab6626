"""Write docs/mutation.md from mutmut's results under mutants/ (run from the repository root after `mutmut run`).

Per file: mutants, killed (a test failed or timed out), survived, not reached by the fast tests ("no tests"),
and the killed share of the mutants the fast tests reach. Every survivor is listed with its one-line change and,
where docs/mutation-notes.md holds one, the analysis (equivalent, or why no fast test reaches it). A mutant is
identified by its mutmut name (file.function__mutmut_N): names move when a function changes, so stale notes are
reported, not silently kept.

A run may cover some files only (`make mutation MUTANTS=...`, or a scratch run with a narrower `only_mutate`): the
per-file results live in docs/mutation.json, each row with the date and runtime line of the run that produced it, and
a run replaces the rows of the files it covered and keeps the others; the markdown is written from that JSON.

    python tools/mutation_report.py [--notes docs/mutation-notes.md] [--out docs/mutation.md] [--json docs/mutation.json]
                                    [--runtime "…"] [--date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}
SURVIVED = {0}
NO_TESTS = {5, 33}


def pct(share: float) -> str:
    """A share as a percentage rounded DOWN to 0.1 (99.97% is not 100.0%: one mutant still survives)."""
    return "nan%" if share != share else f"{math.floor(share * 1000) / 10:.1f}%"


def status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "not checked" if code is None else f"other ({code})"


def load_results(root: Path) -> dict[str, dict[str, int | None]]:
    """source file -> {mutant name: exit code}"""
    out = {}
    for meta in sorted(root.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        if codes:
            out[str(meta.relative_to(root))[: -len(".meta")]] = codes
    return out


def short_diff(name: str) -> str:
    """The changed lines of a mutant, as `- old` / `+ new` (mutmut's diff of the whole function, trimmed)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        diff = get_diff_for_mutant(name)
    except Exception as exc:  # noqa: BLE001 - a report must not die on one mutant
        return f"(diff unavailable: {exc})"
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return " / ".join(re.sub(r"\s+", " ", ln).strip() for ln in lines)[:300]


def load_notes(path: Path) -> dict[str, str]:
    """`- <mutant name or function glob>: <analysis>` lines of the notes file."""
    notes = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"^- `([^`]+)`: (.+)$", line)
            if m:
                notes[m.group(1)] = m.group(2)
    return notes


def notes_section(path: Path, heading: str) -> list[str]:
    """A `## ` section of the notes file, heading included, copied into the report as it is."""
    if not path.exists():
        return []
    lines, out, inside = path.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            inside = line.strip() == heading
        if inside:
            out.append(line)
    return out


def note_for(name: str, notes: dict[str, str]) -> str | None:
    if name in notes:
        return notes[name]
    func = name.rsplit("__mutmut_", 1)[0]
    return notes.get(func + "*")


def function_name(mutant: str) -> str:
    """`pkg.mod.x_f__mutmut_3` -> `f`; a method's `pkg.mod.xǁCǁm__mutmut_1` -> `C.m`."""
    name = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    if name.startswith("x\u01c1"):
        return name[2:].replace("\u01c1", ".")
    return name[2:] if name.startswith("x_") else name


def file_entries(results: dict[str, dict[str, int | None]], date: str, runtime: str) -> dict[str, dict]:
    """Per source file of this run: counts by status, survivors with their one-line diffs, unreached functions."""
    entries = {}
    for path, codes in results.items():
        c = Counter(status(code) for code in codes.values())
        unreached = Counter(function_name(name) for name, code in codes.items() if status(code) == "no tests")
        entries[path] = {"mutants": len(codes), "killed": c["killed"], "survived": c["survived"], "no_tests": c["no tests"],
                         "not_checked": c["not checked"], "date": date, "run": runtime,
                         "survivors": {name: short_diff(name) for name, code in sorted(codes.items()) if status(code) == "survived"},
                         "unreached": dict(sorted(unreached.items()))}
    return entries


def render(entries: dict[str, dict], notes_path: Path) -> list[str]:
    notes = load_notes(notes_path)
    out = ["# Mutation testing", "",
           "Generated by `make mutation` (mutmut 3, `tools/mutation_report.py`) from [mutation.json](mutation.json); do not",
           "edit by hand: analyses of survivors live in [mutation-notes.md](mutation-notes.md) and are merged in here.", "",
           "Runs behind the rows (a run replaces the rows of the files it covered):", ""]
    out += [f"- {run}" for run in sorted({e["run"] for e in entries.values() if e.get("run")})] + [""]
    total = Counter()
    for e in entries.values():
        total.update({k: e[k] for k in ("mutants", "killed", "survived", "no_tests", "not_checked")})
    if total["not_checked"]:
        out += [f"**Incomplete: {total['not_checked']} of {total['mutants']} mutants were not checked** (a run was stopped "
                "or is still going); the shares below cover the checked ones only.", ""]
    out += ["Killed = a fast test failed (or timed out) with the mutant in place. Reached = mutants in functions that",
            "at least one fast test calls; `no tests` = functions only the slow tests reach (real model loading,",
            "generation, training, every real judge source, a whole `bench run`), left to `make test`. Share = killed /",
            "reached; non-equivalent share = killed / (reached − survivors analysed as equivalent).", "",
            "| file | mutants | killed | survived | equivalent | no tests | not checked | killed / reached | killed / non-equivalent | run |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for path, e in sorted(entries.items()):
        equivalent = sum(1 for n in e["survivors"] if (note_for(n, notes) or "").lower().startswith("equivalent"))
        total["equivalent"] += equivalent
        reached = e["killed"] + e["survived"]
        share = e["killed"] / reached if reached else float("nan")
        share_ne = e["killed"] / (reached - equivalent) if reached - equivalent else float("nan")
        out.append(f"| `{path}` | {e['mutants']} | {e['killed']} | {e['survived']} | {equivalent} | {e['no_tests']} | "
                   f"{e['not_checked']} | {pct(share)} | {pct(share_ne)} | {e['date']} |")
    reached = total["killed"] + total["survived"]
    out.append(f"| **all** | {total['mutants']} | {total['killed']} | {total['survived']} | {total['equivalent']} | "
               f"{total['no_tests']} | {total['not_checked']} | {pct(total['killed'] / max(reached, 1))} | "
               f"{pct(total['killed'] / max(reached - total['equivalent'], 1))} | |")
    planted = notes_section(notes_path, "## Planted faults")
    if planted:
        out += [""] + planted
    out += ["", "## Functions no fast test reaches", ""]
    for path, e in sorted(entries.items()):
        if e["unreached"]:
            out.append(f"- `{path}`: " + ", ".join(f"{f} ({n})" for f, n in e["unreached"].items()))
    out += ["", "## Surviving mutants", "",
            "Each with the changed line(s) and the analysis from mutation-notes.md (\"not yet analysed\" where none).", ""]
    names = set()
    for path, e in sorted(entries.items()):
        if not e["survivors"]:
            continue
        out += [f"### `{path}` ({len(e['survivors'])})", ""]
        for name, diff in e["survivors"].items():
            names.add(name)
            out.append(f"- `{name.split('.', 2)[-1]}`: `{diff}` — {note_for(name, notes) or 'not yet analysed'}")
        out.append("")
    stale = [n for n in notes if not n.endswith("*") and n not in names]
    if stale:
        out += ["## Notes that match no current survivor (killed since, or renamed)", ""] + [f"- `{n}`" for n in stale] + [""]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="mutants")
    ap.add_argument("--notes", default="docs/mutation-notes.md")
    ap.add_argument("--out", default="docs/mutation.md")
    ap.add_argument("--json", default="docs/mutation.json", help="per-file results; this run replaces the files it covered")
    ap.add_argument("--runtime", default="", help="one line naming the run (command, wall time, machine, date)")
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    args = ap.parse_args()
    store = Path(args.json)
    entries = json.loads(store.read_text()) if store.exists() else {}
    run = file_entries(load_results(Path(args.root)), args.date, args.runtime)
    entries.update(run)
    store.write_text(json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    Path(args.out).write_text("\n".join(render(entries, Path(args.notes))) + "\n")
    killed = sum(e["killed"] for e in run.values())
    reached = killed + sum(e["survived"] for e in run.values())
    print(f"wrote {args.out} and {args.json}: this run {killed}/{reached} reached mutants killed "
          f"({killed / max(reached, 1):.1%}) in {len(run)} files; {len(entries)} files in all")


if __name__ == "__main__":
    main()
