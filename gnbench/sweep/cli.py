"""``gnbench sweep SWEEP_FILE``: plan a sweep, run it, write its report.

    gnbench sweep experiments/compare_tiny.py                     # local, report at the end
    gnbench sweep experiments/compare_tiny.py --executor dry-run  # show runs and commands
    gnbench sweep experiments/compare_tiny.py --quick             # get_sweep(quick=True)
    gnbench sweep experiments/compare_tiny.py --executor slurm --partition gpu --time 04:00:00

Results go to ``<out>/<sweep name>/`` (``plan.json``, ``status.json``, ``runs/<run id>/``,
``report.md``). Rerunning the same command skips finished runs, resumes the others and retries
failed ones. Exit code: 0 if every run is done (finished or diverged), 1 if some failed, 2 for a
bad sweep file or option.

A sweep with ``headline_seeds`` or ``variants`` runs in two stages: stage 1 (tuning) runs, then
stage 2 (headline seeds at each method's headline point, variants at their reference's headline
batch) is planned from the stage-1 results, ``plan.json`` is rewritten with it and the same
executor runs it. Stage-2 runs already known from earlier results go in with stage 1. A run that
failed earlier in the same command is not launched again by stage 2 (a rerun retries it).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
from pathlib import Path

from gnbench.report.build import write_report
from gnbench.sweep.executors import EXECUTORS, TRAINER_CMD, Executor, make_executor
from gnbench.sweep.plan import Plan, make_plan, write_plan
from gnbench.sweep.reuse import reuse_finished_runs
from gnbench.sweep.spec import SweepError, SweepSpec, load_sweep_file
from gnbench.sweep.stage2 import stage2_runs, with_stage2
from gnbench.sweep.status import SweepStatus


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gnbench sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep_file", help="a Python file with get_sweep()")
    p.add_argument(
        "--executor",
        default="local",
        help=f"how to run: {', '.join(sorted(EXECUTORS))} (default local)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="runs at once (local: default half the cores; slurm: array throttle, default none)",
    )
    p.add_argument("--out", default="runs", help="root folder of sweeps (default runs)")
    p.add_argument("--quick", action="store_true", help="the sweep's small variant")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument(
        "--trainer-cmd",
        default=None,
        help="command training one run, before its --config arguments "
        f"(default: {shlex.join(TRAINER_CMD)})",
    )
    g = p.add_argument_group("--executor slurm (one array job; --parallel caps tasks at once)")
    g.add_argument("--partition", default=None, help="partition (default: the cluster's)")
    g.add_argument("--time", default=None, help="time limit of one run, e.g. 04:00:00")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task")
    g.add_argument("--mem", default=None, help="memory per node, e.g. 32G")
    g.add_argument("--nodes", type=int, default=None, help="nodes per run (default 1)")
    g.add_argument(
        "--ntasks-per-node",
        type=int,
        default=None,
        help="trainer processes per node (default 1; > 1 in all: srun + jax.distributed)",
    )
    g.add_argument(
        "--sbatch-arg",
        action="append",
        default=None,
        help="extra #SBATCH option, repeatable, e.g. --sbatch-arg=--gpus-per-node=8",
    )
    g.add_argument("--poll-seconds", type=float, default=None, help="squeue poll (default 5)")
    g.add_argument(
        "--slurm-dry-run", action="store_true", help="print the sbatch script; submit nothing"
    )
    return p


SLURM_FLAGS = {  # argparse dest -> SlurmExecutor keyword
    "partition": "partition",
    "time": "time_limit",
    "cpus_per_task": "cpus_per_task",
    "mem": "mem",
    "nodes": "nodes",
    "ntasks_per_node": "ntasks_per_node",
    "sbatch_arg": "sbatch_args",
    "poll_seconds": "poll_seconds",
    "slurm_dry_run": "dry_run",
}


def _bad_option(args: argparse.Namespace) -> str | None:
    """Why an option cannot be meant (one line), or ``None``; looks at the disk, writes nothing."""
    at_least_one = ("parallel", "cpus_per_task", "nodes", "ntasks_per_node")
    for dest in at_least_one:
        value = getattr(args, dest)
        if value is not None and value < 1:
            return f"--{dest.replace('_', '-')} {value} must be an integer >= 1"
    poll = args.poll_seconds
    if poll is not None and not (math.isfinite(poll) and poll > 0):
        return f"--poll-seconds {poll} must be a number > 0"
    out = Path(args.out).absolute()
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"--out {args.out} cannot be created: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"--out {args.out} is not writable ({probe} denies writing); give another --out"
    return None


def full_plan(spec: SweepSpec, stage1: Plan, sweep_dir: Path) -> tuple[Plan, list[str]]:
    """Stage 1 plus the stage-2 runs the results under ``sweep_dir`` determine so far."""
    if not spec.two_stage:
        return stage1, []
    runs, notes = stage2_runs(spec, stage1, sweep_dir)
    return with_stage2(stage1, runs), notes


def _reuse(spec: SweepSpec, plan: Plan, sweep_dir: Path) -> None:
    """Copies in the finished runs of the sweeps ``spec.reuse`` names (same identity)."""
    if spec.reuse:
        sources = [sweep_dir.parent / name for name in spec.reuse]
        reused = reuse_finished_runs(plan, sweep_dir, sources)
        if reused:
            names = ", ".join(spec.reuse)
            print(
                f"sweep {plan.name}: {len(reused)} finished runs reused from {names}",
                file=sys.stderr,
            )


def main(argv: list[str], trainer_cmd: list[str] | None = None) -> int:
    """Command-line entry of ``gnbench sweep``.

    Args:
      argv: arguments after ``sweep``, e.g. ``["experiments/compare_tiny.py", "--quick"]``.
      trainer_cmd: the trainer command (tests inject a fake); ``--trainer-cmd`` overrides it.

    Returns:
      0 when every run is done, 1 when some run failed, 2 for a bad sweep file or option.

    Example:
      >>> main(["experiments/compare_tiny.py", "--executor", "dry-run"])  # doctest: +SKIP
      0
    """
    args = _parser().parse_args(argv)
    if args.trainer_cmd:
        trainer_cmd = shlex.split(args.trainer_cmd)
    given = [
        d for d in SLURM_FLAGS if getattr(args, d) is not None and getattr(args, d) is not False
    ]
    slurm = {SLURM_FLAGS[dest]: getattr(args, dest) for dest in given}
    if slurm and args.executor != "slurm":
        flags = ", ".join("--" + d.replace("_", "-") for d in given)
        print(f"gnbench sweep: {flags} only apply to --executor slurm", file=sys.stderr)
        return 2
    bad = _bad_option(args)
    if bad:
        print(f"gnbench sweep: {bad}", file=sys.stderr)
        return 2
    try:
        executor = make_executor(
            args.executor, trainer_cmd=trainer_cmd, parallel=args.parallel, **slurm
        )
        spec = load_sweep_file(args.sweep_file, quick=args.quick)
    except (SweepError, ValueError) as e:
        print(f"gnbench sweep: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    dry_run = args.executor == "dry-run" or args.slurm_dry_run
    return run_sweep(spec, executor, args.out, dry_run=dry_run, report=not args.no_report)


def run_sweep(
    spec: SweepSpec,
    executor: Executor,
    out: str | Path,
    *,
    dry_run: bool = False,
    report: bool = True,
    prog: str = "gnbench sweep",
) -> int:
    """Plans ``spec``, runs it with ``executor`` under ``<out>/<spec.name>`` (both stages,
    reusing the finished runs of the sweeps ``spec.reuse`` names) and writes its report: what
    ``gnbench sweep`` and ``gnbench ladder`` both do once the spec is built.

    Args:
      spec: a checked sweep (:func:`gnbench.sweep.spec.load_sweep_file` or
        :func:`gnbench.sweep.spec.parse_sweep` + :func:`gnbench.sweep.runs_check.check_runs`).
      executor: how runs run (:func:`gnbench.sweep.executors.make_executor`).
      out: the root folder of sweeps.
      dry_run: only show the plan (the executor prints it); write nothing.
      report: write ``report.md`` at the end.
      prog: the command named in one-line errors.

    Returns:
      0 when every run is done, 1 when some run failed, 2 for a plan that cannot be made (a
      corrupt ``status.json`` or summary in the sweep folder).
    """
    try:
        stage1 = make_plan(spec)
        sweep_dir = Path(out) / stage1.name
        plan, notes = full_plan(spec, stage1, sweep_dir)  # Reads earlier results, if any.
        SweepStatus.load(sweep_dir, plan)  # A corrupt status.json or summary fails here.
    except (SweepError, ValueError) as e:
        print(f"{prog}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if dry_run:
        executor.execute(plan, sweep_dir)
        return 0
    write_plan(plan, sweep_dir)
    _reuse(spec, plan, sweep_dir)
    states = executor.execute(plan, sweep_dir)
    if spec.two_stage:
        again, notes = full_plan(spec, stage1, sweep_dir)
        if [r.id for r in again.runs] != [r.id for r in plan.runs]:
            new = len(again.runs) - len(plan.runs)
            print(
                f"sweep {plan.name}: stage 2: {new} more runs planned from stage-1 results",
                file=sys.stderr,
            )
            held = frozenset(rid for rid, s in states.items() if s == "failed")
            plan = again
            write_plan(plan, sweep_dir)
            _reuse(spec, plan, sweep_dir)
            states = executor.execute(dataclasses.replace(plan, hold=held), sweep_dir)
        for note in notes:
            print(f"sweep {plan.name}: {note}", file=sys.stderr)
    failed = sorted(rid for rid, s in states.items() if s == "failed")
    done = sum(s in ("finished", "diverged") for s in states.values())
    print(
        f"sweep {plan.name}: {done}/{len(states)} runs done, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    if report and done:
        print(f"report: {write_report([sweep_dir])}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
