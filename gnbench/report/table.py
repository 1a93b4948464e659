"""Markdown tables of the report: the headline, variants, grid edges, tuned methods, every setting.

Numbers are formatted for reading, not for parsing (the JSON files hold the raw values):
``∞`` marks a cost never reached, ``—`` a value that does not exist.
"""

from __future__ import annotations

import math
from typing import Any

from gnbench.report.headline import CriticalBatch, HeadlineRow, VariantRow
from gnbench.report.results import UNITS, RunResult
from gnbench.report.stats import median
from gnbench.report.tuning import GridEdge, MethodRow, group_settings, setting_score

# (method, scan value) -> grid key -> "low" / "high".
EdgeMap = dict[tuple[str, Any], dict[str, str]]


def fmt(value: float | None, unit: str = "") -> str:
    """A number for a table cell.

    Example:
      >>> [fmt(12.0, "step"), fmt(12.34, "step"), fmt(131072.0, "tokens"), fmt(2.4567), fmt(None)]
      ['12', '12.3', '131k', '2.457', '—']
      >>> [fmt(3.1e12, "flops"), fmt(4.56e9, "flops"), fmt(2e15, "flops"), fmt(math.nan, "flops")]
      ['3.10T', '4.56G', '2.00P', '—']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "step":  # Fractional crossings: one decimal where the count is not whole.
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if unit == "tokens":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        return f"{value / 1e3:.0f}k" if value >= 1e3 else f"{value:.0f}"
    if unit == "flops":
        for suffix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{suffix}"
        return f"{value:.0f}"
    if unit in ("grad_equivalents", "wall_clock"):
        return f"{value:.1f}"
    if unit == "speedup":
        return f"{value:.2f}×"
    return f"{value:.3f}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``rows`` (lists of cell strings) under ``head``.

    Example:
      >>> print(markdown_table(["a", "b"], [["1", "2"]]))
      | a | b |
      |---|---|
      | 1 | 2 |
    """
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def fmt_setting(setting: dict[str, Any], edges: dict[str, str] | None = None) -> str:
    """``lr=0.003, gn.inner_learning_rate=0.001``: keys without the ``optimizer.`` prefix; a
    value at the edge of its grid is marked ``(edge: low)`` or ``(edge: high)``.

    Example:
      >>> fmt_setting({"optimizer.learning_rate": 0.003})
      'learning_rate=0.003'
      >>> fmt_setting({"optimizer.learning_rate": 0.01}, {"optimizer.learning_rate": "low"})
      'learning_rate=0.01 (edge: low)'
    """
    if not setting:
        return "(defaults)"
    edges = edges or {}
    return ", ".join(
        f"{k.removeprefix('optimizer.')}={v}" + (f" (edge: {edges[k]})" if k in edges else "")
        for k, v in setting.items()
    )


def edge_map(edges: list[GridEdge]) -> EdgeMap:
    """(method, scan value) -> key -> side, for marking tuned settings in the tables."""
    out: EdgeMap = {}
    for e in edges:
        out.setdefault((e.method, e.scan_value), {})[e.key] = e.side
    return out


def _row_setting(row: MethodRow, edges: EdgeMap | None) -> str:
    return fmt_setting(row.setting, (edges or {}).get((row.method, row.scan_value)))


def _spread_cell(s: tuple[float, float, float], unit: str) -> str:
    med, lo, hi = s
    return f"{fmt(med, unit)} [{fmt(lo, unit)}, {fmt(hi, unit)}]"


