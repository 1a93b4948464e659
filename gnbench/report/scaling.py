"""Batch-size scaling fits and bootstrap intervals: what a scan of a few seeds can claim.

**The fit.** McCandlish et al. (2018), *An Empirical Model of Large-Batch Training*: the
iterations a method needs to reach a loss fall with the batch ``B`` (tokens read per iteration) as

    S(B) = S_min (1 + B_noise / B),

``S_min`` the fewest iterations any batch can give and ``B_noise`` the batch at which it needs
twice that (the critical batch). ``S`` is affine in ``1/B`` (``S = a + b / B``, ``a = S_min``,
``b = S_min B_noise``), so the fit is a weighted linear least squares with weights ``1 / S²``:
it minimises the *relative* residuals, since a count of 60 iterations is as noisy in proportion
as one of 12. A fit whose ``S_min`` comes out ≤ 0 says the scan never left the perfect-scaling
regime (``S ∝ 1/B``): ``S_min`` and ``B_noise`` are then not measured (:attr:`ScalingFit.ok`).
A fit is *resolved* when the interval of ``B_noise`` lies inside the scanned batches.

**The bootstrap.** Intervals resample seeds: each replicate draws, at every scanned batch, as
many seeds as were run there with replacement, takes their median and refits; the 95% interval
is the 2.5th and 97.5th percentiles of the replicates (Efron's percentile bootstrap). Ratios of
two methods' medians resample each method's seeds independently. A batch run with one seed adds
no spread of its own (its replicates all equal it): the intervals are only as honest as the seeds
behind them. Seeds that never reached the target count as ``+inf`` (a ratio with an ``inf``
numerator is ``inf``); a batch whose replicate median is ``inf`` drops out of that replicate's
fit.

Written for gnbench (NumPy only); the model is McCandlish et al.'s, the fit and bootstrap are
textbook.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

BOOTSTRAP_REPLICATES = 2000
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    """``S(B) = s_min (1 + b_noise / B)`` fitted to (batch, iterations) points.

    Attributes:
      s_min: fewest iterations over all batches (``nan`` when not measured).
      b_noise: the critical batch, in the batch's unit (``nan`` when not measured).
      points: how many (finite) points the fit used.
    """

    s_min: float
    b_noise: float
    points: int

    @property
    def ok(self) -> bool:
        """Whether the fit measured both parameters."""
        return math.isfinite(self.s_min) and math.isfinite(self.b_noise)

    def predict(self, batch: float) -> float:
        """Iterations at ``batch`` by the fit."""
        return self.s_min * (1 + self.b_noise / batch)


def fit_scaling(batches: Sequence[float], steps: Sequence[float]) -> ScalingFit:
    """Fits ``S = S_min (1 + B_noise / B)`` by weighted least squares on ``1/B``.

    Args:
      batches: batch sizes ``B`` (> 0).
      steps: iterations to target at each batch; ``inf``/``nan`` points are left out.

    Returns:
      The :class:`ScalingFit` (``nan`` parameters with fewer than two distinct finite points,
      or when ``S_min`` comes out ≤ 0). A negative slope (more iterations at larger batches)
      gives ``B_noise = 0``, ``S_min`` the weighted mean.

    Example:
      >>> fit = fit_scaling([1000, 2000, 4000], [30.0, 20.0, 15.0])  # S_min 10, B_noise 2000
      >>> round(fit.s_min, 6), round(fit.b_noise, 3)
      (10.0, 2000.0)
    """
    b = np.asarray(batches, dtype=float)
    s = np.asarray(steps, dtype=float)
    keep = np.isfinite(s) & np.isfinite(b) & (b > 0) & (s > 0)
    b, s = b[keep], s[keep]
    n = int(b.size)
    if np.unique(b).size < 2:
        return ScalingFit(math.nan, math.nan, n)
    x, w = 1.0 / b, 1.0 / s**2
    design = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
    (a, slope), *_ = np.linalg.lstsq(design, s * np.sqrt(w), rcond=None)
    if slope < 0:
        return ScalingFit(float(np.sum(w * s) / np.sum(w)), 0.0, n)
    if a <= 1e-9 * s.min():  # S ∝ 1/B to rounding: the curve never bends.
        return ScalingFit(math.nan, math.nan, n)
    return ScalingFit(float(a), float(slope / a), n)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval ``[lo, hi]`` (``nan`` where unknown)."""

    value: float
    lo: float
    hi: float

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def __format__(self, spec: str) -> str:
        def one(v: float) -> str:
            return "—" if math.isnan(v) else "∞" if math.isinf(v) else format(v, spec or ".3g")

        return f"{one(self.value)} [{one(self.lo)}, {one(self.hi)}]"


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """The central 95% of bootstrap ``samples`` (``nan`` ignored; ``±inf`` allowed)."""
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], method="nearest")  # inf-safe
    return float(lo), float(hi)


