"""What the headline can claim: each method's scaling fit and every ratio to full GN, with 95%
bootstrap intervals (:mod:`gnbench.report.scaling`).

Per headline method:

- *best batch*: the scanned batch (tokens read per iteration, line search included) of its
  headline point, and whether it is *interior*: a curve whose fewest iterations sit at the
  largest scanned batch is not resolved (a larger batch might need fewer still).
- *ratio to full GN at the best batch*: the method's median iterations at its headline point
  over full GN's at its own, with a bootstrap interval over both points' seeds.
- *the fit*: ``S = S_min (1 + B_noise / B)`` over its tuned points (every seed of the tuned
  setting at each batch), with intervals; *resolved* when ``B_noise``'s interval lies inside
  the scan.
- *ratio of S_min to full GN's*: the paper's idealised quantity (each method at infinite
  batch), over paired bootstrap replicates of the two fits.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

from gnbench.report.headline import HeadlineRow
from gnbench.report.scaling import (
    Interval,
    ScalingBootstrap,
    bootstrap_median,
    bootstrap_ratio,
    bootstrap_scaling,
    ratio_of_replicates,
)
from gnbench.report.table import fmt, markdown_table
from gnbench.report.tuning import MethodRow


@dataclasses.dataclass(frozen=True)
class IntervalRow:
    """One method's fit and ratios (see the module docstring).

    Attributes:
      method: the method.
      best_batch: tokens read per iteration at its headline point (``None`` if unknown).
      interior: whether the best batch is below the largest batch it reached the target at.
      seeds: seeds at the headline point.
      steps: its iterations at the headline point, median with interval.
      ratio_gn: its median / full GN's, each at its own headline point, with interval.
      fit: its scaling fit with intervals (``None`` with fewer than two scanned batches).
      s_min_ratio: its ``S_min`` / full GN's, with interval (``None`` without both fits).
    """

    method: str
    best_batch: float | None
    interior: bool
    seeds: int
    steps: Interval
    ratio_gn: Interval | None
    fit: ScalingBootstrap | None
    s_min_ratio: Interval | None


def _seed(method: str) -> int:
    """A stable resampling seed per method (independent resamples, reproducible reports)."""
    return zlib.crc32(method.encode())


def _steps(row: MethodRow) -> list[float]:
    return [r.to_target["step"] for r in row.runs]


def _fit(rows: list[MethodRow], seed: int) -> ScalingBootstrap | None:
    points: dict[float, list[float]] = {}
    for row in rows:
        if row.tokens_per_iteration:
            points.setdefault(row.tokens_per_iteration, []).extend(_steps(row))
    finite = [b for b, steps in points.items() if any(math.isfinite(s) for s in steps)]
    return bootstrap_scaling(points, seed=seed) if len(finite) >= 2 else None


def interval_rows(
    heads: list[HeadlineRow], rows: list[MethodRow], full_gn: str = "gauss_newton"
) -> list[IntervalRow]:
    """Every headline method's fit and ratios to ``full_gn`` (see the module docstring).

    Args:
      heads: the headline (:func:`gnbench.report.headline.headline`).
      rows: every tuned row (each method at each scanned batch).
      full_gn: the method the ratios divide by.

    Returns:
      One row per headline method, in headline order.
    """
    fits = {
        h.method: _fit([r for r in rows if r.method == h.method], _seed(h.method)) for h in heads
    }
    by_method = {h.method: h.row for h in heads}
    gn_row, gn_fit = by_method.get(full_gn), fits.get(full_gn)
    out = []
    for h in heads:
        steps = _steps(h.row)
        reached = [r.tokens_per_iteration for r in rows if r.method == h.method and r.reached]
        reached = [b for b in reached if b]
        best = h.row.tokens_per_iteration
        fit = fits[h.method]
        s_min_ratio = None
        if fit is not None and gn_fit is not None and fit.fit.ok and gn_fit.fit.ok:
            value = fit.fit.s_min / gn_fit.fit.s_min
            reps = (fit.replicates[:, 0], gn_fit.replicates[:, 0])
            s_min_ratio = ratio_of_replicates(*reps, value)
        out.append(
            IntervalRow(
                method=h.method,
                best_batch=best,
                interior=bool(best and reached and best < max(reached)),
                seeds=len(steps),
                steps=bootstrap_median(steps, seed=_seed(h.method)),
                ratio_gn=None
                if gn_row is None
                else bootstrap_ratio(steps, _steps(gn_row), seed=_seed(h.method) ^ 1),
                fit=fit,
                s_min_ratio=s_min_ratio,
            )
        )
    return out


def _ci(value: Interval | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def _tokens_ci(value: Interval) -> str:
    parts = [
        fmt(v, "tokens") if math.isfinite(v) else ("∞" if v > 0 else "—")
        for v in (value.value, value.lo, value.hi)
    ]
    return f"{parts[0]} [{parts[1]}, {parts[2]}]"


def interval_table(rows: list[IntervalRow], full_gn: str = "gauss_newton") -> str:
    """The intervals table in Markdown."""
    head = [
        "method",
        "best batch (tokens read / iter)",
        "best batch interior?",
        "seeds",
        "iterations at best batch [95% CI]",
        f"ratio to {full_gn} at best batches [95% CI]",
        "S_min [95% CI]",
        "B_noise, tokens read [95% CI]",
        "fit resolved?",
        f"S_min ratio to {full_gn} [95% CI]",
    ]
    cells = []
    for r in rows:
        fit, ok = r.fit, r.fit is not None and r.fit.fit.ok
        cells.append(
            [
                r.method,
                fmt(r.best_batch, "tokens"),
                "yes" if r.interior else "**no: largest scanned**",
                str(r.seeds),
                _ci(r.steps),
                _ci(r.ratio_gn),
                _ci(fit.s_min) if ok else "—",
                _tokens_ci(fit.b_noise) if ok else "—",
                "—" if fit is None else ("yes" if fit.resolved else "no"),
                _ci(r.s_min_ratio),
            ]
        )
    return markdown_table(head, cells)


INTERVALS_NOTE = (
    "Intervals are 95% percentile-bootstrap intervals over seeds ({replicates} replicates; "
    "gnbench/report/scaling.py): a ratio resamples both methods' seeds at their headline points; "
    "the fit S = S_min (1 + B_noise / B) (McCandlish et al. 2018) is weighted least squares on "
    "1/B over each tuned batch's median, refitted on resampled seeds. *Best batch interior?*: "
    "no when the fewest iterations sit at the largest batch scanned that reached the target (the "
    "curve is not resolved there). *Fit resolved?*: whether B_noise's whole interval lies inside "
    "the scanned batches; an unresolved fit (or — : a curve that never bends, S ∝ 1/B) does not "
    "measure S_min. A batch run with one seed adds no spread of its own to the intervals."
)


def note(replicates: int | None = None) -> str:
    """The explanation printed under :func:`interval_table`."""
    from gnbench.report.scaling import BOOTSTRAP_REPLICATES

    return INTERVALS_NOTE.format(replicates=replicates or BOOTSTRAP_REPLICATES)


__all__ = ["IntervalRow", "interval_rows", "interval_table", "note"]
