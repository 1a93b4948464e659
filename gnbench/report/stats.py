"""Small statistics for few seeds: spreads and an exact one-sided Mann-Whitney U test.

With three to five seeds per method, asymptotic tests are wrong, so the U test here is exact:
the p-value is the fraction of all ways to split the pooled sample into groups of the observed
sizes whose U is at most the observed one (the permutation distribution, conditional on ties;
ties get mid-ranks). Runs that never reach the target enter as ``+inf`` and tie with each other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

# Above this many splits the exact enumeration is replaced by the normal approximation.
MAX_EXACT_SPLITS = 200_000


def median(values: Sequence[float]) -> float:
    """The median, ``+inf`` counting as the largest value (``nan`` for no values, or if any value
    is ``nan``: an unknown cost makes the median unknown).

    Example:
      >>> median([3.0, 1.0, math.inf]), median([1.0, math.nan])
      (3.0, nan)
    """
    a = np.sort(np.asarray(values, dtype=float))
    if a.size == 0 or np.isnan(a).any():
        return math.nan
    mid = a.size // 2
    if a.size % 2:
        return float(a[mid])
    lo, hi = a[mid - 1], a[mid]
    return float(hi) if math.isinf(hi) else float((lo + hi) / 2)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of ``values``.

    Example:
      >>> spread([10.0, 14.0, 12.0, 20.0])
      (13.0, 10.0, 20.0)
    """
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return (math.nan, math.nan, math.nan)
    return (median(a), float(a.min()), float(a.max()))


def midranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks.

    Example:
      >>> midranks([5.0, 1.0, 5.0]).tolist()
      [2.5, 1.0, 2.5]
    """
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and a[order[j + 1]] == a[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def mann_whitney_less(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value of the Mann-Whitney U test for "``x`` tends to be smaller than ``y``".

    ``U_x = R_x - n(n+1)/2`` with ``R_x`` the sum of ``x``'s mid-ranks in the pooled sample; the
    p-value is ``P(U_x <= observed)`` over all equally likely splits of the pooled values.

    Args:
      x: the sample claimed smaller (e.g. a method's iterations-to-target over seeds).
      y: the reference sample (tuned AdamW's).

    Returns:
      The exact p-value (normal approximation beyond ``MAX_EXACT_SPLITS`` splits).

    Example:
      >>> round(mann_whitney_less([1, 2, 3], [4, 5, 6]), 4)  # 1 of 20 splits
      0.05
    """
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return math.nan
    ranks = midranks(list(x) + list(y))
    u_obs = ranks[:n].sum() - n * (n + 1) / 2
    if math.comb(n + m, n) <= MAX_EXACT_SPLITS:
        us = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(n + m), n)])
        us -= n * (n + 1) / 2
        return float(np.mean(us <= u_obs + 1e-9))
    # Normal approximation with tie correction and continuity correction.
    _, counts = np.unique(np.asarray(list(x) + list(y), dtype=float), return_counts=True)
    big_n = n + m
    var = n * m / 12 * ((big_n + 1) - (counts**3 - counts).sum() / (big_n * (big_n - 1)))
    z = (u_obs + 0.5 - n * m / 2) / math.sqrt(var) if var > 0 else 0.0
    return float(0.5 * math.erfc(-z / math.sqrt(2)))
