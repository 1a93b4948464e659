"""The tuning rule, the per-method summary rows of the report and the grid-edge check.

Tuning rule (the same for every method, AdamW included): among a method's hyperparameter
settings at one scan value, pick the one with the lowest median iterations-to-target over the
*tuning seeds* (the plan's ``seeds``; every seed for older sweeps that do not record them), a seed
that never reaches the target counting as ``+inf``; ties go to the earlier median crossing of
the target, interpolated linearly between evaluations, then to the lower median final validation
loss, then to the setting listed first. Headline seeds (run later, only at the winner) take no
part in the choice, so they cannot change which setting wins; the tuned row then holds the runs
of *every* seed of the winning setting. With a batch-size scan, each scan value is tuned on its
own. Only runs that are done (finished or diverged) take part.

The row of a tuned method reports its cost to the target in each unit as median [min, max] over
its seeds, the seeds that reached it, the median final loss, the speedup over tuned AdamW (AdamW's
median / the method's median, per unit; when AdamW never reached the target, its median spend at
the budget / the method's median, a lower bound shown as ``>``) and a one-sided exact
Mann-Whitney U p-value for "fewer iterations than AdamW" (with at least two seeds on each side).

Grid edges (:func:`grid_edges`): a tuned value that is the smallest or largest value of its grid
(a numeric grid key with at least two values) may be beaten by a value outside the grid; the
report flags it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection
from typing import Any

from gnbench.report.results import UNITS, RunResult
from gnbench.report.stats import mann_whitney_less, median, spread


@dataclasses.dataclass(frozen=True)
class MethodRow:
    """A tuned method at one scan value (``None`` without a scan).

    Attributes:
      method, scan_value, setting: which method, batch and hyperparameters.
      runs: its runs over every seed (tuning and headline seeds).
      to_target: unit -> (median, min, max) over ``runs`` (``inf`` = not reached).
      final_loss: median final validation loss.
      speedup: unit -> baseline median / this median (``None`` if undefined). When the
        baseline never reached the target, the baseline's spend at its last evaluation over
        this median: a lower bound, flagged in ``speedup_bound``.
      speedup_bound: unit -> whether ``speedup`` is only a lower bound.
      p_value: one-sided Mann-Whitney U p-value vs the baseline, or ``None``.
      tuning: the runs of the tuning seeds, the ones the tuning rule scored (``runs`` if empty).
    """

    method: str
    scan_value: Any
    setting: dict[str, Any]
    runs: list[RunResult]
    to_target: dict[str, tuple[float, float, float]]
    final_loss: float
    speedup: dict[str, float | None]
    p_value: float | None
    speedup_bound: dict[str, bool] = dataclasses.field(default_factory=dict)
    tuning: list[RunResult] = dataclasses.field(default_factory=list)

    @property
    def reached(self) -> int:
        """Seeds that reached the target."""
        return sum(r.reached for r in self.runs)

    @property
    def score(self) -> tuple[float, float, float]:
        """The tuning rule's score of this setting (over the tuning seeds)."""
        return setting_score(self.tuning or self.runs)

    @property
    def tuning_steps(self) -> tuple[float, float, float]:
        """(median, min, max) iterations to target over the tuning seeds."""
        return spread([r.to_target["step"] for r in self.tuning or self.runs])

    @property
    def floor_share(self) -> float | None:
        """Median share of iterations at the line search's smallest step (``None``: no search)."""
        shares = [r.floor_share for r in self.runs if r.floor_share is not None]
        return median(shares) if shares else None

    @property
    def tokens_per_iteration(self) -> float | None:
        """Tokens one iteration reads (line search included), or ``None`` if unknown."""
        return next((r.tokens_per_iteration for r in self.runs if r.tokens_per_iteration), None)


# A line search whose smallest step size is taken on at least this share of a tuned setting's
# iterations (median over its seeds) is limited by its range: an edge, like a grid's.
FLOOR_EDGE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class GridEdge:
    """A tuned value at the edge of its grid: ``side`` is ``low`` (the grid's min) or ``high``;
    ``floor`` marks a line search at its smallest step size (``value`` is the share of steps)."""

    method: str
    scan_value: Any
    key: str
    value: Any
    side: str


