"""Leaderboard figures: reward vs the constrained metric with the Pareto frontier, and λ trajectories.

Uses matplotlib's object API (`Figure`, rendered by the Agg canvas): no pyplot state, no display, safe in tests
and on headless servers. Figures are written as PNG files or embedded in HTML as base64 data URIs.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leaderboards.table import LeaderboardTable, lambda_trajectories

if TYPE_CHECKING:
    from matplotlib.figure import Figure

def axis_label(key: str) -> str:
    """An axis name from the metric's declaration (evaluators/metrics.py): what it measures, the table column it
    matches, and its direction; e.g. the unsafe rate is the safety judge's decision, as in the table."""
    from evaluators.metrics import get_metric

    m = get_metric(key)
    what = re.split(r" \(| \[", m.help)[0]
    return f"{what} (column {m.label}; {'higher' if m.higher_is_better else 'lower'} is better)"


AXIS_LABELS = {key: axis_label(key) for key in ("unsafe_rate", "cost_mean")}
MARKERS = "osD^vPX*<>hp"


def palette(n: int) -> list:
    """n distinct colours: matplotlib's qualitative maps (tab10, Dark2, Set1, Accent) one after the other, repeated
    shades dropped; past their ~30 colours, evenly spaced hues."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    out: list[str] = []
    for name in ("tab10", "Dark2", "Set1", "Accent"):
        for c in colormaps[name].colors:
            if to_hex(c) not in out and to_hex(c) not in ("#999999", "#ffff33", "#ffff99", "#7f7f7f"):  # greys, yellows
                out.append(to_hex(c))
    if n > len(out):
        hsv = colormaps["hsv"]
        out += [to_hex(hsv(i / (n - len(out)))) for i in range(n - len(out))]
    return out[:n]


def method_colors(methods: list[str]) -> dict[str, str]:
    """One colour per method, in the order given (the frontier and the λ figure use the same ones)."""
    return dict(zip(methods, palette(len(methods))))


def frontier_figure(table: LeaderboardTable) -> "Figure | None":
    """Mean reward against the constraint's metric, 95% CIs as error bars, the frontier as a staircase.

    The staircase is the best reward any method reaches at or below each cost level; `b` is the threshold. Each
    method has its own colour and marker (filled: on the frontier); its name is placed where it overlaps no other
    name (`place_labels`), with a leader line when it had to move away from its point."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    from evaluators.metrics import get_metric

    x_key = table.x_metric
    rows = [r for r in table.rows if r.get("reward_mean") and r.get(x_key)]
    if not rows:
        return None
    colors = method_colors([r["method"] for r in rows])
    fig = Figure(figsize=(8.0, 5.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        x, y = row[x_key], row["reward_mean"]
        color = colors[row["method"]]
        ax.errorbar(x["value"], y["value"], xerr=_err(x), yerr=_err(y), fmt=MARKERS[i % len(MARKERS)], capsize=3, ms=7,
                    color=color, mfc=color if row.get("pareto") else "white", elinewidth=0.9, alpha=0.9, zorder=3)
    if table.threshold is not None:  # the x axis is the constrained metric, so b is a vertical line
        ax.axvline(table.threshold, color="tab:red", ls=":", lw=1.2, label=f"threshold b = {table.threshold:g}")
    ax.margins(x=0.12, y=0.12)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[x_key]["value"])
    if front:  # the staircase runs on to the right edge: the best reward stays reachable at any higher cost
        right = ax.get_xlim()[1]
        ax.plot([r[x_key]["value"] for r in front] + [right], [r["reward_mean"]["value"] for r in front + front[-1:]],
                drawstyle="steps-post", ls="--", color="0.35", lw=1.2, label="Pareto frontier (filled markers)", zorder=2)
        ax.set_xlim(right=right)
    if get_metric(x_key).percent:
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.set_xlabel(axis_label(x_key), fontsize=9)
    ax.set_ylabel(axis_label("reward_mean"), fontsize=9)
    ax.set_title(f"Reward vs {get_metric(x_key).label.lower()}: {table.title}  (bars: 95% CIs)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    place_labels(fig, ax, [(r[x_key]["value"], r["reward_mean"]["value"]) for r in rows], [r["method"] for r in rows],
                 [colors[r["method"]] for r in rows])
    return fig


def place_labels(fig: "Figure", ax, points: list[tuple[float, float]], labels: list[str], colors: list[str] | None = None,
                 fontsize: float = 8.5) -> list:
    """Greedy label placement: each label goes to the first of a ring of candidate offsets (growing outwards) where
    its box overlaps no label already placed and no point, and stays inside the axes; a label set away from its
    point gets a thin leader line. The layout is settled first and then frozen, so the pixel boxes stay valid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # constrained layout settles the axes' position
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = [ax.transData.transform(p) for p in points]
    scale = fig.dpi / 72  # points -> pixels
    placed: list = []
    out = []
    order = sorted(range(len(points)), key=lambda i: (px[i][0], px[i][1]))  # left to right: a stable, readable order
    for i in order:
        text = ax.annotate(labels[i], points[i], xytext=(6, 6), textcoords="offset points", fontsize=fontsize, zorder=5,
                           color=colors[i] if colors else None)
        best = None
        for radius in (7, 13, 20, 28, 38, 50, 64, 80):
            for angle in (45, 0, -45, 90, -90, 135, 180, -135):
                dx, dy = radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle))
                text.set_position((dx, dy))
                text.set_horizontalalignment("left" if dx > 1 else "right" if dx < -1 else "center")
                text.set_verticalalignment("bottom" if dy > 1 else "top" if dy < -1 else "center")
                box = text.get_window_extent(renderer).expanded(1.04, 1.1)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                hits_point = any(box.x0 - 4 * scale <= q[0] <= box.x1 + 4 * scale and box.y0 - 4 * scale <= q[1] <= box.y1 + 4 * scale
                                 for q in px)
                if inside and not hits_point and not any(box.overlaps(b) for b in placed):
                    best = (dx, dy, box)
                    break
            if best:
                break
        if best is None:  # nowhere free: the nearest spot, overlaps accepted (the test pins the common cases)
            text.set_position((6, 6))
            text.set_horizontalalignment("left")
            text.set_verticalalignment("bottom")
            best = (6, 6, text.get_window_extent(renderer))
        dx, dy, box = best
        if np.hypot(dx, dy) > 14:
            ax.annotate("", points[i], xytext=(dx, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.55", "shrinkA": 0, "shrinkB": 4}, zorder=4)
        placed.append(box)
        out.append(text)
    return out


def lambda_figure(table: LeaderboardTable) -> "Figure | None":
    """One panel per method: λ per iteration for each seed (solid, left axis) and, when recorded, the dual's cost
    estimate (dashed, right axis, with b). Each panel has its own y limits; a panel whose λ spans more than a factor
    of 20 (a dual capped at its λ_max beside seeds at 1-4) uses a symmetric-log axis so the small values stay
    readable. One legend, under the panels."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    trajectories = lambda_trajectories(table)
    if not trajectories:
        return None
    by_method: dict[str, dict[str, list[dict]]] = {}
    for label, traj in trajectories.items():
        method, _, seed = label.rpartition(" ")
        by_method.setdefault(method, {})[seed] = traj
    seeds = sorted({s for runs in by_method.values() for s in runs}, key=lambda s: (len(s), s))
    seed_color = dict(zip(seeds, palette(len(seeds))))
    n = len(by_method)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.9 * ncols + 1.6, 3.0 * nrows + 0.6), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    with_cost = False
    for ax, (method, runs) in zip(axes, by_method.items()):
        twin = None
        lams = []
        for seed, traj in runs.items():
            steps = [t.get("iteration", i + 1) for i, t in enumerate(traj)]
            lam = [t["lambda"] for t in traj]
            lams += lam
            ax.plot(steps, lam, marker="o", ms=3.5, color=seed_color[seed], lw=1.4)
            pts = [(s, t["cost_estimate"]) for s, t in zip(steps, traj) if t.get("cost_estimate") is not None]
            if pts:
                twin = twin or ax.twinx()
                twin.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", marker=".", color=seed_color[seed], lw=1, alpha=0.8)
        if twin is not None:
            with_cost = True
            if table.threshold is not None:
                twin.axhline(table.threshold, color="tab:red", ls=":", lw=1.1)
            twin.set_ylabel("cost estimate (dashed)", fontsize=8)
            twin.tick_params(labelsize=7)
        positive = [abs(v) for v in lams if v]
        wide_range = bool(positive) and max(positive) / min(positive) > 20
        if wide_range:  # linear below 1, logarithmic above: a capped λ = 100 no longer flattens 1-4
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(bottom=min(0.0, min(lams)), top=max(lams) * 1.5)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("λ (solid" + (", symlog)" if wide_range else ")"), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=seed_color[s], marker="o", ms=3.5, label=f"seed {s.lstrip('s')}") for s in seeds]
    handles.append(Line2D([], [], color="0.3", label="λ (left axis)"))
    if with_cost:
        handles.append(Line2D([], [], color="0.3", ls="--", label="dual's cost estimate (right axis)"))
        if table.threshold is not None:
            handles.append(Line2D([], [], color="tab:red", ls=":", label=f"b = {table.threshold:g}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    fig.suptitle(f"Lagrange multiplier λ per method: {table.title}", fontsize=10)
    return fig


def png_bytes(fig: "Figure") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(fig: "Figure") -> str:
    """The figure as a `data:image/png;base64,...` URI for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def save_png(fig: "Figure", path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def _err(estimate: dict) -> list[list[float]] | None:
    """Asymmetric error bar from a CI, or None when the CI is missing."""
    lo, hi, v = estimate.get("ci_low"), estimate.get("ci_high"), estimate["value"]
    if lo is None or hi is None:
        return None
    return [[max(0.0, v - lo)], [max(0.0, hi - v)]]


def save_figures(table: LeaderboardTable, out_dir: str | Path) -> list[Path]:
    """Write a table's frontier and λ figures as `<dataset>_<model>_<profile>_{frontier,lambda}.png`."""
    stem = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", part) for part in (table.dataset, table.model, table.profile))
    written = []
    for name, fig in (("frontier", frontier_figure(table)), ("lambda", lambda_figure(table))):
        if fig is not None:
            written.append(save_png(fig, Path(out_dir) / f"{stem}_{name}.png"))
    return written
