"""The tuning rule and the per-method summary rows of the report.

Tuning rule (the same for every method, AdamW included): among a method's hyperparameter
settings, pick the one with the lowest median iterations-to-target over seeds, a seed that never
reaches the target counting as ``+inf``; ties go to the lower median final validation loss, then
to the setting listed first. With a batch-size scan, each scan value is tuned on its own.
Only runs that are done (finished or diverged) take part.

The row of a tuned method reports its cost to the target in each unit as median [min, max] over
seeds, the seeds that reached it, the median final loss, the speedup over tuned AdamW (AdamW's
median / the method's median, per unit; when AdamW never reached the target, its median spend at
the budget / the method's median, a lower bound shown as ``>``) and a one-sided exact
Mann-Whitney U p-value for "fewer iterations than AdamW" (with at least two seeds on each side).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from gnbench.report.results import UNITS, RunResult
from gnbench.report.stats import mann_whitney_less, median, spread


@dataclasses.dataclass(frozen=True)
class MethodRow:
    """A tuned method at one scan value (``None`` without a scan).

    Attributes:
      method, scan_value, setting: which method, batch and hyperparameters.
      runs: its runs over seeds.
      to_target: unit -> (median, min, max) over seeds (``inf`` = not reached).
      final_loss: median final validation loss.
      speedup: unit -> baseline median / this median (``None`` if undefined). When the
        baseline never reached the target, the baseline's spend at its last evaluation over
        this median: a lower bound, flagged in ``speedup_bound``.
      speedup_bound: unit -> whether ``speedup`` is only a lower bound.
      p_value: one-sided Mann-Whitney U p-value vs the baseline, or ``None``.
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

    @property
    def reached(self) -> int:
        """Seeds that reached the target."""
        return sum(r.reached for r in self.runs)


def setting_key(setting: dict[str, Any]) -> str:
    """A hashable, order-free name of a hyperparameter setting.

    Example:
      >>> setting_key({"b": 1, "a": 0.1})
      '{"a": 0.1, "b": 1}'
    """
    return json.dumps(setting, sort_keys=True)


def setting_score(runs: list[RunResult]) -> tuple[float, float]:
    """``(median iterations-to-target, median final loss)``: lower is better, in that order."""
    finals = [r.final_val_loss if not math.isnan(r.final_val_loss) else math.inf for r in runs]
    return (median([r.to_target["step"] for r in runs]), median(finals))


def group_settings(results: list[RunResult]) -> dict[tuple[str, Any, str], list[RunResult]]:
    """Done runs grouped by (method, scan value, setting), in plan order."""
    groups: dict[tuple[str, Any, str], list[RunResult]] = {}
    for r in results:
        if r.done:
            groups.setdefault((r.method, r.scan_value, setting_key(r.setting)), []).append(r)
    return groups


def select_best(results: list[RunResult]) -> dict[tuple[str, Any], list[RunResult]]:
    """The tuned setting's runs for each (method, scan value), by the tuning rule.

    Args:
      results: every run of a sweep (unfinished runs are ignored).

    Returns:
      (method, scan value) -> the runs (over seeds) of the chosen setting.
    """
    best: dict[tuple[str, Any], tuple[tuple[float, float], list[RunResult]]] = {}
    for (method, scan_value, _), runs in group_settings(results).items():
        score = setting_score(runs)
        current = best.get((method, scan_value))
        if current is None or score < current[0]:  # Strict: earlier settings win ties.
            best[(method, scan_value)] = (score, runs)
    return {k: runs for k, (_, runs) in best.items()}


def _ratio(base: float, value: float) -> float | None:
    if math.isinf(value):
        return None  # The method never got there: no speedup to report.
    return base / value if value > 0 else None


def _spent(run: RunResult, unit: str) -> float:
    """What a run had spent in ``unit`` at its last evaluation (0 with none)."""
    return float(run.evals[-1].get(unit, 0.0)) if run.evals else 0.0


def summarize(results: list[RunResult], baseline: str = "adamw") -> list[MethodRow]:
    """One :class:`MethodRow` per tuned (method, scan value), in plan order.

    Args:
      results: every run of the sweep.
      baseline: the method speedups and p-values compare with (tuned at the same scan value).

    Returns:
      The rows; speedup and p-value are ``None`` where the baseline is missing.
    """
    best = select_best(results)
    rows = []
    for (method, scan_value), runs in best.items():
        base_runs = best.get((baseline, scan_value))
        to_target = {u: spread([r.to_target[u] for r in runs]) for u in UNITS}
        speedup: dict[str, float | None] = {}
        bound: dict[str, bool] = {}
        for u in UNITS:
            if not base_runs:
                speedup[u], bound[u] = None, False
                continue
            b = median([r.to_target[u] for r in base_runs])
            bound[u] = math.isinf(b)
            if bound[u]:  # The baseline never got there: it spent at least its budget.
                b = median([_spent(r, u) for r in base_runs])
            speedup[u] = _ratio(b, to_target[u][0])
        p_value = None
        if base_runs and method != baseline and len(runs) >= 2 and len(base_runs) >= 2:
            p_value = mann_whitney_less(
                [r.to_target["step"] for r in runs], [r.to_target["step"] for r in base_runs]
            )
        finals = [r.final_val_loss for r in runs]
        rows.append(
            MethodRow(
                method=method,
                scan_value=scan_value,
                setting=runs[0].setting,
                runs=runs,
                to_target=to_target,
                final_loss=median(finals),
                speedup=speedup,
                p_value=p_value,
                speedup_bound=bound,
            )
        )
    return rows