def setting_key(setting: dict[str, Any]) -> str:
    """A hashable, order-free name of a hyperparameter setting.

    Example:
      >>> setting_key({"b": 1, "a": 0.1})
      '{"a": 0.1, "b": 1}'
    """
    return json.dumps(setting, sort_keys=True)


def setting_score(runs: list[RunResult]) -> tuple[float, float, float]:
    """``(median iterations-to-target, median interpolated crossing, median final loss)``.

    Lower is better, in that order: the interpolated crossing
    (:func:`gnbench.report.results.interpolated_crossing`) breaks ties between settings that
    reach the target at the same evaluation; the final loss those that never reach it.
    """
    finals = [r.final_val_loss if not math.isnan(r.final_val_loss) else math.inf for r in runs]
    crossings = [r.crossing_step for r in runs]
    return (median([r.to_target["step"] for r in runs]), median(crossings), median(finals))


def group_settings(results: list[RunResult]) -> dict[tuple[str, Any, str], list[RunResult]]:
    """Done runs grouped by (method, scan value, setting), in plan order."""
    groups: dict[tuple[str, Any, str], list[RunResult]] = {}
    for r in results:
        if r.done:
            groups.setdefault((r.method, r.scan_value, setting_key(r.setting)), []).append(r)
    return groups


def tuning_runs(runs: list[RunResult], seeds: Collection[int] | None) -> list[RunResult]:
    """The runs of the tuning ``seeds`` (every run when ``seeds`` is ``None``)."""
    return list(runs) if seeds is None else [r for r in runs if r.seed in seeds]


def select_best(
    results: list[RunResult], seeds: Collection[int] | None = None
) -> dict[tuple[str, Any], list[RunResult]]:
    """The tuned setting's runs for each (method, scan value), by the tuning rule.

    Args:
      results: every run of a sweep (unfinished runs are ignored).
      seeds: the tuning seeds: only their runs are scored (``None``: every run). A setting
        without a done tuning-seed run is not a candidate.

    Returns:
      (method, scan value) -> the runs of the chosen setting over *every* seed.
    """
    best: dict[tuple[str, Any], tuple[tuple[float, float], list[RunResult]]] = {}
    for (method, scan_value, _), runs in group_settings(results).items():
        scored = tuning_runs(runs, seeds)
        if not scored:
            continue
        score = setting_score(scored)
        current = best.get((method, scan_value))
        if current is None or score < current[0]:  # Strict: earlier settings win ties.
            best[(method, scan_value)] = (score, runs)
    return {k: runs for k, (_, runs) in best.items()}


def _ratio(base: float, value: float) -> float | None:
    if math.isnan(base) or math.isnan(value) or math.isinf(value):
        return None  # Unknown, or the method never got there: no speedup to report.
    return base / value if value > 0 else None


def _spent(run: RunResult, unit: str) -> float:
    """What a run had spent in ``unit`` at its last evaluation (0 with none, nan if unknown)."""
    if not run.evals:
        return 0.0
    value = run.evals[-1].get(unit)
    return math.nan if value is None else float(value)


def speedup_over(
    runs: list[RunResult], base_runs: list[RunResult] | None, unit: str
) -> tuple[float | None, bool]:
    """``(base median / median of runs, is it a lower bound)`` in ``unit``.

    When the base never reached the target its median spend at its last evaluation stands in
    for its cost: the speedup is then a lower bound. ``(None, False)`` without base runs; the
    speedup is ``None`` when the runs' median is ``inf`` or a cost is unknown.
    """
    if not base_runs:
        return None, False
    b = median([r.to_target[unit] for r in base_runs])
    bound = math.isinf(b)
    if bound:  # The baseline never got there: it spent at least its budget.
        b = median([_spent(r, unit) for r in base_runs])
    return _ratio(b, median([r.to_target[unit] for r in runs])), bound


def p_fewer_iterations(runs: list[RunResult], base_runs: list[RunResult] | None) -> float | None:
    """One-sided exact Mann-Whitney p that ``runs`` need fewer iterations than ``base_runs``
    (``None`` with fewer than two seeds on a side)."""
    if not base_runs or len(runs) < 2 or len(base_runs) < 2:
        return None
    return mann_whitney_less(
        [r.to_target["step"] for r in runs], [r.to_target["step"] for r in base_runs]
    )


