"""Dolan-Moré performance profiles over several sweeps (as MLCommons AlgoPerf scores them).

Each problem (a sweep, or one scan value of a scanning sweep) gives each tuned method a cost to the
target (median over seeds). With ``r = cost / best cost on that problem``, a method's profile is
``rho(tau) = fraction of problems with r <= tau``: ``rho(1)`` is how often it is the best, and how
fast ``rho`` climbs says how far behind it is elsewhere. A method that never reaches the target on
a problem (or is absent from it, or its cost is unknown) has ``r = inf``.
"""

from __future__ import annotations

import math

import numpy as np

from gnbench.report.results import UNITS
from gnbench.report.tuning import MethodRow


def profile(costs: dict[str, list[float]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Performance profile of each method.

    Args:
      costs: method -> cost on each problem (all lists in the same problem order; ``inf`` for
        never reached).

    Returns:
      method -> (taus, rho) with rho[i] the fraction of problems within factor taus[i] of the
      best; taus start at 1 and end a little past the largest finite ratio.

    Example:
      >>> p = profile({"a": [10.0, 30.0], "b": [20.0, 15.0]})
      >>> p["a"][0].tolist(), p["a"][1].tolist()
      ([1.0, 2.0, 2.1], [0.5, 1.0, 1.0])
    """
    methods = list(costs)
    t = np.array([costs[m] for m in methods], dtype=float)  # methods x problems
    t = np.where(np.isnan(t), np.inf, t)  # An unknown cost (no FLOPs logged) never counts.
    best = t.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(t) & np.isfinite(best)[None], t / best[None], np.inf)
    finite = ratio[np.isfinite(ratio)]
    top = float(finite.max()) if finite.size else 1.0
    taus = np.unique(np.concatenate([[1.0], finite, [max(top * 1.05, 1.05)]]))
    return {
        m: (taus, (ratio[i][None, :] <= taus[:, None] + 1e-12).mean(axis=1))
        for i, m in enumerate(methods)
    }


def problem_costs(problems: list[list[MethodRow]]) -> dict[str, dict[str, list[float]]]:
    """unit -> method -> median cost on each problem (``inf`` where absent or not reached).

    Args:
      problems: the tuned rows of each problem.

    Returns:
      Costs ready for :func:`profile`.
    """
    methods = list(dict.fromkeys(r.method for rows in problems for r in rows))
    out: dict[str, dict[str, list[float]]] = {}
    for unit in UNITS:
        out[unit] = {}
        for m in methods:
            out[unit][m] = [
                next((r.to_target[unit][0] for r in rows if r.method == m), math.inf)
                for rows in problems
            ]
    return out
