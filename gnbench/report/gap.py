"""The approximation ladder's measure: how much of the baseline-to-full-GN gap a method closes.

For a method m at its own headline point (its best batch) and a unit u (iterations or FLOPs to
target), with B the baseline's (AdamW's) headline median and G full GN's:

    gap closed = (B − m) / (B − G)

0 is the baseline, 1 is full GN, above 1 beats full GN, below 0 is worse than the baseline. The
value uses the three medians; its 95% interval is the percentile bootstrap over seeds
(gnbench/report/scaling.py): each replicate resamples the seeds of m, of the baseline and of
full GN (the same resample where m is one of them) and recomputes the fraction. A method whose
median never reached the target (or diverged, or collapsed) closes −∞; so does an interval
whose replicates do. Undefined (—) when B or G never reached the target, or when full GN
is not ahead of the baseline in that unit (B ≤ G: no gap to close; at small scale full GN can
need fewer iterations but more FLOPs than AdamW, and a fraction of a negative gap reads
backwards).

Example:
  >>> closed(30.0, baseline=60.0, full_gn=12.0)
  0.625
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from gnbench.report.headline import FULL_GN, HeadlineRow
from gnbench.report.scaling import BOOTSTRAP_REPLICATES, percentile_interval, resampled_medians
from gnbench.report.table import fmt

UNITS = ("step", "flops")


def closed(value: float, baseline: float, full_gn: float) -> float | None:
    """``(baseline − value) / (baseline − full_gn)``, ``None`` when undefined."""
    if not (math.isfinite(baseline) and math.isfinite(full_gn)) or baseline <= full_gn:
        return None
    if math.isnan(value):
        return None
    return (baseline - value) / (baseline - full_gn)


@dataclasses.dataclass(frozen=True)
class GapRow:
    """A method's gap closed per unit: ``unit -> (value, 95% low, 95% high)`` (``None``:
    undefined; ``-inf``: never reached)."""

    method: str
    gap: dict[str, tuple[float | None, float | None, float | None]]
    passes: float | None  # forward+backward passes per iteration (cost_per_iteration)


def gap_rows(
    heads: list[HeadlineRow],
    summaries: dict[str, dict[str, Any]],
    baseline: str = "adamw",
    full_gn: str = FULL_GN,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> list[GapRow]:
    """Every headline method's gap closed with its 95% bootstrap interval; empty without both
    the baseline and full GN."""
    by_method = {h.method: h.row for h in heads}
    if baseline not in by_method or full_gn not in by_method:
        return []
    rng = np.random.default_rng(0)
    rows = []
    for h in heads:
        gap = {}
        for u in UNITS:
            samples = {m: [r.to_target[u] for r in by_method[m].runs] for m in (baseline, full_gn)}
            samples[h.method] = [r.to_target[u] for r in h.row.runs]
            b, g = by_method[baseline].to_target[u][0], by_method[full_gn].to_target[u][0]
            value = closed(h.row.to_target[u][0], b, g)
            gap[u] = (value, *_gap_interval(samples, h.method, baseline, full_gn, replicates, rng))
            if value is None:
                gap[u] = (None, None, None)
        costs = [(summaries.get(r.id) or {}).get("cost_per_iteration") for r in h.row.runs]
        cost = next((c for c in costs if c), None)
        passes = cost["step_flops"] / cost["fwd_bwd_flops"] if cost else None
        rows.append(GapRow(h.method, gap, passes))
    return rows


def _gap_interval(
    samples: dict[str, list[float]],
    method: str,
    baseline: str,
    full_gn: str,
    replicates: int,
    rng: np.random.Generator,
) -> tuple[float | None, float | None]:
    """The 95% percentile-bootstrap interval of a method's gap closed (``None`` if undefined)."""
    medians = {}
    for name, values in samples.items():  # One resample per method, shared where names repeat.
        a = np.asarray(values, dtype=float)
        if a.size == 0 or np.isnan(a).any():
            return None, None
        medians[name] = resampled_medians(a, replicates, rng)
    b, g, m = medians[baseline], medians[full_gn], medians[method]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(np.isfinite(b) & np.isfinite(g) & (b > g), (b - m) / (b - g), np.nan)
    fraction = np.where(np.isinf(m) & ~np.isnan(fraction), -np.inf, fraction)
    fraction = fraction[~np.isnan(fraction)]
    if fraction.size < replicates / 2:  # Mostly no gap to close: no interval.
        return None, None
    lo, hi = percentile_interval(fraction)
    return lo, hi


def _cell(value: tuple[float | None, float | None, float | None]) -> str:
    med, lo, hi = value
    if med is None:
        return "—"
    text = lambda x: "—" if x is None else "−∞" if x == -math.inf else f"{x:.2f}"  # noqa: E731
    return f"{text(med)} [{text(lo)}, {text(hi)}]"


def gap_table(rows: list[GapRow]) -> str:
    """The gap-closed table in Markdown."""
    head = [
        "method",
        "forward+backward passes / iteration",
        "gap closed, iterations [95% CI]",
        "gap closed, FLOPs [95% CI]",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        passes = "—" if r.passes is None else fmt(r.passes)
        lines.append(
            f"| {r.method} | {passes} | {_cell(r.gap['step'])} | {_cell(r.gap['flops'])} |"
        )
    return "\n".join(lines)


def plot_gap(rows: list[GapRow], path: str | Path) -> Path | None:
    """Saves :func:`gap_figure` to ``path`` (``None``: nothing to draw)."""
    from gnbench.report.plots import _save

    fig = gap_figure(rows)
    return None if fig is None else _save(fig, path)


def gap_figure(rows: list[GapRow]) -> Any:
    """Gap closed (iterations) against forward+backward passes per iteration, one point per
    method with its seed spread. A seed (or a median) that never reached the target, or whose
    run diverged or collapsed, closes −∞ of the gap: it is drawn as a downward triangle at the
    bottom of the plot, labelled −∞, never left out. ``None`` when no row has both a gap and a
    cost per iteration."""
    from matplotlib.figure import Figure

    from gnbench.report.plots import _colors

    points = [r for r in rows if r.gap["step"][0] is not None and r.passes]
    if not points:
        return None
    finite = [v for r in points for v in r.gap["step"] if v is not None and math.isfinite(v)]
    floor = min([0.0, *finite]) - 0.25  # Where −∞ is drawn.
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    colors = _colors([r.method for r in rows])
    for r in points:
        med = r.gap["step"][0]
        med, lo, hi = (med if v is None else v for v in r.gap["step"])
        med, lo, hi = (floor if not math.isfinite(v) else v for v in (med, lo, hi))
        color = colors[r.method]
        ax.errorbar(r.passes, med, yerr=[[med - lo], [hi - med]], fmt="o", color=color, capsize=3)
        for value in r.gap["step"]:
            if value is not None and not math.isfinite(value):
                ax.plot(r.passes, floor, marker="v", color=color, ms=8)
                ax.annotate(
                    "−∞",
                    (r.passes, floor),
                    textcoords="offset points",
                    xytext=(6, -3),
                    fontsize=8,
                    color=color,
                )
                break
        ax.annotate(
            r.method, (r.passes, med), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("cost per iteration (forward+backward passes over one micro-batch)")
    ax.set_ylabel("gap closed in iterations (0: AdamW, 1: full GN)")
    ax.set_title("The approximation ladder: gap closed against cost per iteration")
    ax.grid(alpha=0.3)
    return fig


__all__ = ["GapRow", "closed", "gap_figure", "gap_rows", "gap_table", "plot_gap"]
