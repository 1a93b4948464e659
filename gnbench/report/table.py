"""Markdown tables of the report: tuned methods, and every setting tried.

Numbers are formatted for reading, not for parsing (the JSON files hold the raw values):
``∞`` marks a cost never reached, ``—`` a value that does not exist.
"""

from __future__ import annotations

import math
from typing import Any

from gnbench.report.results import UNITS, RunResult
from gnbench.report.stats import median
from gnbench.report.tuning import MethodRow, group_settings, setting_score


def fmt(value: float | None, unit: str = "") -> str:
    """A number for a table cell.

    Example:
      >>> [fmt(12.0, "step"), fmt(131072.0, "tokens"), fmt(2.4567), fmt(math.inf), fmt(None)]
      ['12', '131k', '2.457', '∞', '—']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "step":
        return f"{value:.0f}"
    if unit == "tokens":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"
    if unit in ("grad_equivalents", "wall_clock"):
        return f"{value:.1f}"
    if unit == "speedup":
        return f"{value:.2f}×"
    return f"{value:.3f}"


def fmt_setting(setting: dict[str, Any]) -> str:
    """``lr=0.003, gn.inner_learning_rate=0.001``: keys without the ``optimizer.`` prefix.

    Example:
      >>> fmt_setting({"optimizer.learning_rate": 0.003})
      'learning_rate=0.003'
    """
    if not setting:
        return "(defaults)"
    return ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in setting.items())


def _spread_cell(s: tuple[float, float, float], unit: str) -> str:
    med, lo, hi = s
    return f"{fmt(med, unit)} [{fmt(lo, unit)}, {fmt(hi, unit)}]"


def methods_table(rows: list[MethodRow]) -> str:
    """The main table: one line per tuned method.

    Args:
      rows: tuned methods (one scan value).

    Returns:
      A Markdown table.
    """
    head = ["method", "best hyperparameters", "reached"]
    head += [f"{label} to target" for label in UNITS.values()]
    head += ["final loss", "speedup (iter / tok / compute / wall)", "p (fewer iter)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.method, fmt_setting(row.setting), f"{row.reached}/{len(row.runs)}"]
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
      A Markdown table: method, setting, seeds done, diverged, reached, median iterations to
      target, median final loss.
    """
    head = [
        "method",
        "setting",
        "seeds",
        "diverged",
        "reached",
        "median iterations",
        "median final loss",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, sv, _), runs in group_settings(results).items():
        if sv != scan_value:
            continue
        iters, final = setting_score(runs)
        diverged = sum(r.status == "diverged" for r in runs)
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