def _median(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median with ``inf`` counted as the largest value (NumPy's median already does so)."""
    return np.median(a, axis=axis)


def resampled_medians(values: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """The medians of ``n`` resamples (with replacement, same size) of ``values``: shape (n,)."""
    a = np.asarray(values, dtype=float)
    idx = rng.integers(0, a.size, size=(n, a.size))
    return _median(a[idx])


@dataclasses.dataclass(frozen=True)
class ScalingBootstrap:
    """A scaling fit with bootstrap intervals.

    Attributes:
      fit: the fit to the medians over seeds at each batch.
      s_min, b_noise: the fit's parameters with their 95% intervals; a replicate whose fit
        fails (still perfect scaling) counts as ``S_min = 0``, ``B_noise = inf``.
      replicates: ``(s_min, b_noise)`` of every replicate, shape ``(n, 2)`` (``nan`` where a
        replicate's fit failed): pair them with another method's to bootstrap a ratio.
      scanned: ``(smallest, largest)`` batch scanned.
    """

    fit: ScalingFit
    s_min: Interval
    b_noise: Interval
    replicates: np.ndarray
    scanned: tuple[float, float]

    @property
    def resolved(self) -> bool:
        """Whether ``B_noise``'s whole interval lies inside the scanned batches."""
        lo, hi = self.scanned
        return self.fit.ok and lo <= self.b_noise.lo and self.b_noise.hi <= hi


def bootstrap_scaling(
    points: Mapping[float, Sequence[float]],
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> ScalingBootstrap:
    """Fits ``S = S_min (1 + B_noise / B)`` to every batch's median and bootstraps the seeds.

    Args:
      points: batch -> iterations to target of each seed run there (``inf``: never reached).
      replicates: bootstrap replicates.
      seed: the resampling's random seed (the report is reproducible).

    Returns:
      The :class:`ScalingBootstrap` (a replicate whose fit fails counts as ``S_min = 0``,
      ``B_noise = inf``: the data allow a curve that never bends).

    Example:
      >>> boot = bootstrap_scaling({1000: [30, 30], 2000: [20, 20], 4000: [15, 15]})
      >>> f"{boot.s_min:.3g}", f"{boot.b_noise:.4g}", boot.resolved
      ('10 [10, 10]', '2000 [2000, 2000]', True)
    """
    batches = sorted(float(b) for b in points if len(points[b]))
    fit = fit_scaling(batches, [float(_median(np.asarray(points[b], float))) for b in batches])
    rng = np.random.default_rng(seed)
    medians = np.stack([resampled_medians(points[b], replicates, rng) for b in batches], axis=1)
    reps = np.full((replicates, 2), math.nan)
    for i in range(replicates):
        f = fit_scaling(batches, medians[i])
        reps[i] = (f.s_min, f.b_noise)

    def interval(j: int, value: float) -> Interval:
        # A failed replicate fit is a curve still in perfect scaling: S_min -> 0, B_noise -> inf.
        col = np.where(np.isnan(reps[:, j]), (0.0, math.inf)[j], reps[:, j])
        return Interval(value, *percentile_interval(col))

    scanned = (batches[0], batches[-1]) if batches else (math.nan, math.nan)
    return ScalingBootstrap(fit, interval(0, fit.s_min), interval(1, fit.b_noise), reps, scanned)


def bootstrap_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> Interval:
    """The ratio of two samples' medians with its 95% percentile-bootstrap interval.

    Each sample is resampled on its own (independent seeds). ``inf`` over a finite median is
    ``inf``; a replicate with an ``inf`` denominator median is left out (the ratio is unknown).

    Args:
      numerator, denominator: e.g. iterations to target over seeds of two methods.
      replicates: bootstrap replicates.
      seed: the resampling's random seed.

    Returns:
      ``Interval(median(num) / median(den), lo, hi)``.

    Example:
      >>> r = bootstrap_ratio([20, 22, 24], [10, 11, 12])
      >>> r.value, r.lo >= 20 / 12, r.hi <= 24 / 10
      (2.0, True, True)
    """
    rng = np.random.default_rng(seed)
    num = resampled_medians(numerator, replicates, rng)
    den = resampled_medians(denominator, replicates, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(np.isfinite(den) & (den > 0), num / den, math.nan)
    value = _ratio(
        float(_median(np.asarray(numerator, float))), float(_median(np.asarray(denominator, float)))
    )
    return Interval(value, *percentile_interval(ratios))


def bootstrap_median(
    values: Sequence[float], replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0
) -> Interval:
    """The median of ``values`` with its 95% percentile-bootstrap interval.

    Example:
      >>> m = bootstrap_median([10.0, 12.0, 11.0])
      >>> m.value, 10.0 <= m.lo <= m.hi <= 12.0
      (11.0, True)
    """
    rng = np.random.default_rng(seed)
    value = float(_median(np.asarray(values, dtype=float)))
    return Interval(value, *percentile_interval(resampled_medians(values, replicates, rng)))


def ratio_of_replicates(num: np.ndarray, den: np.ndarray, value: float) -> Interval:
    """The interval of ``num / den`` over paired bootstrap replicates (e.g. two methods'
    ``S_min`` from :func:`bootstrap_scaling`, each resampled on its own seeds)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(np.isfinite(den) & (den > 0), num / den, math.nan)
    if np.isnan(ratios).mean() > (1 - CONFIDENCE) / 2:
        return Interval(value, math.nan, math.nan)
    return Interval(value, *percentile_interval(ratios))


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or not math.isfinite(b) or b <= 0:
        return math.nan
    return a / b


__all__ = [
    "Interval",
    "bootstrap_median",
    "ScalingBootstrap",
    "ScalingFit",
    "bootstrap_ratio",
    "bootstrap_scaling",
    "fit_scaling",
    "percentile_interval",
    "resampled_medians",
    "ratio_of_replicates",
]
