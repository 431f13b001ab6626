"""How the leaderboard reads (issue 27 item 2, issue 25 item 4): ranks shared within a tier and the one-tier banner,
the compact terminal view's width, the JSON export, the HTML page's folding, sorting and details, and the figures.

Stores are hand-built from tests/results_fixtures.py (no training), so every test runs in about a second."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from evaluators import metrics as declared
from harness.errors import BenchError
from leaderboards import cli as lb_cli
from leaderboards import render
from leaderboards.compare import shared_ranks
from leaderboards.table import build_leaderboard, columns
from results_fixtures import add_items, add_run, make_record

N_BOOT = 300


def _store(d: Path, specs: dict[str, dict], n: int = 120) -> None:
    """Methods answering the same n prompts: unsafe flags (a shared difficulty, each method flipping `flip` of them, or
    drawn at rate `unsafe`), rewards around `reward`, refusal flags; `record` updates the record before it is stored."""
    rng = np.random.default_rng(0)
    base = rng.random(n) < 0.45
    for method, spec in specs.items():
        unsafe = rng.random(n) < spec["unsafe"] if "unsafe" in spec else np.where(rng.random(n) < spec.get("flip", 0.05), ~base, base)
        reward = (spec.get("reward", 0.0) + rng.normal(0, 0.3, n)).tolist()
        refusal = (rng.random(40) < 0.05).astype(float).tolist()
        record = make_record(method, reward=spec.get("reward", 0.0), cost=spec.get("reward", 0.0) / 2, unsafe=float(unsafe.mean()),
                             n_prompts=n)
        for key, value in spec.get("record", {}).items():
            record[key] = value if not isinstance(value, dict) else {**record.get(key, {}), **value}
        values = {"unsafe_rate": unsafe.astype(float).tolist(), "reward_lc": reward, "reward_mean": reward, "refusal_rate": refusal}
        values.update(spec.get("items", {}))
        for name in spec.get("items", {}):  # a metric the fixture record lacks: an estimate at its declared path
            *parents, leaf = declared.get_metric(name).path
            block = record["results"]
            for key in parents:
                block = block.setdefault(key, {})
            block.setdefault(leaf, {"value": None, "ci_low": 0.0, "ci_high": 1.0})
        add_items(d, record, values, keys={"safety": "p", "refusal": "x", "truthfulqa": "q"})
        add_run(d, record)


def app() -> typer.Typer:
    a = typer.Typer()
    lb_cli.register(a)
    return a


def _terminal(lb, width: int = 100, wide: bool = False) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    render.print_leaderboard(lb, console, wide=wide)
    return console.export_text()


def _words(text: str) -> str:
    """The terminal text without the banner panel's box and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# -- ranks and the banner ------------------------------------------------------------------------------------------------

def test_shared_ranks_follow_the_tiers() -> None:
    """Competition ranking over tiers: every member gets its tier's first position; unranked rows stay unranked; without
    tiers the rank is the position and nobody is tied."""
    rows = [{"position": p, "tier": t} for p, t in zip(range(1, 7), (1, 1, 2, 2, 2, 3))] + [{"position": None, "tier": None}]
    shared_ranks(rows)
    assert [r["rank"] for r in rows] == [1, 1, 3, 3, 3, 6, None]
    assert [r["tied"] for r in rows] == [True, True, True, True, True, False, False]
    rows = [{"position": 1, "tier": None}, {"position": 2, "tier": None}]
    shared_ranks(rows)
    assert [(r["rank"], r["tied"]) for r in rows] == [(1, False), (2, False)]


