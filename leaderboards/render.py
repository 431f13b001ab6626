"""Leaderboard output: rich tables for the terminal, and `md`, `csv` and `html` exports.

The HTML export is one self-contained page (inline CSS, figures as base64 PNGs) that can be mailed or
attached to a paper's supplement. Columns empty in a whole table (MC1/MC2 without TruthfulQA, CUDA memory on a
CPU run) are hidden in the terminal, Markdown and HTML views; the CSV and JSON keep every column.

Honesty: ranks are shared within a tier ("1=", leaderboards/compare.py `shared_ranks`), and when every ranked row
sits in one tier each view opens with a banner saying that no method can be told apart (`banner`).
Terminal: by default a compact table (rank, method, tier, constraint and the headline metrics with their CIs)
that fits 100 columns; `wide=True` prints every column. JSON: the whole leaderboard (rows, CIs, tiers, paired
tests, notes, judge fingerprints) for re-aggregation. HTML: long cells wrap or fold into a <details>, columns
constant across every row move into the table's caption, Cost sits beside Unsafe, and a small inline script
sorts a column on a click (nothing is fetched).
"""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leaderboards.compare import WORDS, Comparison, one_tier
from leaderboards.table import RG_CLIPPED, Column, Leaderboard, LeaderboardTable, UNITS_METRIC

FORMATS = ("table", "md", "csv", "html", "json")
ONE_TIER_BANNER = "No method can be told apart from the others after Holm correction: ranks are equal."
NO_TIERS_BANNER = ("Ranks are positions under the ordering rule only: some methods lack per-prompt values on the same "
                   "prompts, so no paired test backs them.")
# The compact terminal view's metrics, in this order, when declared (evaluators/metrics.py) and present in the table.
HEADLINE = ("reward_mean", "unsafe_rate", "harmful_compliance", "refusal_rate")
COMPACT_LEAD = ("rank", "method", "tier", "constraint")
# HTML: a metric placed right before its partner, in the partner's table (related numbers side by side).
BESIDE = {"cost_mean": "unsafe_rate"}
LONG_CELL = 48  # characters: a longer HTML text cell folds into a <details> showing its first clause
ORDER_RULE = ("Ordered by: runs judged by their own annotator last (unranked); refusal rate on XSTest's safe prompts within "
              "scoring.max_refusal_rate before over-refusers; constraint status (holds, mean-only, violated); reward, "
              "descending (length-controlled when every row has it). Tiers: statistically indistinguishable (paired, Holm, 5%).")
STATUS_STYLE = {"holds": "green", "mean-only": "yellow", "violated": "red", "n/a": "dim"}
MISSING = "–"
CLIPPED = "*"  # after a corrected unsafe rate clipped at 0 or 1 (the table's notes say what limit it sits on)


# -- cells ------------------------------------------------------------------------------------------------

def row_cell(col: Column, row: dict[str, Any], sep: str = " ") -> str:
    """A row's cell; a corrected unsafe rate clipped at a bound gets the CLIPPED mark after its value, and a rank
    shared by a tier an "=" ("1=")."""
    if col.key == "rank" and row.get("rank") is not None and row.get("tied"):
        return f"{row['rank']}="
    mark = CLIPPED if col.key == "unsafe_rate_corrected" and row.get(RG_CLIPPED) else ""
    return format_cell(col, row.get(col.key), sep, mark)


def banner(table: LeaderboardTable) -> str | None:
    """The line each view opens a table with when its ranks say nothing: one tier, or no tiers at all."""
    ranked = [r for r in table.rows if r.get("position") is not None]
    if one_tier(table.rows):
        return ONE_TIER_BANNER
    if len(ranked) > 1 and all(r.get("tier") is None for r in ranked):
        return NO_TIERS_BANNER
    return None


def format_cell(col: Column, value: Any, sep: str = " ", mark: str = "") -> str:
    if value is None:
        return MISSING
    if col.kind == "ci":
        return format_estimate(value, percent=col.percent, digits=col.digits, sep=sep, mark=mark)
    if col.kind == "bool":
        return "yes" if value else ""
    if col.kind == "float":
        return f"{value:,.{col.digits}f}"
    return str(value)