def summarize(
    results: list[RunResult], baseline: str = "adamw", seeds: Collection[int] | None = None
) -> list[MethodRow]:
    """One :class:`MethodRow` per tuned (method, scan value), in plan order.

    Args:
      results: every run of the sweep.
      baseline: the method speedups and p-values compare with (tuned at the same scan value).
      seeds: the tuning seeds (``None``: every seed); see :func:`select_best`.

    Returns:
      The rows; speedup and p-value are ``None`` where the baseline is missing.
    """
    best = select_best(results, seeds)
    rows = []
    for (method, scan_value), runs in best.items():
        base_runs = best.get((baseline, scan_value))
        speedup: dict[str, float | None] = {}
        bound: dict[str, bool] = {}
        for u in UNITS:
            speedup[u], bound[u] = speedup_over(runs, base_runs, u)
        rows.append(
            MethodRow(
                method=method,
                scan_value=scan_value,
                setting=runs[0].setting,
                runs=runs,
                to_target={u: spread([r.to_target[u] for r in runs]) for u in UNITS},
                final_loss=median([r.final_val_loss for r in runs]),
                speedup=speedup,
                p_value=None if method == baseline else p_fewer_iterations(runs, base_runs),
                speedup_bound=bound,
                tuning=tuning_runs(runs, seeds),
            )
        )
    return rows


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def grid_edges(
    rows: list[MethodRow],
    grids: dict[str, dict[str, list[Any]]] | None = None,
    results: list[RunResult] | None = None,
    grids_at: dict[str, dict[str, dict[str, list[Any]]]] | None = None,
) -> list[GridEdge]:
    """The tuned values that sit at the edge of their grid.

    For each tuned row that reached the target and each numeric grid key with at least two
    distinct values, the row's value is flagged ``low`` if it is the grid's smallest value,
    ``high`` if its largest. A row whose line search took its smallest step size on at least
    :data:`FLOOR_EDGE_SHARE` of its iterations (median over seeds) is flagged ``floor``: the
    search's range, not the method, limited its step. A row whose every setting missed the
    target is not flagged: no cost in the report comes from it (the scan leaves the point out).
    The grid of a method is ``grids_at[method][str(scan value)]`` where given, else
    ``grids[method]`` (``plan.json``'s ``grids_at`` and ``grids``); a method missing there uses
    the values seen among its runs in ``results`` (or its row's runs without ``results``).

    Args:
      rows: tuned rows (any methods, any scan values).
      grids: method -> key -> the values tried.
      results: every run of the sweep, for methods without a recorded grid.
      grids_at: method -> scan value (a string) -> key -> the values tried there.

    Returns:
      The flagged values, in row order and the order of each row's setting.

    Example:
      >>> row = MethodRow("adamw", None, {"lr": 0.01, "wd": 0.1}, [], {}, 0.0, {}, None)
      >>> grid_edges([row], {"adamw": {"lr": [0.01, 0.03], "wd": [0.1]}})
      [GridEdge(method='adamw', scan_value=None, key='lr', value=0.01, side='low')]
    """
    edges = []
    for row in rows:
        if not any(r.reached for r in row.tuning or row.runs):
            continue
        if row.floor_share is not None and row.floor_share >= FLOOR_EDGE_SHARE:
            edges.append(
                GridEdge(row.method, row.scan_value, "line search α", row.floor_share, "floor")
            )
        grid = (grids_at or {}).get(row.method, {}).get(str(row.scan_value))
        grid = grid if grid is not None else (grids or {}).get(row.method)
        if grid is None:
            grid = {}
            for r in row.runs if results is None else results:
                if r.method == row.method:
                    for key, value in r.setting.items():
                        grid.setdefault(key, []).append(value)
        for key, value in row.setting.items():
            values = sorted({v for v in grid.get(key, []) if _numeric(v)})
            if len(values) < 2 or not _numeric(value):
                continue
            side = "low" if value == values[0] else "high" if value == values[-1] else None
            if side:
                edges.append(GridEdge(row.method, row.scan_value, key, value, side))
    return edges