def test_one_tier_shows_equal_ranks_a_banner_and_no_bold_winner(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store(d, {"sft": {}, "dpo-helpful": {"reward": 0.02}, "pddpo": {"reward": 0.04}})
    lb = build_leaderboard(d, n_boot=N_BOOT)
    (table,) = lb.tables
    assert {r["tier"] for r in table.rows} == {1} and [r["rank"] for r in table.rows] == [1, 1, 1]
    assert [r["position"] for r in table.rows] == [1, 2, 3]  # the ordering rule still orders the rows
    md = render.render(lb, "md")
    assert f"> **{render.ONE_TIER_BANNER}**" in md
    assert [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| 1")] == ["| 1="] * 3
    page = render.render(lb, "html")
    assert f"<p class='banner'>{render.ONE_TIER_BANNER}</p>" in page and "<tr class='lead'>" not in page
    text = _terminal(lb)
    assert render.ONE_TIER_BANNER in _words(text) and text.count("1=") == 3
    assert json.loads(render.render(lb, "json"))["tables"][0]["banner"] == render.ONE_TIER_BANNER


def test_separated_tiers_rank_apart_without_a_banner(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store(d, {"sft": {"flip": 0.02}, "dpo-helpful": {"flip": 0.03}, "pddpo": {"unsafe": 0.05}})
    lb = build_leaderboard(d, n_boot=N_BOOT)
    (table,) = lb.tables
    assert [(r["method"], r["rank"], r["tied"]) for r in table.rows][0] == ("pddpo", 1, False)
    assert {(r["rank"], r["tied"]) for r in table.rows[1:]} == {(2, True)}
    md = render.render(lb, "md")
    assert render.ONE_TIER_BANNER not in md and "| 1 | pddpo |" in md and md.count("| 2= |") == 2
    page = render.render(lb, "html")
    main = page[page.index("<table class='sortable'>"):]
    assert "class='banner'" not in page and main[:main.index("</table>")].count("<tr class='lead'>") == 1  # tier 1, bold


def test_ranks_without_tiers_say_they_are_positions_only(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    for method, reward in (("sft", 0.0), ("pddpo", 0.3)):  # no per-prompt values: no paired test, no tiers
        add_run(d, make_record(method, reward=reward))
    lb = build_leaderboard(d, n_boot=N_BOOT)
    assert [r["rank"] for r in lb.tables[0].rows] == [1, 2]
    assert render.NO_TIERS_BANNER in render.render(lb, "md") and render.NO_TIERS_BANNER in _words(_terminal(lb))


# -- the compact terminal view -------------------------------------------------------------------------------------------

LONG_NAMES = ("sacpo-naive-merge", "pddpo-online", "dpo-harmless", "ppo-shaping", "sft")


@pytest.fixture
def with_harmful(monkeypatch: pytest.MonkeyPatch):
    """The harmful-compliance metric as evaluators/metrics.py declares it, or, before that lands, a declaration with a
    long label (the widest header the compact view must fit)."""
    try:
        return declared.get_metric("harmful_compliance")
    except KeyError:
        m = declared.Metric("harmful_compliance", ("harmful", "harmful_compliance"), False, "Harmful compliance",
                            "share of harmful prompts the refusal judge finds complied with [95% CI]", bounded=True, percent=True)
        monkeypatch.setattr(declared, "METRICS", declared.METRICS + (m,))
        return m


def test_compact_view_fits_100_columns_with_whole_headers(tmp_path: Path, with_harmful) -> None:
    d = tmp_path / "runs"
    rng = np.random.default_rng(1)
    _store(d, {name: {"reward": -0.123 * i, "items": {with_harmful.name: (rng.random(120) < 0.3 + 0.1 * i).astype(float).tolist()}}
               for i, name in enumerate(LONG_NAMES)})
    lb = build_leaderboard(d, n_boot=N_BOOT)
    text = _terminal(lb)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100 and "…" not in text
    cols = render.compact_columns(lb.tables[0], lb.columns)
    assert [c.key for c in cols] == ["rank", "method", "tier", "constraint", "reward_mean", "unsafe_rate", with_harmful.name,
                                     "refusal_rate"]
    head = "\n".join(lines[:12])
    for c in cols:
        for word in c.header.split():
            assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", head, re.M), (word, head)  # whole, maybe wrapped
    assert all(name in text for name in LONG_NAMES)
    harmful = [r[with_harmful.name] for r in lb.tables[0].rows]
    assert all(render.format_estimate(h, percent=True).split(" ")[0] in text for h in harmful)
    # a narrower terminal: the last metrics move to a second table (method again) instead of being cropped
    narrow = _terminal(lb, width=72)
    assert max(map(len, narrow.splitlines())) <= 72 and "(continued)" in narrow
    assert all(render.format_estimate(r["refusal_rate"], percent=True).split(" ")[0] in narrow for r in lb.tables[0].rows)
    assert "(continued)" not in text
    # --wide: every column (TruthfulQA, learning checks, resources), in two tables
    wide = _terminal(lb, width=250, wide=True)
    assert "MC1" in wide and "Learned" in wide and "MC1" not in text


def test_leaderboard_command_wide_json_and_errors(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store(d, {"sft": {}, "pddpo": {"reward": 0.1}})
    runner = CliRunner()
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(d), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert [r["method"] for r in json.loads(out.output)["tables"][0]["rows"]] == ["pddpo", "sft"]
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(d), "--format", "json", "-o", str(tmp_path / "lb.json")])
    assert out.exit_code == 0 and json.loads((tmp_path / "lb.json").read_text())["tables"][0]["title"]
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(d), "--wide"])
    assert out.exit_code == 0 and "Learned" in out.output
    out = runner.invoke(app(), ["leaderboard", "--runs-dir", str(d), "--wide", "--format", "json"])
    assert isinstance(out.exception, BenchError) and "--wide" in str(out.exception)


# -- JSON -------------------------------------------------------------------------------------------------------------------

def test_json_export_round_trips_the_table(tmp_path: Path) -> None:
    """Every number of the table comes back from the JSON (cells re-formatted from it read as in the Markdown), with the
    tiers, paired tests, notes and each run's judges and annotators with their fingerprints."""
    d = tmp_path / "runs"
    _store(d, {"sft": {"flip": 0.02}, "dpo-helpful": {"flip": 0.03}, "pddpo": {"unsafe": 0.05}})
    lb = build_leaderboard(d, n_boot=N_BOOT)
    data = json.loads(render.render(lb, "json"))
    (table,), (t,) = lb.tables, data["tables"]
    assert [r["method"] for r in t["rows"]] == [r["method"] for r in table.rows]
    md = render.render(lb, "md")
    cols = {c.key: c for c in columns()}
    for row, back in zip(table.rows, t["rows"]):
        for key in ("rank", "tier", "constraint", "reward_mean", "unsafe_rate", "refusal_rate", "unsafe_rate_corrected"):
            assert back[key] == pytest.approx(row[key]) if isinstance(row[key], dict) else back[key] == row[key]
        cells = [render.row_cell(cols[k], back) for k in ("rank", "method", "tier")] + [str(back["n_seeds"]), back["constraint"],
                                                                                         render.row_cell(cols["reward_mean"], back)]
        assert "| " + " | ".join(cells) + " |" in md
    tc = table.comparisons
    assert t["comparisons"]["tiers"] == tc.tiers and t["comparisons"]["metrics"] == tc.metrics
    assert [(c["a"], c["b"], c["metric"], c["p_holm"], c["significant"]) for c in t["comparisons"]["pairwise"]] == \
        [(c.a, c.b, c.metric, pytest.approx(c.p_holm), c.significant) for c in tc.pairwise]
    assert t["notes"] == table.notes and t["threshold"] == 0.2 and t["constraint_metric"] == "unsafe_rate"
    run = t["runs"][0]
    assert run["judges"]["safety"]["fingerprint"] == "sj1" and run["annotators"]["cost"]["fingerprint"] == "c1"
    assert {c["key"] for c in data["columns"]} >= {m.name for m in declared.METRICS}


# -- HTML -------------------------------------------------------------------------------------------------------------------

def test_html_folds_constant_columns_and_details_long_cells(tmp_path: Path) -> None:
    long_learned = "; ".join(f"s{s}: no: pddpo-stage1 acc 0.5{s} < 0.60 (+3 more)" for s in range(3))
    d = tmp_path / "runs"
    _store(d, {"sft": {}, "pddpo": {"reward": 0.1, "record": {"train": {"learned": long_learned}}}})
    lb = build_leaderboard(d, n_boot=N_BOOT)
    (table,) = lb.tables
    page = render.render(lb, "html")
    main = page[page.index("<table class='sortable'>"):]
    main = main[:main.index("</table>")]
    # one seed and the same judge everywhere: Seeds and Judge acc. are constant, folded into the caption
    assert "<caption>Same for every row: " in main and "Seeds: 1" in main and "Judge acc.: 85.0% [82.0, 88.0]" in main
    headers = re.findall(r"<th [^>]*>([^<]*)</th>", main)
    assert "Seeds" not in headers and "Judge acc." not in headers and "Reward" in headers and "Tier" in headers
    assert headers.index("Cost") + 1 == headers.index("Unsafe")  # related metrics side by side
    assert f"<details><summary>s0: no: pddpo-stage1 acc 0.50 &lt; 0.60 (+3 more) …</summary>{long_learned.replace('<', '&lt;')}" in main
    # a column that differs between rows stays
    assert render.constant_columns(table, [c for c in lb.columns if c.key == "reward_mean"]) == []


def test_html_columns_sort_with_an_inline_script(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    _store(d, {"sft": {}, "pddpo": {"reward": 0.1}})
    page = render.render(build_leaderboard(d, n_boot=N_BOOT), "html")
    script = page[page.index("<script>"):page.index("</script>")]
    assert "table.sortable" in script and "addEventListener(\"click\"" in script and "dataset.v" in script
    assert "<script src" not in page and "http" not in page.replace("http-equiv", "")  # no CDN
    values = re.findall(r"<td class='ci reward_mean' data-v='([^']*)'", page)
    assert len(values) == 2 and float(values[0]) > float(values[1])  # the reward's value, as a number


def test_wall_time_note_names_runs_that_reused_work(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    reused = {"wall_s": 3.0, "reused": [{"kind": "dpo", "name": "pddpo-stage1", "trained_as": "dpo-helpful", "seconds_saved": 335.2}]}
    record = make_record("pddpo")
    record["stages"]["train"].update(reused)
    record["stages"]["generate"]["reused"] = [{"kind": "generations"}]
    record["stages"]["generate"]["cache_hit"] = True  # the same reuse, recorded twice: named once
    add_run(d, record)
    add_run(d, make_record("sft"))
    (table,) = build_leaderboard(d, n_boot=N_BOOT).tables
    (note,) = [n for n in table.notes if n.startswith("Wall s")]
    assert "(pddpo s0: dpo pddpo-stage1 (335 s saved), generations)" in note and "sft" not in note
    add_run(d := tmp_path / "plain", make_record("sft"))
    assert not [n for n in build_leaderboard(d, n_boot=N_BOOT).tables[0].notes if n.startswith("Wall s")]


# -- figures ------------------------------------------------------------------------------------------------------------------

def _crowded(d: Path, names: list[str], trajectories: dict[str, dict[int, list[float]]] | None = None) -> None:
    """Methods whose points nearly coincide (the labels' worst case), with λ trajectories for some."""
    rng = np.random.default_rng(3)
    for name in names:
        for seed, lams in (trajectories or {}).get(name, {0: []}).items():
            traj = [{"iteration": k + 1, "lambda": v, "cost_estimate": 0.3 - 0.01 * k} for k, v in enumerate(lams)]
            add_run(d, make_record(name, seed=seed, reward=0.3 + 0.004 * rng.standard_normal(), cost=0.3,
                                   unsafe=0.2 + 0.006 * rng.standard_normal(), trajectory=traj))


def test_frontier_labels_never_overlap_and_the_axes_say_what_the_table_says(tmp_path: Path) -> None:
    from leaderboards.plots import frontier_figure, palette

    names = ["sft", "dpo-helpful", "dpo-harmless", "safedpo", "sacpo", "sacpo-kto", "sacpo-naive-merge", "pddpo",
             "pddpo-online", "p-sacpo", "pecan", "mocan"]
    _crowded(tmp_path / "runs", names)
    (table,) = build_leaderboard(tmp_path / "runs", n_boot=N_BOOT).tables
    fig = frontier_figure(table)
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text() in names]
    assert sorted(t.get_text() for t in labels) == sorted(names)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    unsafe = declared.get_metric("unsafe_rate")
    assert "safety judge" in ax.get_xlabel() and f"column {unsafe.label};" in ax.get_xlabel() and "cost > 0" not in ax.get_xlabel()
    assert "column Reward; higher is better" in ax.get_ylabel()
    assert len(set(palette(len(names)))) == len(names) and len(set(palette(40))) == 40  # no colour repeats


def test_lambda_figure_has_one_panel_per_method_a_legend_outside_and_a_readable_cap(tmp_path: Path) -> None:
    from leaderboards.plots import lambda_figure

    _crowded(tmp_path / "runs", ["sft", "pddpo", "pecan"],
             {"pddpo": {0: [1.0, 2.0, 3.0, 4.0], 1: [1.5, 2.5, 3.0, 3.5], 2: [100.0] * 4}, "pecan": {0: [0.5, 1.0, 1.5, 2.0]}})
    (table,) = build_leaderboard(tmp_path / "runs", n_boot=N_BOOT).tables
    fig = lambda_figure(table)
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["pddpo", "pecan"]
    assert panels[0].get_yscale() == "symlog" and panels[1].get_yscale() == "linear"  # the cap at 100 vs λ 1-4
    assert panels[0].get_ylim()[0] == 0.0
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(a.get_window_extent(renderer)) for a in fig.axes if a.get_visible())
    assert {t.get_text() for t in legend.get_texts()} >= {"seed 0", "seed 1", "seed 2", "b = 0.2"}
