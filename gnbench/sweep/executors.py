"""Executors: how the runs of a plan get run.

An executor takes a :class:`~gnbench.sweep.plan.Plan` and a sweep folder and returns the state of
every run. They are registered by name (``EXECUTORS``), so a cluster executor (SLURM: one array
job, each task runs one run id) plugs in with ``@register_executor`` and nothing else changes.

- ``dry-run`` prints the plan: ids, overrides and the exact commands, and for a two-stage sweep a
  line saying stage 2 is planned from stage-1 results; runs nothing.
- ``local`` runs a pool of ``parallel`` trainer subprocesses. Each run's stdout and stderr go to
  ``<run dir>/log.txt`` (appended, one header per attempt). The shared warm-up (if any) runs
  first and alone. Runs with a ``summary.json`` are skipped (and those in ``plan.hold``); the
  others are (re)launched and the trainer resumes them from their last checkpoint. A crash
  (non-zero exit) is recorded as ``failed`` in ``status.json`` and the sweep goes on; a diverged
  run is done.

Children stay in the sweep's process group, so killing the group stops everything; a rerun of
the same command picks up where it stopped.
"""

from __future__ import annotations

import abc
import os
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import ClassVar

from tqdm import tqdm

from gnbench.sweep.plan import Plan, Run, run_args
from gnbench.sweep.spec import REPO_ROOT
from gnbench.sweep.status import DONE_STATES, SweepStatus, run_state

TRAINER_CMD = (sys.executable, "-m", "gnbench.cli", "train")


class Executor(abc.ABC):
    """Runs the runs of a plan. Subclasses set ``name`` and implement :meth:`execute`.

    Args:
      trainer_cmd: the command that trains one run; the run's ``--config ...`` arguments are
        appended (default ``python -m gnbench.cli train``). Tests inject a fake trainer here.
      parallel: how many runs at once (executors that run nothing ignore it).
    """

    name: ClassVar[str] = ""

    def __init__(
        self, trainer_cmd: list[str] | tuple[str, ...] | None = None, parallel: int | None = None
    ):
        self.trainer_cmd = list(trainer_cmd or TRAINER_CMD)
        self.parallel = max(1, parallel or default_parallel())

    def command(self, plan: Plan, run: Run, sweep_dir: Path) -> list[str]:
        """The full command line of ``run``."""
        return self.trainer_cmd + run_args(plan, run, sweep_dir)

    @abc.abstractmethod
    def execute(self, plan: Plan, sweep_dir: Path) -> dict[str, str]:
        """Runs (or shows) the plan; returns run id -> state (finished/diverged/failed/...)."""


