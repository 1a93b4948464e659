"""Sweeps: a sweep file -> a plan of runs with stable ids -> an executor that runs them.

A sweep with ``headline_seeds`` or ``variants`` has a second stage, planned from the first
stage's results (:func:`stage2_runs`); ``gnbench sweep`` runs both.

Example:
  >>> from gnbench.sweep import load_sweep_file, make_plan, make_executor
  >>> plan = make_plan(load_sweep_file("experiments/compare_tiny.py"))  # doctest: +SKIP
  >>> make_executor("dry-run").execute(plan, Path("runs") / plan.name)  # doctest: +SKIP
"""

from gnbench.sweep import slurm  # noqa: F401  (registers the "slurm" executor)
from gnbench.sweep.executors import (
    EXECUTORS,
    TRAINER_CMD,
    Executor,
    make_executor,
    register_executor,
)
from gnbench.sweep.plan import (
    Plan,
    Run,
    make_plan,
    make_run,
    run_args,
    run_id,
    write_plan,
)
from gnbench.sweep.spec import SweepError, SweepSpec, load_sweep_file
from gnbench.sweep.stage2 import stage2_runs, with_stage2

__all__ = [
    "EXECUTORS",
    "TRAINER_CMD",
    "Executor",
    "Plan",
    "Run",
    "SweepError",
    "SweepSpec",
    "load_sweep_file",
    "make_executor",
    "make_plan",
    "make_run",
    "register_executor",
    "run_args",
    "run_id",
    "stage2_runs",
    "with_stage2",
    "write_plan",
]