def format_estimate(est: dict[str, Any] | None, *, percent: bool = False, digits: int = 3, sep: str = " ",
                    mark: str = "") -> str:
    """`0.412 [0.351, 0.470]`, or `12.0% [8.0, 16.5]` for rates; the bracket is the 95% CI; `mark` follows the value."""
    if not est or est.get("value") is None:
        return MISSING
    if percent:
        fmt = lambda x: f"{100 * x:.1f}"  # noqa: E731
        head = f"{fmt(est['value'])}%"
    else:
        fmt = lambda x: f"{x:.{digits}f}"  # noqa: E731
        head = fmt(est["value"])
    head += mark
    if est.get("ci_low") is None or est.get("ci_high") is None:
        return head
    return f"{head}{sep}[{fmt(est['ci_low'])}, {fmt(est['ci_high'])}]"


def visible_columns(table: LeaderboardTable, columns: list[Column]) -> list[Column]:
    return [c for c in columns if any(row.get(c.key) not in (None, "") for row in table.rows)]


COMPARISON_HEAD = ("A", "B", "metric", "A − B [95% CI]", "test", "p", "p (Holm)", "significant")


def comparison_cells(c: Comparison) -> list[str]:
    """One paired comparison as table cells (rates in points)."""
    percent = WORDS.get(c.metric, ("", "", False))[2]
    diff = format_estimate({"value": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high}, percent=percent)
    p_holm = MISSING if c.p_holm is None else f"{c.p_holm:.3g}"
    return [c.a, c.b, WORDS.get(c.metric, (c.metric,))[0], diff, c.test, f"{c.p:.3g}", p_holm, "yes" if c.significant else ""]


def comparison_sections(table: LeaderboardTable) -> list[tuple[str, list[Comparison]]]:
    tc = table.comparisons
    if tc is None:
        return []
    return [(title, rows) for title, rows in (("Paired comparisons vs SFT (Holm-corrected over the methods, per metric)", tc.vs_baseline),
                                              ("Paired comparisons between methods (Holm-corrected over the pairs, per metric)", tc.pairwise)) if rows]


def constraint_line(table: LeaderboardTable) -> str:
    if table.threshold is None:
        return "Constraint: none recorded (or the runs disagree; see the notes)."
    metric = UNITS_METRIC.get(table.units or "", table.units)
    return f"Constraint: {metric.replace('_', ' ')} ≤ b = {table.threshold:g}. {ORDER_RULE}"


# -- terminal ----------------------------------------------------------------------------------------------

def column_groups(table: LeaderboardTable, columns: list[Column]) -> list[tuple[str, list[Column]]]:
    """Safety results, then TruthfulQA and resources (with the method again): two tables that each fit a
    130-column terminal or a 1200-pixel page, instead of one that fits neither."""
    cols = visible_columns(table, columns)
    groups = [(table.title, [c for c in cols if not c.secondary]),
              (f"{table.title}: TruthfulQA MC and resources", [c for c in cols if c.secondary or c.key == "method"])]
    return [(title, group) for title, group in groups if any(c.key != "method" for c in group)]


def compact_columns(table: LeaderboardTable, columns: list[Column]) -> list[Column]:
    """The compact view's columns: COMPACT_LEAD, then the HEADLINE metrics the table has (their headers and formats
    come from the declarations, through `columns`)."""
    by_key = {c.key: c for c in visible_columns(table, columns)}
    return [by_key[k] for k in COMPACT_LEAD + HEADLINE if k in by_key]


def rich_tables(table: LeaderboardTable, columns: list[Column], wide: bool = True, console=None) -> list:
    """`wide`: every column, in two tables (`column_groups`); else one compact table (`compact_columns`) that fits
    100 columns: intervals go under their value, headers and long names wrap instead of being cut. In a terminal
    narrower than the compact table's minimum (`console`), its last metrics move to a second table with the method
    again, rather than be cropped."""
    if wide:
        out = [_rich_table(table, title, group, wide) for title, group in column_groups(table, columns)]
    else:
        first, rest = compact_columns(table, columns), []
        n_lead = sum(c.key in COMPACT_LEAD for c in first)
        out = [_rich_table(table, table.title, first, wide)]
        # the width with every interval on one line (headers may wrap): past the terminal's, move the last metric
        while console is not None and len(first) > n_lead + 1 and \
                console.measure(_rich_table(table, "", first, wide, header=False),
                                options=console.options.update_width(10_000)).maximum > console.width:
            rest.insert(0, first.pop())
            out = [_rich_table(table, table.title, first, wide)]
        if rest:
            out.append(_rich_table(table, f"{table.title} (continued)", [c for c in first if c.key == "method"] + rest, wide))
    out[0].caption, out[0].caption_justify = constraint_line(table), "left"
    return out