def methods_table(rows: list[MethodRow], edges: EdgeMap | None = None) -> str:
    """The table of one scan value: one line per tuned method.

    Args:
      rows: tuned methods (one scan value).
      edges: grid edges to mark in the settings (:func:`edge_map`).

    Returns:
      A Markdown table.
    """
    head = ["method", "best hyperparameters", "reached"]
    head += [f"{label} to target" for label in UNITS.values()]
    head += ["final loss", "speedup (iter / tok / FLOPs / compute / wall)", "p (fewer iter)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.method, _row_setting(row, edges), f"{row.reached}/{len(row.runs)}"]
        cells += [_spread_cell(row.to_target[u], u) for u in UNITS]
        cells.append(fmt(row.final_loss))
        cells.append(
            " / ".join(
                (">" if row.speedup_bound.get(u) and row.speedup[u] is not None else "")
                + fmt(row.speedup[u], "speedup")
                for u in UNITS
            )
        )
        cells.append("—" if row.p_value is None else f"{row.p_value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_table(results: list[RunResult], scan_value: Any = None) -> str:
    """Every setting tried (done runs only), with the numbers the tuning rule compares.

    Args:
      results: every run of the sweep.
      scan_value: restrict to this scan value.

    Returns:
      A Markdown table: method, setting, seeds done, diverged or collapsed, reached, median
      iterations to target, median final loss.
    """
    head = [
        "method",
        "setting",
        "seeds",
        "diverged or collapsed",
        "reached",
        "median iterations",
        "median final loss",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, sv, _), runs in group_settings(results).items():
        if sv != scan_value:
            continue
        iters, _, final = setting_score(runs)
        diverged = sum(r.failed for r in runs)
        cells = [
            method,
            fmt_setting(runs[0].setting),
            str(len(runs)),
            str(diverged),
            str(sum(r.reached for r in runs)),
            fmt(iters, "step"),
            fmt(median([r.final_val_loss for r in runs])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _speedup_cell(value: float | None, bound: bool) -> str:
    return (">" if bound and value is not None else "") + fmt(value, "speedup")


def fmt_critical(cb: CriticalBatch) -> str:
    """A critical batch for a table cell (tokens per iteration).

    Example:
      >>> fmt_critical(CriticalBatch("interpolated", tokens=1689.6)), fmt_critical(
      ...     CriticalBatch("below", tokens=500.0))
      ('1.69k', '≤ 500 (smallest)')
    """

    def tokens(v: float | None) -> str:  # Three significant digits: an interpolated value.
        if v is None:
            return "—"
        for suffix, scale in (("M", 1e6), ("k", 1e3)):
            if v >= scale:
                return f"{v / scale:.3g}{suffix}"
        return f"{v:.3g}"

    if cb.kind == "interpolated":
        return tokens(cb.tokens)
    if cb.kind == "below":
        return f"≤ {tokens(cb.tokens)} (smallest)"
    if cb.kind == "between":
        return f"in ({tokens(cb.lo)}, {tokens(cb.hi)}]"
    return "—"


def headline_table(
    heads: list[HeadlineRow], edges: EdgeMap | None = None, baseline: str = "adamw"
) -> str:
    """The headline table: each method at its own best batch size.

    Args:
      heads: :func:`gnbench.report.headline.headline`.
      edges: grid edges to mark in the settings.
      baseline: the method the speedups and p-values compare with (for the header).

    Returns:
      A Markdown table.
    """
    head = [
        "method",
        "tokens / iteration",
        "best hyperparameters",
        "reached",
        "iterations to target",
        "tokens to target",
        "FLOPs to target",
        "wall-clock (s) to target",
        "ratio to full GN (iter / FLOPs)",
        f"speedup over {baseline} (iter / FLOPs)",
        "p (fewer iter)",
        "critical batch (tokens / iteration)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for h in heads:
        row = h.row
        cells = [
            row.method,
            fmt(row.tokens_per_iteration, "tokens"),
            _row_setting(row, edges),
            f"{row.reached}/{len(row.runs)}",
        ]
        cells += [_spread_cell(row.to_target[u], u) for u in ("step", "tokens", "flops")]
        cells.append(_spread_cell(row.to_target["wall_clock"], "wall_clock"))
        cells.append(" / ".join(fmt(h.ratio_gn[u], "speedup") for u in ("step", "flops")))
        cells.append(
            " / ".join(_speedup_cell(h.speedup[u], h.speedup_bound[u]) for u in ("step", "flops"))
        )
        cells.append("—" if h.p_value is None else f"{h.p_value:.3f}")
        cells.append(fmt_critical(h.critical))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variants_table(variants: list[VariantRow], edges: EdgeMap | None = None) -> str:
    """Each variant against its reference at the same batch.

    Args:
      variants: :func:`gnbench.report.headline.variant_rows`.
      edges: grid edges to mark in the settings.

    Returns:
      A Markdown table.
    """
    head = [
        "variant",
        "of",
        "tokens / iteration",
        "variant hyperparameters",
        "variant iterations",
        "variant reached",
        "reference iterations",
        "reference reached",
        "variant / reference (iter)",
        "ratio to full GN, reference → variant (iter)",
        "ratio to full GN, reference → variant (FLOPs)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        row, ref = v.row, v.ref
        some = row or ref
        cells = [
            v.variant,
            v.of,
            fmt(some.tokens_per_iteration if some else None, "tokens"),
            _row_setting(row, edges) if row else "—",
            _spread_cell(row.to_target["step"], "step") if row else "—",
            f"{row.reached}/{len(row.runs)}" if row else "—",
            _spread_cell(ref.to_target["step"], "step") if ref else "—",
            f"{ref.reached}/{len(ref.runs)}" if ref else "—",
        ]
        ratio = None
        if row and ref and math.isfinite(ref.to_target["step"][0]):
            ratio = row.to_target["step"][0] / ref.to_target["step"][0]
        cells.append(fmt(ratio, "speedup"))
        for u in ("step", "flops"):
            cells.append(
                f"{fmt(v.ratio_gn_ref[u], 'speedup')} → {fmt(v.ratio_gn_variant[u], 'speedup')}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def edges_section(edges: list[GridEdge], scan_key: str | None = None) -> str:
    """The list of tuned values at the edge of their grid (or a line saying there are none).

    Example:
      >>> print(edges_section([GridEdge("adamw", 8, "optimizer.learning_rate", 0.01, "low")],
      ...                     "data.micro_batches"))
      - adamw at data.micro_batches = 8: learning_rate = 0.01 is the grid's lowest value (low)
      >>> edges_section([])
      'none: every tuned setting is interior to its grid.'
    """
    if not edges:
        return "none: every tuned setting is interior to its grid."
    lines = []
    for e in edges:
        where = "" if e.scan_value is None else f" at {scan_key or 'scan'} = {e.scan_value}"
        if e.side == "floor":
            lines.append(
                f"- {e.method}{where}: the line search took its smallest step size on "
                f"{e.value:.0%} of iterations (median over seeds; an edge at ≥ 50%: widen its "
                "range)"
            )
            continue
        extreme = "lowest" if e.side == "low" else "highest"
        lines.append(
            f"- {e.method}{where}: {e.key.removeprefix('optimizer.')} = {e.value} is the "
            f"grid's {extreme} value ({e.side})"
        )
    return "\n".join(lines)


def iteration_cost_table(rows: list[MethodRow], summaries: dict[str, dict[str, Any]]) -> str:
    """What one iteration of each row's method reads and costs, from its runs' summaries.

    Args:
      rows: tuned rows (e.g. each method at its headline point).
      summaries: run id -> ``summary.json`` (its ``cost_per_iteration``, written by the trainer).

    Returns:
      A Markdown table: tokens read by the gradient or inner solve and by the line search, FLOPs
      and forward+backward passes per iteration ("—" for runs from a trainer that did not
      record them).
    """
    head = [
        "method",
        "tokens: gradient / inner solve",
        "tokens: line search",
        "FLOPs",
        "forward+backward passes",
        "iterations at the line search's smallest α",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        costs = [(summaries.get(r.id) or {}).get("cost_per_iteration") for r in row.runs]
        cost = next((c for c in costs if c), None)
        share = row.floor_share
        cells = [row.method] + ["—"] * 4 + ["—" if share is None else f"{share:.0%}"]
        if cost is not None:
            cells[1:5] = [
                fmt(float(cost["inner_tokens"]), "tokens"),
                fmt(float(cost["line_search_tokens"]), "tokens"),
                fmt(float(cost["step_flops"]), "flops"),
                f"{cost['step_flops'] / cost['fwd_bwd_flops']:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
