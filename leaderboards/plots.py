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

from leaderboards.table import LeaderboardTable, lambda_trajectories

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AXIS_LABELS = {
    "unsafe_rate": "unsafe rate: share of responses with cost > 0 (lower is better)",
    "cost_mean": "mean cost (lower is better)",
}


def frontier_figure(table: LeaderboardTable) -> "Figure | None":
    """Mean reward against the constraint's metric, 95% CIs as error bars, the frontier as a staircase.

    The staircase is the best reward any method reaches at or below each cost level; `b` is the threshold."""
    from matplotlib.figure import Figure

    x_key = table.x_metric
    rows = [r for r in table.rows if r.get("reward_mean") and r.get(x_key)]
    if not rows:
        return None
    fig = Figure(figsize=(7.0, 4.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for row in rows:
        x, y = row[x_key], row["reward_mean"]
        on_front = row.get("pareto", False)
        ax.errorbar(x["value"], y["value"], xerr=_err(x), yerr=_err(y), fmt="o", capsize=3, ms=7,
                    color="tab:blue" if on_front else "tab:gray", mfc="tab:blue" if on_front else "white", zorder=3)
        ax.annotate(row["method"], (x["value"], y["value"]), xytext=(6, 6), textcoords="offset points", fontsize=9)
    if table.threshold is not None:  # the x axis is the constrained metric, so b is a vertical line
        ax.axvline(table.threshold, color="tab:red", ls=":", lw=1.2, label=f"threshold b = {table.threshold:g}")
    ax.margins(x=0.15, y=0.1)  # room for the method labels
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[x_key]["value"])
    if front:  # the staircase runs on to the right edge: the best reward stays reachable at any higher cost
        right = ax.get_xlim()[1]
        ax.plot([r[x_key]["value"] for r in front] + [right], [r["reward_mean"]["value"] for r in front + front[-1:]],
                drawstyle="steps-post", ls="--", color="tab:blue", lw=1.2, label="Pareto frontier", zorder=2)
        ax.set_xlim(right=right)
    ax.set_xlabel(AXIS_LABELS[x_key])
    ax.set_ylabel("mean reward (higher is better)")
    ax.set_title(f"Reward vs {x_key.replace('_', ' ')}: {table.title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def lambda_figure(table: LeaderboardTable) -> "Figure | None":
    """λ per iteration for every run that records one; the dual's cost estimate beside it when recorded."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    trajectories = lambda_trajectories(table)
    if not trajectories:
        return None
    with_cost = any(t.get("cost_estimate") is not None for traj in trajectories.values() for t in traj)
    fig = Figure(figsize=(10.0 if with_cost else 6.0, 3.8), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2 if with_cost else 1, squeeze=False)[0]
    for label, traj in trajectories.items():
        steps = [t.get("iteration", i + 1) for i, t in enumerate(traj)]
        axes[0].plot(steps, [t["lambda"] for t in traj], marker="o", label=label)
        if with_cost:
            pts = [(s, t["cost_estimate"]) for s, t in zip(steps, traj) if t.get("cost_estimate") is not None]
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    axes[0].set_title("Lagrange multiplier λ", fontsize=10)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("λ")
    if with_cost:
        if table.threshold is not None:
            axes[1].axhline(table.threshold, color="tab:red", ls=":", lw=1.2, label=f"b = {table.threshold:g}")
        axes[1].set_title("cost estimate used by the dual step", fontsize=10)
        axes[1].set_xlabel("iteration")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"λ trajectories: {table.title}", fontsize=10)
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
