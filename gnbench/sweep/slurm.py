"""The ``slurm`` executor: one SLURM array job per sweep, one array task per unfinished run.

``execute`` writes ``<sweep dir>/slurm/sweep.sbatch`` (rendered from
``launch/sweep_array.sbatch.template``) with ``sweep.run_ids`` and ``sweep.commands`` (line i is
array task i), submits it with ``sbatch --parsable``, follows the tasks with ``squeue`` (a
progress bar of runs done) until none is pending or running, then reads each task's state and
exit code from ``scontrol show job -o`` and records them in ``status.json``. Each run's output is
appended to ``<run dir>/log.txt``; the array's own logs are ``slurm/logs/<job>_<task>.out``.

- Rerun: the same command resubmits only runs without ``summary.json`` (they resume from their
  last checkpoint). If the previous job (``slurm/job.json``) is still queued or running, the
  executor follows it instead of submitting the same runs twice.
- Warm-up: a shared warm-up run is submitted first (``slurm/warmup.sbatch``) and followed; the
  array goes in only when it finished.
- Several tasks per run (``nodes`` x ``ntasks_per_node`` > 1): the task starts the trainer with
  ``srun``, and each trainer process starts ``jax.distributed`` from SLURM's variables.
- ``dry_run``: prints the script and the commands, submits and writes nothing.
- Stopping the follower (Ctrl-C) leaves the job running; ``scancel <job>`` stops it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from tqdm import tqdm

from gnbench.files import atomic_write_json, read_json
from gnbench.sweep.executors import Executor, child_env, register_executor
from gnbench.sweep.plan import Plan, Run
from gnbench.sweep.spec import REPO_ROOT
from gnbench.sweep.status import DONE_STATES, SweepStatus, run_state

TEMPLATE = REPO_ROOT / "launch" / "sweep_array.sbatch.template"
ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED")
_COMMAND_TIMEOUT = 60


def render(template: str, values: dict[str, object]) -> str:
    """Fills ``{{name}}`` placeholders (bash's own ``$`` and ``{}`` are left alone).

    Example:
      >>> render("#SBATCH --array=0-{{last}}  # ${X}", {"last": 3})
      '#SBATCH --array=0-3  # ${X}'

    Raises:
      KeyError: a placeholder without a value, or a value without a placeholder.
    """
    names = set(re.findall(r"\{\{(\w+)\}\}", template))
    if names != set(values):
        raise KeyError(f"template placeholders {sorted(names)} != values {sorted(values)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), template)


def _slurm(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=_COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise RuntimeError(f"{args[0]} not found: is this a SLURM login node?") from None


def task_states(job_id: str) -> dict[int, tuple[str, str]]:
    """Array task index -> (JobState, ExitCode) from ``scontrol show job -o`` (known for
    ``MinJobAge`` seconds after the job ends; empty afterwards).

    Example:
      >>> task_states("12345")   # doctest: +SKIP
      {0: ('COMPLETED', '0:0'), 1: ('CANCELLED', '0:15')}
    """
    proc = _slurm(["scontrol", "show", "job", "-o", job_id])
    out = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        for task in array_indices(fields.get("ArrayTaskId", "")):
            out[task] = (fields.get("JobState", "?"), fields.get("ExitCode", "?"))
    return out


def array_indices(text: str) -> list[int]:
    """The task indices of an ``ArrayTaskId`` field (tasks never started share one record).

    Example:
      >>> array_indices("4-6%2"), array_indices("0,3"), array_indices("7")
      ([4, 5, 6], [0, 3], [7])
    """
    out = []
    for part in text.split("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            out += range(int(first), int(last or first) + 1)
    return out


def active_states(job_id: str) -> list[str] | None:
    """States of the job's tasks still queued or running (``[]`` when none), or ``None`` when
    ``squeue`` could not answer."""
    proc = _slurm(["squeue", "-h", "-j", job_id, "-o", "%T", "--array"])
    if proc.returncode != 0:
        return [] if "Invalid job id" in proc.stderr else None
    return [s for s in proc.stdout.split() if s in ACTIVE_STATES]


@register_executor
class SlurmExecutor(Executor):
    """Runs a sweep as SLURM array jobs (see the module docstring).

    Args:
      trainer_cmd: the command that trains one run (default ``python -m gnbench.cli train``).
      parallel: at most this many array tasks at once (``--array=0-N%parallel``); ``None``: no
        limit beyond the cluster's.
      partition: ``--partition`` (``None``: the cluster's default).
      time_limit: ``--time`` limit of one run, e.g. ``"04:00:00"`` (``None``: the partition's).
      cpus_per_task: ``--cpus-per-task``; mem: ``--mem`` (e.g. ``"32G"``).
      nodes, ntasks_per_node: the allocation of one run; more than one task in all starts the
        trainer with ``srun`` (one process per task, ``jax.distributed`` from SLURM).
      sbatch_args: extra ``#SBATCH`` options, e.g. ``["--gpus-per-node=8", "--account=lm"]``.
      dry_run: print the script instead of submitting it.
      poll_seconds: how often ``squeue`` is asked.

    Example:
      >>> ex = SlurmExecutor(partition="gpu", nodes=2, ntasks_per_node=8, dry_run=True)
      >>> ex.launcher().split()[0]
      'srun'
    """

    name = "slurm"
    wait_for_scontrol: ClassVar[float] = 10.0

    def __init__(
        self,
        trainer_cmd: Sequence[str] | None = None,
        parallel: int | None = None,
        *,
        partition: str | None = None,
        time_limit: str | None = None,
        cpus_per_task: int | None = None,
        mem: str | None = None,
        nodes: int = 1,
        ntasks_per_node: int = 1,
        sbatch_args: Sequence[str] = (),
        dry_run: bool = False,
        poll_seconds: float = 5.0,
    ):
        super().__init__(trainer_cmd, parallel)
        if nodes < 1 or ntasks_per_node < 1:
            raise ValueError(f"nodes={nodes} and ntasks_per_node={ntasks_per_node} must be >= 1")
        self.max_running = parallel
        self.partition, self.time_limit, self.mem = partition, time_limit, mem
        self.cpus_per_task, self.nodes, self.ntasks_per_node = cpus_per_task, nodes, ntasks_per_node
        self.sbatch_args, self.dry_run = list(sbatch_args), dry_run
        self.poll_seconds = poll_seconds

    def launcher(self) -> str:
        """``"srun ... "`` when a run spans several tasks, else ``""`` (the task runs it itself)."""
        if self.nodes * self.ntasks_per_node == 1:
            return ""
        # srun does not inherit --cpus-per-task from the allocation (SLURM >= 22.05).
        cpus = "${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK}"
        return f"srun --kill-on-bad-exit=1 {cpus} "

    def script(self, plan: Plan, runs: list[Run], sweep_dir: Path, tag: str) -> str:
        """The sbatch script running ``runs`` as array tasks (files named ``slurm/<tag>.*``)."""
        slurm_dir = sweep_dir / "slurm"
        resources = [f"--partition={self.partition}"] if self.partition else []
        resources += [f"--time={self.time_limit}"] if self.time_limit else []
        resources += [f"--cpus-per-task={self.cpus_per_task}"] if self.cpus_per_task else []
        resources += [f"--mem={self.mem}"] if self.mem else []
        resources += self.sbatch_args
        throttle = f"%{self.max_running}" if self.max_running else ""
        return render(
            TEMPLATE.read_text(),
            dict(
                sweep_name=plan.name,
                count=len(runs),
                job_name=f"gnbench-{plan.name}-{tag}",
                last_index=len(runs) - 1,
                throttle=throttle,
                slurm_dir=slurm_dir,
                chdir=Path.cwd(),
                nodes=self.nodes,
                ntasks_per_node=self.ntasks_per_node,
                resource_lines="\n".join(f"#SBATCH {r}" for r in resources),
                run_ids_file=shlex.quote(str(slurm_dir / f"{tag}.run_ids")),
                commands_file=shlex.quote(str(slurm_dir / f"{tag}.commands")),
                runs_dir=shlex.quote(str(sweep_dir / "runs")),
                launcher=self.launcher(),
            ),
        )

    def execute(self, plan: Plan, sweep_dir: Path) -> dict[str, str]:
        sweep_dir = Path(sweep_dir).resolve()
        status = SweepStatus.load(sweep_dir, plan)
        if self.dry_run:
            return self._show(plan, sweep_dir, status)
        status.save()
        self._follow_previous(plan, sweep_dir, status)
        if plan.warmup is not None and status.runs[plan.warmup.id]["state"] not in DONE_STATES:
            self._submit_and_follow(plan, [plan.warmup], sweep_dir, status, "warmup")
            if status.runs[plan.warmup.id]["state"] != "finished":
                for run in plan.runs:
                    if status.runs[run.id]["state"] not in DONE_STATES:
                        status.set(run.id, state="failed", error="the warm-up run did not finish")
                return {rid: e["state"] for rid, e in status.runs.items()}
        todo = [
            r
            for r in plan.runs
            if status.runs[r.id]["state"] not in DONE_STATES and r.id not in plan.hold
        ]
        if todo:
            self._submit_and_follow(plan, todo, sweep_dir, status, "sweep")
        return {rid: e["state"] for rid, e in status.runs.items()}

    def _show(self, plan: Plan, sweep_dir: Path, status: SweepStatus) -> dict[str, str]:
        todo = [r for r in plan.all_runs() if status.runs[r.id]["state"] not in DONE_STATES]
        print(f"# sweep {plan.name}: {len(todo)} of {len(plan.all_runs())} runs to submit")
        groups = {"warmup": [r for r in todo if r is plan.warmup]}
        groups["sweep"] = [r for r in todo if r is not plan.warmup]
        for tag, runs in groups.items():
            if runs:
                print(f"\n# ---- {sweep_dir / 'slurm' / tag}.sbatch ----")
                print(self.script(plan, runs, sweep_dir, tag))
            for i, run in enumerate(runs):
                print(f"# task {i}: {run.id}\n#   {shlex.join(self.command(plan, run, sweep_dir))}")
        note = plan.stage2_note()
        if note:
            print(f"\n# {note}")
        return {rid: e["state"] for rid, e in status.runs.items()}

    def _follow_previous(self, plan: Plan, sweep_dir: Path, status: SweepStatus) -> None:
        """A job from an earlier invocation still queued or running is followed, not repeated."""
        job = read_json(sweep_dir / "slurm" / "job.json")
        if job and active_states(job["job_id"]):
            print(
                f"slurm job {job['job_id']} of this sweep is still active: following it",
                file=sys.stderr,
            )
            by_id = {r.id: r for r in plan.all_runs()}
            runs = [by_id[i] for i in job["run_ids"] if i in by_id]
            self._follow(job["job_id"], runs, sweep_dir)
            self._record(job["job_id"], runs, sweep_dir, status)

    def _submit_and_follow(
        self, plan: Plan, runs: list[Run], sweep_dir: Path, status: SweepStatus, tag: str
    ) -> None:
        slurm_dir = sweep_dir / "slurm"
        (slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
        for run in runs:
            (sweep_dir / run.workdir).mkdir(parents=True, exist_ok=True)
        (slurm_dir / f"{tag}.run_ids").write_text("".join(f"{r.id}\n" for r in runs))
        commands = [shlex.join(self.command(plan, r, sweep_dir)) for r in runs]
        (slurm_dir / f"{tag}.commands").write_text("".join(f"{c}\n" for c in commands))
        path = slurm_dir / f"{tag}.sbatch"
        path.write_text(self.script(plan, runs, sweep_dir, tag))
        proc = _slurm(["sbatch", "--parsable", str(path)], env=child_env())
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {path} failed: {proc.stderr.strip() or proc.stdout}")
        job_id = proc.stdout.strip().split(";")[0]
        atomic_write_json(
            slurm_dir / "job.json",
            dict(job_id=job_id, tag=tag, run_ids=[r.id for r in runs], submitted=time.time()),
        )
        for run in runs:
            attempts = status.runs[run.id]["attempts"] + 1
            status.runs[run.id].update(state="submitted", attempts=attempts, slurm_job=job_id)
        status.save()
        print(f"submitted slurm job {job_id}: {len(runs)} array tasks ({path})", file=sys.stderr)
        self._follow(job_id, runs, sweep_dir)
        self._record(job_id, runs, sweep_dir, status)

    def _follow(self, job_id: str, runs: list[Run], sweep_dir: Path) -> None:
        """Polls until no task of ``job_id`` is queued or running; shows runs done."""
        bar = tqdm(total=len(runs), desc=f"slurm {job_id}", unit="run", file=sys.stderr)
        failures = 0
        try:
            while True:
                states = active_states(job_id)
                done = sum(run_state(sweep_dir, r) in DONE_STATES for r in runs)
                bar.update(done - bar.n)
                if states is None:
                    failures += 1
                    if failures * self.poll_seconds > 600:
                        raise RuntimeError(f"squeue has not answered for 10 min (job {job_id})")
                else:
                    failures = 0
                    bar.set_postfix(
                        pending=states.count("PENDING"), running=states.count("RUNNING")
                    )
                    if not states:
                        break
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            print(
                f"\nstopped following; slurm job {job_id} keeps running (scancel {job_id} stops "
                "it). Rerun the same command to follow it again.",
                file=sys.stderr,
            )
            raise
        finally:
            bar.close()

    def _record(self, job_id: str, runs: list[Run], sweep_dir: Path, status: SweepStatus) -> None:
        """Sets each run's final state from its summary and its task's SLURM state."""
        tasks = task_states(job_id)
        deadline = time.time() + self.wait_for_scontrol
        while len(tasks) < len(runs) and time.time() < deadline:
            time.sleep(0.5)  # scontrol may lag squeue for a moment; it may also have forgotten.
            tasks = task_states(job_id)
        for i, run in enumerate(runs):
            state = run_state(sweep_dir, run)
            slurm_state, exit_code = tasks.get(i, ("UNKNOWN", "?"))
            returncode = int(exit_code.split(":")[0]) if exit_code[:1].isdigit() else None
            error = None
            if state not in DONE_STATES:
                state = "failed"
                error = (
                    f"slurm task {job_id}_{i} {slurm_state} (exit {exit_code}) without "
                    f"summary.json; see {sweep_dir / run.workdir / 'log.txt'}"
                )
                tqdm.write(f"{run.id}: failed: {error}", file=sys.stderr)
            status.runs[run.id].update(
                state=state, returncode=returncode, error=error, slurm_state=slurm_state
            )
        status.save()