EXECUTORS: dict[str, type[Executor]] = {}


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Class decorator adding an executor to ``EXECUTORS`` under ``cls.name``."""
    if not cls.name or cls.name in EXECUTORS:
        raise ValueError(f"executor name {cls.name!r} is empty or taken")
    EXECUTORS[cls.name] = cls
    return cls


def make_executor(name: str, **kwargs) -> Executor:
    """The executor registered as ``name``, built with ``kwargs``.

    Example:
      >>> make_executor("dry-run").name
      'dry-run'

    Raises:
      ValueError: unknown name (the message lists the valid ones).
    """
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; valid executors: {sorted(EXECUTORS)}")
    return EXECUTORS[name](**kwargs)


def child_env() -> dict[str, str]:
    """The environment of a run: this one, with the repo root first on ``PYTHONPATH`` so that
    experiment files importing ``experiments.base`` load from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def default_parallel() -> int:
    """Runs at once on this machine: half the cores (a JAX run uses two threads well), >= 1."""
    return max(1, (os.cpu_count() or 1) // 2)


@register_executor
class DryRunExecutor(Executor):
    """Prints every run: id, state, overrides and command. Runs nothing."""

    name = "dry-run"

    def execute(self, plan: Plan, sweep_dir: Path) -> dict[str, str]:
        status = SweepStatus.load(sweep_dir, plan)
        runs = plan.all_runs()
        print(f"sweep {plan.name}: {len(runs)} runs -> {sweep_dir}")
        for run in runs:
            state = status.runs[run.id]["state"]
            stage = "" if run.stage == "tuning" else f"  ({run.stage})"
            print(f"\n{run.id}  [{state}]{stage}")
            for key, value in run.overrides.items():
                print(f"  {key} = {value!r}")
            print("  $ " + shlex.join(self.command(plan, run, sweep_dir)))
        note = plan.stage2_note()
        if note:
            print(f"\n{note}")
        return {rid: e["state"] for rid, e in status.runs.items()}


@register_executor
class LocalExecutor(Executor):
    """A pool of ``parallel`` trainer subprocesses on this machine."""

    name = "local"
    poll_seconds: ClassVar[float] = 0.2

    def execute(self, plan: Plan, sweep_dir: Path) -> dict[str, str]:
        sweep_dir = Path(sweep_dir)
        status = SweepStatus.load(sweep_dir, plan)
        status.save()
        total = len(plan.all_runs())
        done = sum(e["state"] in DONE_STATES for e in status.runs.values())
        bar = tqdm(total=total, initial=done, desc=plan.name, unit="run", file=sys.stderr)
        try:
            warmup_ok = True
            if plan.warmup is not None:
                self._pool([plan.warmup], plan, sweep_dir, status, bar)
                warmup_ok = status.runs[plan.warmup.id]["state"] == "finished"
            if warmup_ok:
                self._pool(plan.runs, plan, sweep_dir, status, bar)
            else:
                for run in plan.runs:
                    if status.runs[run.id]["state"] not in DONE_STATES:
                        status.set(run.id, state="failed", error="the warm-up run did not finish")
        finally:
            bar.close()
        return {rid: e["state"] for rid, e in status.runs.items()}

    def _pool(
        self, runs: list[Run], plan: Plan, sweep_dir: Path, status: SweepStatus, bar: tqdm
    ) -> None:
        queue = deque(
            r
            for r in runs
            if status.runs[r.id]["state"] not in DONE_STATES and r.id not in plan.hold
        )
        running: dict[subprocess.Popen, tuple[Run, float]] = {}
        try:
            while queue or running:
                while queue and len(running) < self.parallel:
                    run = queue.popleft()
                    running[self._launch(plan, run, sweep_dir, status)] = (run, time.time())
                for proc in [p for p in running if p.poll() is not None]:
                    run, start = running.pop(proc)
                    self._finish(run, proc.returncode, time.time() - start, sweep_dir, status, bar)
                time.sleep(self.poll_seconds if running else 0)
        except BaseException:
            for proc in running:
                proc.terminate()
            for proc in running:
                proc.wait()
            raise

    def _launch(
        self, plan: Plan, run: Run, sweep_dir: Path, status: SweepStatus
    ) -> subprocess.Popen:
        workdir = sweep_dir / run.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(plan, run, sweep_dir)
        attempt = status.runs[run.id]["attempts"] + 1
        status.set(run.id, state="running", attempts=attempt)
        with open(workdir / "log.txt", "a") as log:
            log.write(f"=== gnbench sweep: attempt {attempt} at {time.ctime()}\n")
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env()
            )

    def _finish(
        self,
        run: Run,
        returncode: int,
        seconds: float,
        sweep_dir: Path,
        status: SweepStatus,
        bar: tqdm,
    ) -> None:
        state = run_state(sweep_dir, run)
        error = None
        if state == "pending":
            state = "failed"
            error = f"exit code {returncode}" if returncode else "exit 0 without summary.json"
        status.set(run.id, state=state, returncode=returncode, error=error)
        if state in DONE_STATES:
            bar.update(1)
        counts = status.counts()
        bar.set_postfix(diverged=counts.get("diverged", 0), failed=counts.get("failed", 0))
        log = sweep_dir / run.workdir / "log.txt"
        tqdm.write(
            f"{run.id}: {state} in {seconds:.0f}s" + (f" ({error}; see {log})" if error else ""),
            file=sys.stderr,
        )
