"""PNG figures of the report (matplotlib's object API with the Agg canvas: no display needed).

- :func:`plot_curves`: validation loss against iterations, tokens, FLOPs, compute and wall-clock
  for the tuned setting of each method; every seed faint, the median seed (by final loss) solid.
- :func:`plot_to_target`: iterations-to-target per method, one dot per seed and a bar at the
  median; seeds that never reach the target sit on a "not reached" line above the budget.
- :func:`plot_scan`: iterations-to-target against tokens per iteration (log-log) per method, with
  the perfect-scaling line (slope -1 through the baseline's smallest-batch point) and each
  method's critical batch (hollow marker at 2x its fewest iterations).
- :func:`plot_profile`: Dolan-Moré performance profiles over several sweeps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter

from gnbench.report.headline import CriticalBatch, critical_batch
from gnbench.report.results import UNITS
from gnbench.report.tuning import MethodRow


def _save(fig: Figure, path: str | Path) -> Path:
    """Renders with Agg into a temporary file, then renames it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _colors(methods: list[str]) -> dict[str, Any]:
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _panels(n: int) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels on a 2 x 3 grid (unused panels hidden)."""
    fig = Figure(figsize=(15, 8))
    axes = list(fig.subplots(2, 3).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_curves(rows: list[MethodRow], target: float, path: str | Path) -> Path:
    """One panel of validation loss against each cost unit (a unit no record has: empty).

    Args:
      rows: tuned methods (one scan value).
      target: drawn as a dashed line.
      path: PNG file to write.

    Returns:
      ``path``.
    """
    fig, axes = _panels(len(UNITS))
    colors = _colors([r.method for r in rows])
    for ax, (unit, label) in zip(axes, UNITS.items(), strict=True):
        if not any(e.get(unit) is not None for row in rows for r in row.runs for e in r.evals):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label)
            continue
        for row in rows:
            finals = np.array([r.final_val_loss for r in row.runs])
            order = np.argsort(np.nan_to_num(finals, nan=np.inf), kind="stable")
            median_run = row.runs[int(order[(len(order) - 1) // 2])]
            for run in row.runs:
                pts = [
                    (e[unit], e["val_loss"])
                    for e in run.evals
                    if math.isfinite(e.get("val_loss", math.nan)) and e.get(unit) is not None
                ]
                xs, ys = [x for x, _ in pts], [y for _, y in pts]
                solid = run is median_run
                ax.plot(
                    xs,
                    ys,
                    color=colors[row.method],
                    alpha=1.0 if solid else 0.25,
                    lw=1.6 if solid else 0.8,
                    label=row.method if solid else None,
                )
        ax.axhline(target, color="k", ls="--", lw=0.8)
        ax.set_xlabel(label)
        if unit in ("tokens", "flops"):
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, not 200000
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Tuned methods: validation loss (target {target:g}, dashed)")
    return _save(fig, path)


def plot_to_target(rows: list[MethodRow], path: str | Path) -> Path:
    """Iterations-to-target per method: seeds as dots, the median as a bar.

    Args:
      rows: tuned methods (one scan value).
      path: PNG file to write.

    Returns:
      ``path``.
    """
    fig = Figure(figsize=(1.2 * len(rows) + 3, 4))
    ax = fig.subplots()
    finite = [r.to_target["step"] for row in rows for r in row.runs if r.reached]
    budget = max([e["step"] for row in rows for r in row.runs for e in r.evals] + finite + [1])
    ceiling = budget * 1.1
    colors = _colors([r.method for r in rows])
    for i, row in enumerate(rows):
        ys = np.array([r.to_target["step"] for r in row.runs])
        jitter = np.linspace(-0.15, 0.15, len(ys)) if len(ys) > 1 else np.zeros(1)
        hit = np.isfinite(ys)
        ax.scatter(i + jitter[hit], ys[hit], color=colors[row.method], zorder=3)
        ax.scatter(
            i + jitter[~hit],
            np.full((~hit).sum(), ceiling),
            marker="x",
            color=colors[row.method],
            zorder=3,
        )
        med = row.to_target["step"][0]
        ax.hlines(min(med, ceiling), i - 0.3, i + 0.3, color="k", lw=2)
    ax.axhline(ceiling, color="grey", ls=":", lw=0.8)
    ax.text(len(rows) - 0.5, ceiling, "not reached", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(range(len(rows)), [r.method for r in rows], rotation=20)
    ax.set_ylabel("iterations to target")
    ax.set_ylim(0, ceiling * 1.08)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Iterations to target (dots: seeds, bar: median)")
    return _save(fig, path)


def plot_scan(
    rows: list[MethodRow],
    scan_key: str,
    path: str | Path,
    baseline: str = "adamw",
    critical: dict[str, CriticalBatch] | None = None,
) -> Path:
    """Median iterations-to-target (min-max bars) against tokens per iteration, log-log.

    Each point is a tuned row over its tuning seeds (the numbers the headline and the critical
    batch are computed from). The dashed grey line is perfect scaling (iterations halve when the
    batch doubles: slope -1) through the baseline's smallest-batch point; a hollow marker on each
    curve is the method's critical batch, where it needs twice its fewest iterations.

    Args:
      rows: tuned methods at every scan value.
      scan_key: the scanned config key (for the title).
      path: PNG file to write.
      baseline: the method the perfect-scaling line starts from (else the first method drawn).
      critical: method -> critical batch (default: :func:`critical_batch` of its rows).

    Returns:
      ``path``.
    """
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    methods = list(dict.fromkeys(r.method for r in rows))
    colors = _colors(methods)
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for method in methods:
        pts = []
        for row in rows:
            tpi = row.tokens_per_iteration
            med, lo, hi = row.tuning_steps
            if row.method == method and tpi and math.isfinite(med):
                pts.append((tpi, med, lo, hi))
        if not pts:
            continue
        curves[method] = sorted(pts)
        x, med, lo, hi = (np.array(v) for v in zip(*sorted(pts), strict=True))
        hi = np.where(np.isfinite(hi), hi, med)
        ax.errorbar(
            x,
            med,
            yerr=[med - lo, hi - med],
            marker="o",
            capsize=3,
            color=colors[method],
            label=method,
        )
    handles, _ = ax.get_legend_handles_labels()
    if curves:
        start = curves.get(baseline) or next(iter(curves.values()))
        b0, s0 = start[0][0], start[0][1]
        xs = np.array([p[0] for pts in curves.values() for p in pts])
        grid = np.geomspace(xs.min(), xs.max(), 50) if xs.max() > xs.min() else xs[:1]
        ax.plot(grid, s0 * b0 / grid, ls="--", color="grey", lw=1.0, zorder=1)
        handles.append(Line2D([], [], ls="--", color="grey", label="perfect scaling (slope −1)"))
    marked = False
    for method in curves:
        cb = (critical or {}).get(method) or critical_batch([r for r in rows if r.method == method])
        if cb.kind == "interpolated":
            ax.plot(
                [cb.tokens],
                [2 * cb.s_min],
                marker="o",
                ms=11,
                mfc="none",
                mew=1.8,
                ls="none",
                color=colors[method],
                zorder=4,
            )
            marked = True
    if marked:
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ms=9,
                mfc="none",
                color="k",
                ls="none",
                label="critical batch (2× fewest iterations)",
            )
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # Plain numbers (8k, 20), not powers of ten.
        axis.set_major_formatter(EngFormatter(sep=""))
        axis.set_minor_formatter(EngFormatter(sep=""))
    ax.tick_params(axis="both", which="minor", labelsize=7)
    ax.set_xlabel("tokens per iteration")
    ax.set_ylabel("iterations to target")
    ax.set_title(f"Batch-size scan over {scan_key}")
    ax.grid(alpha=0.3, which="both")
    if handles:
        ax.legend(handles=handles, fontsize=8)
    return _save(fig, path)


def plot_profile(
    profiles: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: str | Path
) -> Path:
    """Performance profiles, one panel per unit.

    Args:
      profiles: unit -> method -> (taus, fraction of problems within factor tau of the best).
      path: PNG file to write.

    Returns:
      ``path``.
    """
    fig, axes = _panels(len(profiles))
    methods = list(dict.fromkeys(m for p in profiles.values() for m in p))
    colors = _colors(methods)
    for ax, (unit, by_method) in zip(axes, profiles.items(), strict=True):
        for method, (taus, rho) in by_method.items():
            ax.step(taus, rho, where="post", color=colors[method], label=method)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"τ (factor of the best, {UNITS[unit]})")
        ax.set_ylabel("fraction of problems")
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=8)
    fig.suptitle("Performance profiles (cost to target)")
    return _save(fig, path)
