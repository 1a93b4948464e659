"""PNG figures of the report (matplotlib's object API with the Agg canvas: no display needed).

- :func:`plot_curves`: validation loss against iterations, tokens, compute and wall-clock for the
  tuned setting of each method; every seed faint, the median seed (by final loss) solid.
- :func:`plot_to_target`: iterations-to-target per method, one dot per seed and a bar at the
  median; seeds that never reach the target sit on a "not reached" line above the budget.
- :func:`plot_scan`: iterations-to-target against tokens per iteration (log-log) per method, the
  batch-size scan that shows each method's critical batch size.
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
from matplotlib.ticker import EngFormatter

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


def plot_curves(rows: list[MethodRow], target: float, path: str | Path) -> Path:
    """Four panels of validation loss against each cost unit.

    Args:
      rows: tuned methods (one scan value).
      target: drawn as a dashed line.
      path: PNG file to write.

    Returns:
      ``path``.
    """
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2).ravel()
    colors = _colors([r.method for r in rows])
    for ax, (unit, label) in zip(axes, UNITS.items(), strict=True):
        for row in rows:
            finals = np.array([r.final_val_loss for r in row.runs])
            order = np.argsort(np.nan_to_num(finals, nan=np.inf), kind="stable")
            median_run = row.runs[int(order[(len(order) - 1) // 2])]
            for run in row.runs:
                xs = [e[unit] for e in run.evals if math.isfinite(e.get("val_loss", math.nan))]
                ys = [
                    e["val_loss"] for e in run.evals if math.isfinite(e.get("val_loss", math.nan))
                ]
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
        if unit == "tokens":
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


def plot_scan(rows: list[MethodRow], scan_key: str, path: str | Path) -> Path:
    """Median iterations-to-target (min-max bars) against tokens per iteration, log-log.

    Args:
      rows: tuned methods at every scan value.
      scan_key: the scanned config key (for the title).
      path: PNG file to write.

    Returns:
      ``path``.
    """
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    methods = list(dict.fromkeys(r.method for r in rows))
    colors = _colors(methods)
    for method in methods:
        pts = []
        for row in rows:
            tpi = row.runs[0].tokens_per_iteration
            med, lo, hi = row.to_target["step"]
            if row.method == method and tpi and math.isfinite(med):
                pts.append((tpi, med, lo, hi))
        if not pts:
            continue
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per iteration")
    ax.set_ylabel("iterations to target")
    ax.set_title(f"Batch-size scan over {scan_key}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
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
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2).ravel()
    methods = list(dict.fromkeys(m for p in profiles.values() for m in p))
    colors = _colors(methods)
    for ax, (unit, by_method) in zip(axes, profiles.items(), strict=False):
        for method, (taus, rho) in by_method.items():
            ax.step(taus, rho, where="post", color=colors[method], label=method)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"τ (factor of the best, {UNITS[unit]})")
        ax.set_ylabel("fraction of problems")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Performance profiles (cost to target)")
    return _save(fig, path)