def _rich_table(table: LeaderboardTable, title: str, group: list[Column], wide: bool, header: bool = True):
    from rich import box
    from rich.table import Table

    t = Table(title=title or None, header_style="bold", box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False,
              collapse_padding=not wide, show_edge=wide, show_header=header)  # compact: two spaces between columns, no edge
    for c in group:
        # Names never wrap (the compact view folds one longer than 20); a CI folds only in a terminal too narrow.
        width = max(len(format_cell(c, r.get(c.key))) for r in table.rows) if c.kind == "text" else None
        if not wide and width:
            width = min(width, 20)
        t.add_column(c.header, justify="left" if c.kind == "text" else "right", overflow="fold",
                     no_wrap=wide and c.kind != "ci", min_width=width)
    for row in table.rows:
        cells = [row_cell(c, row, sep="\n") for c in group]
        if "constraint" in [c.key for c in group]:
            i = [c.key for c in group].index("constraint")
            cells[i] = f"[{STATUS_STYLE[row['constraint']]}]{cells[i]}[/]"
        t.add_row(*cells)
    return t


def print_leaderboard(lb: Leaderboard, console=None, wide: bool = False) -> None:
    """The terminal view: per table its banner, the compact table (`wide`: every column) and the notes."""
    from rich.console import Console
    from rich.panel import Panel

    console = console or Console()
    if not lb.tables:
        console.print("No finished runs match. Run `bench run` or `bench suite` first.")
    for table in lb.tables:
        if banner(table):
            console.print(Panel(banner(table), style="bold yellow", expand=False))
        for t in rich_tables(table, lb.columns, wide=wide, console=console):
            console.print(t)
        for note in table.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print()
    if not wide and lb.tables:
        console.print("[dim]More columns (TruthfulQA, judge accuracy, win rates, learning checks, resources): --wide; "
                      "everything, paired tests included: --format json or html.[/]")
    for note in lb.notes:
        console.print(f"[dim]{note}[/]")


# -- exports -----------------------------------------------------------------------------------------------

def to_markdown(lb: Leaderboard, base: Path | None = None) -> str:
    """`base`: the folder the file goes to (sweep links are relative to it; absolute without one)."""
    lines = ["# SafeAlign Bench leaderboard", ""]
    for table in lb.tables:
        cols = visible_columns(table, lb.columns)
        lines += [f"## {table.title}", ""] + ([f"> **{banner(table)}**", ""] if banner(table) else []) + [constraint_line(table), ""]
        lines.append("| " + " | ".join(c.header for c in cols) + " |")
        lines.append("|" + "|".join("---" if c.kind == "text" else "---:" for c in cols) + "|")
        for row in table.rows:
            lines.append("| " + " | ".join(row_cell(c, row).replace("|", "\\|") for c in cols) + " |")
        lines.append("")
        lines += [f"- note: {n}" for n in table.notes] + ([""] if table.notes else [])
        for title, comps in comparison_sections(table):
            lines += [f"### {title}", "", "| " + " | ".join(COMPARISON_HEAD) + " |", "|" + "|".join("---" for _ in COMPARISON_HEAD) + "|"]
            lines += ["| " + " | ".join(comparison_cells(c)) + " |" for c in comps] + [""]
        sweeps = sweeps_for(table, lb.sweeps)
        if sweeps:
            lines += ["### Sweeps (`bench sweep`: one method over one config field's values)", ""] + sweep_links_md(sweeps, base) + [""]
    orphans = unmatched_sweeps(lb)
    if orphans:
        lines += ["## Sweeps of settings with no table above", ""] + sweep_links_md(orphans, base) + [""]
    lines += [f"_{n}_" for n in lb.notes] + ([""] if lb.notes else [])
    lines += ["### Columns", ""] + [f"- **{c.header}**: {c.help}" for c in lb.columns] + [""]
    return "\n".join(lines)


