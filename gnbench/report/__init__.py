"""Results of sweeps: iterations/tokens/compute/wall-clock to target, tuning, tables and plots.

Example:
  >>> from gnbench.report import write_report
  >>> write_report(["runs/compare_tiny"])  # doctest: +SKIP
"""

from gnbench.report.build import write_report
from gnbench.report.results import UNITS, RunResult, first_crossing, run_result, sweep_results
from gnbench.report.stats import mann_whitney_less, median, spread
from gnbench.report.tuning import MethodRow, select_best, summarize

__all__ = [
    "UNITS",
    "MethodRow",
    "RunResult",
    "first_crossing",
    "mann_whitney_less",
    "median",
    "run_result",
    "select_best",
    "spread",
    "summarize",
    "sweep_results",
    "write_report",
]
