"""The headline: every method at its own best batch size, its critical batch, and the variants.

- :func:`headline_rows`: each method's *headline point*, its tuned row at its best scan value:
  the fewest median iterations-to-target over the tuning seeds (the tuning rule's own score, so
  headline seeds cannot move it); ties go to the fewer tokens per iteration, then to the scan
  value listed first. Without a scan a method's only tuned row is its headline point.
- :func:`critical_batch`: the tokens per iteration at which a method's median iterations-to-target
  is twice its fewest over the scan. McCandlish et al. (2018), *An Empirical Model of Large-Batch
  Training*: ``S = S_min (1 + B_noise / B)``, so at ``B = B_crit = B_noise``, ``S = 2 S_min``.
  ``S_min`` is the fewest median over the scanned points (tuning seeds); ``B_crit`` is linearly
  interpolated in log-log between the two scanned points around ``2 S_min``, on the small-batch
  side of the fewest. When no scanned point below it needs ``>= 2 S_min`` iterations, the
  critical batch is at most the smallest scanned one (``≤ smallest``).
- :func:`headline`: per method its headline row, its ratio to full GN (the method's median /
  ``gauss_newton``'s, each at its own headline point; iterations and FLOPs), its speedup over
  the baseline (the baseline's headline median / the method's), the one-sided Mann-Whitney p
  that it needs fewer iterations than the baseline at the baseline's headline point, and its
  critical batch.
- :func:`variant_rows`: each variant against its reference at the same batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from typing import Any

from gnbench.report.tuning import MethodRow, p_fewer_iterations, speedup_over

FULL_GN = "gauss_newton"  # The default far end of the gap; a sweep names its own (``full_gn``).
HEADLINE_UNITS = ("step", "flops")  # Units of the ratio-to-full-GN and speedup columns.


def _key(value: float) -> float:
    return math.inf if math.isnan(value) else value


def headline_rows(rows: list[MethodRow], exclude: Collection[str] = ()) -> dict[str, MethodRow]:
    """method -> its tuned row at its best scan value (see the module docstring).

    Args:
      rows: tuned rows of every method at every scan value (:func:`summarize`).
      exclude: methods to leave out (variants).

    Returns:
      The headline row of each method, in the order methods first appear in ``rows``.
    """
    best: dict[str, tuple[tuple[float, float], MethodRow]] = {}
    for row in rows:
        if row.method in exclude:
            continue
        tpi = row.tokens_per_iteration
        key = (_key(row.score[0]), math.inf if tpi is None else tpi)
        if row.method not in best or key < best[row.method][0]:  # Strict: earlier wins ties.
            best[row.method] = (key, row)
    return {m: row for m, (_, row) in best.items()}


@dataclasses.dataclass(frozen=True)
class CriticalBatch:
    """A method's critical batch (tokens per iteration).

    Attributes:
      kind: ``interpolated`` (``tokens`` holds it), ``below`` (at most ``tokens``, the smallest
        scanned batch), ``between`` (in ``(lo, hi]``: the point at ``lo`` never reached the
        target, so there is nothing to interpolate from) or ``undefined`` (no scanned point
        reached the target, or the batch sizes are unknown).
      s_min: the fewest median iterations to target over the scan.
    """

    kind: str
    tokens: float | None = None
    lo: float | None = None
    hi: float | None = None
    s_min: float = math.nan


def critical_batch(rows: list[MethodRow]) -> CriticalBatch:
    """The critical batch of one method from its tuned rows at every scan value.

    Args:
      rows: the method's tuned rows (one per scan value).

    Returns:
      Its :class:`CriticalBatch` (see the module docstring for the rule).

    Example (medians 40, 16, 10 at 1k, 2k, 4k tokens: 2 S_min = 20 lies between 1k and 2k):
      >>> from gnbench.report.tuning import MethodRow
      >>> def row(tpi, steps):
      ...     from gnbench.report.results import RunResult
      ...     run = RunResult("r", "m", {}, 0, tpi, "finished", {"step": steps}, 2.0, [], tpi)
      ...     return MethodRow("m", tpi, {}, [run], {}, 2.0, {}, None)
      >>> cb = critical_batch([row(1000.0, 40.0), row(2000.0, 16.0), row(4000.0, 10.0)])
      >>> cb.kind, round(cb.tokens, 1)  # 1000 * 2 ** (ln(20/40) / ln(16/40))
      ('interpolated', 1689.4)
    """
    pts = sorted((r.tokens_per_iteration, _key(r.score[0])) for r in rows if r.tokens_per_iteration)
    finite = [s for _, s in pts if math.isfinite(s)]
    if not finite:
        return CriticalBatch("undefined")
    s_min = min(finite)
    i_min = next(i for i, (_, s) in enumerate(pts) if s == s_min)
    target = 2 * s_min
    above = [j for j in range(i_min) if pts[j][1] >= target]
    if not above:
        return CriticalBatch("below", tokens=pts[0][0], s_min=s_min)
    j = above[-1]
    (b0, s0), (b1, s1) = pts[j], pts[j + 1]  # s0 >= 2 S_min > s1.
    if math.isinf(s0):
        return CriticalBatch("between", lo=b0, hi=b1, s_min=s_min)
    if s0 == target:  # A scanned point needs exactly twice the fewest.
        return CriticalBatch("interpolated", tokens=b0, s_min=s_min)
    t = (math.log(target) - math.log(s0)) / (math.log(s1) - math.log(s0))
    tokens = math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return CriticalBatch("interpolated", tokens=tokens, s_min=s_min)


def _median(row: MethodRow | None, unit: str) -> float:
    return math.nan if row is None else row.to_target[unit][0]


def ratio_to(value: float, reference: float) -> float | None:
    """``value / reference``; ``inf`` when only ``value`` is ``inf``; ``None`` when undefined
    (a cost unknown, or the reference never reached the target)."""
    if math.isnan(value) or math.isnan(reference) or not math.isfinite(reference):
        return None
    if reference <= 0:
        return None
    return value / reference


@dataclasses.dataclass(frozen=True)
class HeadlineRow:
    """A method at its headline point, compared with full GN and with the baseline.

    Attributes:
      row: the method's tuned row at its best scan value.
      ratio_gn: unit -> the method's median / full GN's (at GN's headline point), ``None``
        when undefined or GN is absent.
      speedup: unit -> the baseline's headline median / the method's (``None`` if undefined).
      speedup_bound: unit -> whether the speedup is a lower bound (the baseline never reached).
      p_value: one-sided Mann-Whitney p of fewer iterations than the baseline, or ``None``.
      critical: the method's critical batch over the scan.
    """

    row: MethodRow
    ratio_gn: dict[str, float | None]
    speedup: dict[str, float | None]
    speedup_bound: dict[str, bool]
    p_value: float | None
    critical: CriticalBatch

    @property
    def method(self) -> str:
        return self.row.method


def headline(
    rows: list[MethodRow],
    baseline: str = "adamw",
    exclude: Collection[str] = (),
    full_gn: str = FULL_GN,
) -> list[HeadlineRow]:
    """Every method (but ``exclude``) at its headline point, in method order.

    Args:
      rows: tuned rows of every method at every scan value.
      baseline: the method speedups and p-values compare with (at its own headline point).
      exclude: methods to leave out (variants, tuned at one batch only).
      full_gn: the method the ratios divide by (the sweep's ``full_gn``).
    """
    heads = headline_rows(rows, exclude)
    gn, base = heads.get(full_gn), heads.get(baseline)
    out = []
    for method, row in heads.items():
        speedup, bound = {}, {}
        for u in HEADLINE_UNITS:
            speedup[u], bound[u] = speedup_over(row.runs, base.runs if base else None, u)
        out.append(
            HeadlineRow(
                row=row,
                ratio_gn={u: ratio_to(_median(row, u), _median(gn, u)) for u in HEADLINE_UNITS},
                speedup=speedup,
                speedup_bound=bound,
                p_value=None
                if method == baseline or base is None
                else p_fewer_iterations(row.runs, base.runs),
                critical=critical_batch([r for r in rows if r.method == method]),
            )
        )
    return out


@dataclasses.dataclass(frozen=True)
class VariantRow:
    """A variant against its reference at the variant's batch.

    Attributes:
      variant, of: the variant and its reference method.
      row: the variant's tuned row (``None`` before its runs are done).
      ref: the reference's tuned row at the same scan value (``None`` if absent).
      ratio_gn_ref: unit -> the reference's headline median / full GN's (the headline table's
        ratio to full GN of the reference).
      ratio_gn_variant: unit -> the variant's median / full GN's: that ratio if the variant
        replaced the reference.
    """

    variant: str
    of: str
    row: MethodRow | None
    ref: MethodRow | None
    ratio_gn_ref: dict[str, float | None]
    ratio_gn_variant: dict[str, float | None]


def variant_rows(
    rows: list[MethodRow], variants: dict[str, str], full_gn: str = FULL_GN
) -> list[VariantRow]:
    """Each variant (``variant -> reference``) against its reference at the same batch.

    A variant's tuned row is its headline row (it runs at one scan value); the reference's row
    is the one at the same scan value, its headline point when stage 2 planned the variant.
    """
    heads = headline_rows(rows, exclude=variants)
    vheads = headline_rows([r for r in rows if r.method in variants])
    gn = heads.get(full_gn)
    out = []
    for variant, of in variants.items():
        row = vheads.get(variant)
        sv: Any = row.scan_value if row else (heads[of].scan_value if of in heads else None)
        ref = next((r for r in rows if r.method == of and r.scan_value == sv), None)
        out.append(
            VariantRow(
                variant=variant,
                of=of,
                row=row,
                ref=ref,
                ratio_gn_ref={
                    u: ratio_to(_median(heads.get(of), u), _median(gn, u)) for u in HEADLINE_UNITS
                },
                ratio_gn_variant={
                    u: ratio_to(_median(row, u), _median(gn, u)) for u in HEADLINE_UNITS
                },
            )
        )
    return out
