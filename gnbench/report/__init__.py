"""Results of sweeps: costs to target, tuning, the headline, grid edges, tables and plots.

Example:
  >>> from gnbench.report import write_report
  >>> write_report(["runs/compare_tiny"])  # doctest: +SKIP
"""

from gnbench.report.build import write_report
from gnbench.report.headline import (
    CriticalBatch,
    HeadlineRow,
    critical_batch,
    headline_rows,
    variant_rows,
)
from gnbench.report.results import UNITS, RunResult, first_crossing, run_result, sweep_results
from gnbench.report.stats import mann_whitney_less, median, spread
from gnbench.report.tuning import GridEdge, MethodRow, grid_edges, select_best, summarize

__all__ = [
    "UNITS",
    "CriticalBatch",
    "GridEdge",
    "HeadlineRow",
    "MethodRow",
    "RunResult",
    "critical_batch",
    "first_crossing",
    "grid_edges",
    "headline_rows",
    "mann_whitney_less",
    "median",
    "run_result",
    "select_best",
    "spread",
    "summarize",
    "sweep_results",
    "variant_rows",
    "write_report",
]