def to_csv(lb: Leaderboard) -> str:
    names, rows = lb.flat()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(rows)
    return buf.getvalue()


def to_json(lb: Leaderboard) -> str:
    """The whole leaderboard as JSON: the columns, then per table its rows (every value and 95% CI, rank, tier),
    banner, notes, paired comparisons with Holm p-values, and the judges and annotators of every run with their
    fingerprints; NaN becomes null."""
    from evaluators.judging import record_judges

    def runs_of(table: LeaderboardTable) -> list[dict[str, Any]]:
        out = []
        for r in table.runs:
            judges, annotators = record_judges(r)
            out.append({"run_id": r.get("run_id"), "method": r.get("method"), "seed": r.get("seed"), "suite": r.get("suite"),
                        "date": r.get("date"), "git_hash": r.get("git_hash"), "schema_version": r.get("schema_version"),
                        "judges": {k: _identity(v) for k, v in judges.items() if isinstance(v, dict)},
                        "annotators": {k: _identity(v) for k, v in annotators.items() if isinstance(v, dict)},
                        "self_judged": r.get("self_judged", [])})
        return out

    def table_json(table: LeaderboardTable) -> dict[str, Any]:
        tc = table.comparisons
        return {"dataset": table.dataset, "model": table.model, "profile": table.profile, "title": table.title,
                "threshold": table.threshold, "units": table.units, "constraint_metric": table.x_metric,
                "max_refusal_rate": table.max_refusal_rate, "banner": banner(table), "one_tier": one_tier(table.rows),
                "rows": table.rows, "notes": table.notes,
                "comparisons": None if tc is None else {
                    "metrics": tc.metrics, "tiers": tc.tiers, "sentences": tc.sentences,
                    "vs_baseline": [c.as_dict() for c in tc.vs_baseline], "pairwise": [c.as_dict() for c in tc.pairwise]},
                "runs": runs_of(table)}

    data = {"title": "SafeAlign Bench leaderboard", "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "columns": [{"key": c.key, "header": c.header, "kind": c.kind, "help": c.help, "higher_is_better": c.higher_is_better,
                         "percent": c.percent} for c in lb.columns],
            "tables": [table_json(t) for t in lb.tables], "notes": lb.notes,
            "sweeps": [{k: v for k, v in s.items() if k != "dir"} for s in lb.sweeps]}
    return json.dumps(_plain(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _identity(scorer: dict[str, Any]) -> dict[str, Any]:
    """A judge's or annotator's name, fingerprint, role and kind (what identifies it), without its held-out numbers."""
    return {k: scorer.get(k) for k in ("name", "fingerprint", "role", "kind") if k in scorer}


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to None, paths and tuples to str and lists."""
    import math

    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalar or array
        return _plain(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1500px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.84rem; margin: 0.6rem 0; max-width: 100%; }
caption { caption-side: bottom; text-align: left; color: #57606a; font-size: 0.8rem; padding-top: 0.3rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.45rem; text-align: right; white-space: nowrap; vertical-align: top; }
th { background: #f6f8fa; white-space: normal; vertical-align: bottom; } td.text, th.text { text-align: left; }
td.text { white-space: normal; overflow-wrap: anywhere; max-width: 24rem; } td.method, td.constraint { white-space: nowrap; }
table.sortable th { cursor: pointer; } table.sortable th[data-dir=asc]::after { content: " ▲"; }
table.sortable th[data-dir=desc]::after { content: " ▼"; }
td .ci { color: #57606a; font-size: 0.78rem; }
td details summary { cursor: pointer; } td details[open] summary { color: #57606a; }
tr.lead td.method { font-weight: 600; }
.banner { border: 1px solid #d4a72c; background: #fff8c5; padding: 0.6rem 0.9rem; font-weight: 600; border-radius: 6px; }
.c-holds { color: #1a7f37; font-weight: 600; } .c-mean-only { color: #9a6700; font-weight: 600; }
.c-violated { color: #cf222e; font-weight: 600; } .c-na { color: #6e7781; }
.note { color: #9a6700; } .meta { color: #6e7781; font-size: 0.85rem; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.5rem 0; }
dt { font-weight: 600; } dd { margin: 0 0 0.4rem 1rem; }
"""

# Click a header to sort its table by that column (again: the other way); cells carry their sort key in data-v,
# missing values sort last. Inline, so the page stays self-contained.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("thead th").forEach(function (th, i) {
    th.title = (th.title ? th.title + " " : "") + "(click to sort)";
    th.addEventListener("click", function () {
      var asc = th.dataset.dir !== "asc", body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      t.querySelectorAll("thead th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      rows.sort(function (a, b) {
        var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def to_html(lb: Leaderboard, title: str = "SafeAlign Bench leaderboard") -> str:
    from leaderboards.plots import data_uri, frontier_figure, lambda_figure

    e = html.escape
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
             f"<p class='meta'>Generated {now}. Brackets are 95% confidence intervals; click a column header to sort; "
             "the columns are explained at the end of the page.</p>"]
    if not lb.tables:
        parts.append("<p>No finished runs match.</p>")
    for table in lb.tables:
        parts.append(f"<h2>{e(table.title)}</h2>")
        if banner(table):
            parts.append(f"<p class='banner'>{e(banner(table))}</p>")
        parts.append(f"<p>{e(constraint_line(table))}</p>")
        parts += [_table_html(table, cols) for _, cols in html_groups(table, lb.columns)]
        parts += [f"<p class='note'>Note: {e(n)}</p>" for n in table.notes]
        for title, comps in comparison_sections(table):
            parts.append(f"<details><summary>{e(title)}</summary><table class='sortable'><thead><tr>"
                         + "".join(f"<th class='text'>{e(h)}</th>" for h in COMPARISON_HEAD) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td class='text' data-v='{e(_sort_text(x))}'>{e(x)}</td>"
                                                    for x in comparison_cells(c)) + "</tr>" for c in comps)
                         + "</tbody></table></details>")
        for fig, alt in ((frontier_figure(table), "reward vs cost with the Pareto frontier"),
                         (lambda_figure(table), "lambda trajectories")):
            if fig is not None:
                parts.append(f"<div><img alt='{e(alt)}: {e(table.title)}' src='{data_uri(fig)}'></div>")
        parts.append(_runs_html(table))
        sweeps = sweeps_for(table, lb.sweeps)
        if sweeps:
            parts += ["<h3>Sweeps (<code>bench sweep</code>: one method over one config field's values)</h3>", *sweeps_html(sweeps)]
    orphans = unmatched_sweeps(lb)
    if orphans:
        parts += ["<h2>Sweeps of settings with no table above</h2>", *sweeps_html(orphans)]
    parts += [f"<p class='meta'>{e(n)}</p>" for n in lb.notes]
    parts.append("<h2>Columns</h2><dl>")
    parts += [f"<dt>{e(c.header)}</dt><dd>{e(c.help)}</dd>" for c in lb.columns]
    parts.append(f"</dl><script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)


def html_groups(table: LeaderboardTable, columns: list[Column]) -> list[tuple[str, list[Column]]]:
    """`column_groups`, with each BESIDE metric moved right before its partner, into the partner's table."""
    groups = column_groups(table, columns)
    for key, partner in BESIDE.items():
        moved = [c for _, cols in groups for c in cols if c.key == key]
        if not moved or not any(c.key == partner for _, cols in groups for c in cols):
            continue
        groups = [(title, [c for c in cols if c.key != key]) for title, cols in groups]
        for _, cols in groups:
            if any(c.key == partner for c in cols):
                cols.insert([c.key for c in cols].index(partner), moved[0])
    return [(title, cols) for title, cols in groups if any(c.key != "method" for c in cols)]


def constant_columns(table: LeaderboardTable, cols: list[Column]) -> list[Column]:
    """Columns whose cell reads the same on every row (two rows or more): the HTML folds them into the caption.
    The rank, method and tier columns always stay."""
    if len(table.rows) < 2:
        return []
    return [c for c in cols if c.key not in ("rank", "method", "tier") and len({row_cell(c, r) for r in table.rows}) == 1]


def _sort_key(col: Column, row: dict[str, Any]) -> str:
    """What a cell sorts by: the value of an estimate, the position for the rank, the number or the text."""
    v = row.get("position") if col.key == "rank" else row.get(col.key)
    if isinstance(v, dict):
        v = v.get("value")
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    return f"{v:.9g}" if isinstance(v, (int, float)) else str(v)


def _sort_text(text: str) -> str:
    """The sort key of a rendered cell: its leading number when it has one ("12.0% [..]" -> 12.0), else the text."""
    head = text.split(" ")[0].rstrip("%*=")
    try:
        return f"{float(head):.9g}"
    except ValueError:
        return "" if text == MISSING else text


def _cell_html(col: Column, row: dict[str, Any]) -> str:
    """A cell's content: an interval on a second, smaller line; a long text as its first clause in a <details>."""
    e = html.escape
    text = row_cell(col, row, sep="\n")
    if col.kind == "text" and len(text) > LONG_CELL:
        head = text.split("; ")[0]
        head = head if len(head) <= LONG_CELL else head[:LONG_CELL].rsplit(" ", 1)[0]
        return f"<details><summary>{e(head)} …</summary>{e(text)}</details>"
    if "\n" in text:
        value, ci = text.split("\n", 1)
        return f"{e(value)}<br><span class='ci'>{e(ci)}</span>"
    return e(text)


def _table_html(table: LeaderboardTable, cols: list[Column]) -> str:
    """One sortable table; columns constant across its rows become a caption line. The first tier's method names
    are bold only when there are several tiers (one tier: no winner to mark)."""
    e = html.escape
    folded = constant_columns(table, cols)
    cols = [c for c in cols if c not in folded]
    several_tiers = len({r.get("tier") for r in table.rows if r.get("tier") is not None}) > 1
    parts = ["<table class='sortable'>"]
    if folded:  # caption-side: bottom (CSS) shows it under the table
        same = " · ".join(f"{c.header}: {row_cell(c, table.rows[0]) or 'none'}" for c in folded)
        parts.append(f"<caption>Same for every row: {e(same)}</caption>")
    parts += ["<thead><tr>", *[f"<th class='{c.kind}' title='{e(c.help)}'>{e(c.header)}</th>" for c in cols], "</tr></thead><tbody>"]
    for row in table.rows:
        parts.append(f"<tr class='{'lead' if several_tiers and row.get('tier') == 1 else ''}'>")
        for c in cols:
            cls = f"{c.kind} {c.key}" + (f" c-{row['constraint'].replace('/', '')}" if c.key == "constraint" else "")
            parts.append(f"<td class='{e(cls)}' data-v='{e(_sort_key(c, row))}'>{_cell_html(c, row)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _runs_html(table: LeaderboardTable) -> str:
    """The individual runs behind the rows (per-seed values stay visible next to the aggregates)."""
    e = html.escape
    head = ["run", "method", "seed", "reward", "cost", "unsafe", "date", "git"]
    out = [f"<details><summary>{len(table.runs)} run(s)</summary><table><thead><tr>",
           *[f"<th class='text'>{h}</th>" for h in head], "</tr></thead><tbody>"]
    for r in table.runs:
        safety = (r.get("results") or {}).get("safety") or {}
        cells = [r.get("run_id"), r.get("method"), r.get("seed"), format_estimate(safety.get("reward_mean")),
                 format_estimate(safety.get("cost_mean")), format_estimate(safety.get("unsafe_rate"), percent=True),
                 r.get("date"), (r.get("git_hash") or "")[:10]]
        out.append("<tr>" + "".join(f"<td class='text'>{e(str(c if c is not None else MISSING))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table></details>")
    return "".join(out)


# -- sweeps (`bench sweep` writes sweep.json, leaderboards/sweep.py; these read it as a plain dict) -------------

SWEEP_METRICS = ("reward_mean", "unsafe_rate", "cost_mean")


def sweep_title(s: dict[str, Any]) -> str:
    return f"{s['method']}: {s['key']} sweep · {s['dataset']} · {s['model']} · {s['profile']}"


def sweep_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a sweep: value, seeds, reward, unsafe rate, mean cost (95% CIs), constraint status, runs."""
    head = [s["key"].split(".")[-1], "seeds", "reward [95% CI]", "unsafe rate [95% CI]", "mean cost [95% CI]", "constraint", "runs"]
    rows = []
    for p in s.get("points", []):
        r = p.get("row") or {}
        failed = f"; failed: {'; '.join(p['failed'])}" if p.get("failed") else ""
        rows.append([f"{p['value']:g}", str(r.get("n_seeds", 0)), format_estimate(r.get("reward_mean")),
                     format_estimate(r.get("unsafe_rate"), percent=True), format_estimate(r.get("cost_mean")),
                     r.get("constraint", "no finished run"), ", ".join(p.get("run_ids", [])) + failed])
    return head, rows


def sweeps_for(table: LeaderboardTable, sweeps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweeps of the table's setting (dataset, model, profile)."""
    return [s for s in sweeps if (s.get("dataset"), s.get("model"), s.get("profile")) == (table.dataset, table.model, table.profile)]


def unmatched_sweeps(lb: Leaderboard) -> list[dict[str, Any]]:
    """Sweeps whose setting has no table (e.g. a runs dir holding only sweep runs, which the main table leaves out)."""
    return [s for s in lb.sweeps if not any(sweeps_for(t, [s]) for t in lb.tables)]


def sweep_links_md(sweeps: list[dict[str, Any]], base: Path | None) -> list[str]:
    """One line per sweep linking its table and figure, relative to `base` (the written file's folder) when given."""
    import os

    def rel(p: Path) -> str:
        return os.path.relpath(p, base) if base is not None else str(p)

    lines = []
    for s in sweeps:
        d = Path(s["dir"])
        png = Path(s.get("figure") or d / "sweep.png")
        link = f"[csv]({rel(Path(s['csv']))})" if s.get("csv") else f"[table]({rel(d / 'sweep.md')})"  # csv: --plots-dir copy
        lines.append(f"- {s['method']} over `{s['key']}` = {', '.join(f'{v:g}' for v in s['values'])}: {link}")
        head, rows = sweep_table(s)
        lines += ["", "| " + " | ".join(head[:-1]) + " |", "|" + "|".join("---:" for _ in head[:-1]) + "|"]  # run ids: sweep.md
        lines += ["| " + " | ".join(row[:-1]) + " |" for row in rows] + [""]
        if png.exists():
            lines += [f"![{s['method']} frontier over {s['key']}]({rel(png)})", ""]
    return lines


def copy_sweep_figures(sweeps: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Copy each sweep's figure and csv to `folder/<sweep id>.{png,csv}` and point the sweep at the copies (`figure`,
    `csv`), so a page written next to `folder` (e.g. committed docs) links nothing inside the runs dir."""
    import shutil

    out = []
    for s in sweeps:
        for name, field in (("sweep.png", "figure"), ("sweep.csv", "csv")):
            src = Path(s["dir"]) / name
            if src.exists():
                folder.mkdir(parents=True, exist_ok=True)
                dst = folder / f"{Path(s['dir']).name}{src.suffix}"
                shutil.copyfile(src, dst)
                s[field] = str(dst)
                out.append(dst)
    return out


def sweep_table_html(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><thead><tr>" + "".join(f"<th class='text'>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td class='text'>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</tbody></table>")


def sweeps_html(sweeps: list[dict[str, Any]]) -> list[str]:
    """Each sweep's table and figure, embedded (the page stays self-contained)."""
    import base64

    parts = []
    for s in sweeps:
        parts.append(f"<h3>{html.escape(sweep_title(s))}</h3>{sweep_table_html(*sweep_table(s))}")
        png = Path(s["dir"]) / "sweep.png"
        if png.exists():
            parts.append(f"<div><img alt='sweep frontier' src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')}'></div>")
    return parts


def render(lb: Leaderboard, fmt: str) -> str:
    """The export as text (`fmt` in md, csv, html, json)."""
    exporters = {"md": to_markdown, "csv": to_csv, "html": to_html, "json": to_json}
    if fmt not in exporters:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(exporters)}")
    return exporters[fmt](lb)


def write(lb: Leaderboard, fmt: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(lb, base=path.parent) if fmt == "md" else render(lb, fmt), encoding="utf-8")
    return path
