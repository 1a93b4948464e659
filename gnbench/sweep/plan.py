"""The plan of a sweep: every run, its stable id, its overrides and its command line.

A run's id is ``<method>-<sha256(sorted JSON of its resolved overrides)[:10]>``. The overrides
hashed are the run's own choices (method, grid point, scan value, seed, sweep-wide overrides,
target); plumbing that depends on where the sweep is written (work folder, warm-up path, wandb
names, progress bar) is left out, and the warm-up run's id is hashed in instead of its path. So the
same run gets the same id, folder, checkpoint and wandb name on every machine and every rerun.

Run folders are ``<out>/<name>/runs/<run id>``; the plan is ``<out>/<name>/plan.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from gnbench.report.io import atomic_write_json
from gnbench.sweep.spec import SweepSpec

# Keys set per run by the sweep itself; they never enter the run id.
PLUMBING_KEYS = (
    "train.workdir",
    "train.init_from",
    "wandb.group",
    "wandb.name",
    "train.progress",
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One planned training run.

    Attributes:
      id: stable id, ``<method>-<hash>``; names the folder and the wandb run.
      method: method name (``warmup`` for the shared warm-up run).
      overrides: every override of the base config this run uses (plumbing excluded).
      setting: the grid point (the tuned hyperparameters), without seed and scan value.
      seed: the seed.
      scan_value: the value of the scanned key, or ``None`` without a scan.
      init_from: id of the run whose final state initializes this one, or ``None``.
    """

    id: str
    method: str
    overrides: dict[str, Any]
    setting: dict[str, Any]
    seed: int | None
    scan_value: Any = None
    init_from: str | None = None

    @property
    def workdir(self) -> str:
        """Run folder relative to the sweep folder."""
        return f"runs/{self.id}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """All runs of a sweep; ``warmup`` (if any) must finish before ``runs`` start."""

    name: str
    base: str
    target_loss: float | None
    baseline: str
    scan_key: str | None
    warmup: Run | None
    runs: list[Run]

    def all_runs(self) -> list[Run]:
        """The warm-up (if any) followed by the planned runs."""
        return ([self.warmup] if self.warmup else []) + list(self.runs)


def run_id(prefix: str, overrides: dict[str, Any]) -> str:
    """``<prefix>-<first 10 hex digits of sha256 of the sorted JSON of overrides>``.

    Example:
      >>> run_id("adamw", {"seed": 0, "optimizer.learning_rate": 0.003})
      'adamw-9ac5acb94b'
    """
    payload = json.dumps(overrides, sort_keys=True, separators=(",", ":"))
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def make_plan(spec: SweepSpec) -> Plan:
    """Expands a sweep into runs: scan values x methods x grid points x seeds.

    Args:
      spec: a checked sweep (see :func:`gnbench.sweep.spec.load_sweep_file`).

    Returns:
      The :class:`Plan`, runs in a fixed order.
    """
    common = dict(spec.overrides)
    if spec.target_loss is not None:
        common["train.target_loss"] = spec.target_loss
    warmup = None
    if spec.warmup_steps:
        w_over = {
            **common,
            "optimizer.name": "adamw",
            "train.steps": spec.warmup_steps,
            **spec.warmup_overrides,
        }
        warmup = Run(
            id=run_id("warmup", w_over),
            method="warmup",
            overrides=w_over,
            setting={},
            seed=w_over.get("seed"),
        )
    runs = []
    for scan_value in spec.scan_values or [None]:
        for method, m in spec.methods.items():
            keys = list(m.grid)
            for point in itertools.product(*(m.grid[k] for k in keys)):
                setting = dict(zip(keys, point, strict=True))
                for seed in spec.seeds:
                    over = {**common, **m.overrides, **setting, "seed": seed}
                    if spec.scan_key is not None:
                        over[spec.scan_key] = scan_value
                    hashed = dict(over, **({"_warmup": warmup.id} if warmup else {}))
                    runs.append(
                        Run(
                            id=run_id(method, hashed),
                            method=method,
                            overrides=over,
                            setting=setting,
                            seed=seed,
                            scan_value=scan_value,
                            init_from=warmup.id if warmup else None,
                        )
                    )
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"the sweep plans the same run twice: {dup} (duplicate grid values?)")
    return Plan(
        name=spec.name,
        base=str(spec.base),
        target_loss=spec.target_loss,
        baseline=spec.baseline,
        scan_key=spec.scan_key,
        warmup=warmup,
        runs=runs,
    )


def format_value(value: Any) -> str:
    """A config value as ml_collections' flag parser reads it back.

    Example:
      >>> [format_value(v) for v in (True, 3e-3, 8, "adamw", None)]
      ['true', '0.003', '8', 'adamw', 'None']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_args(plan: Plan, run: Run, sweep_dir: str | Path) -> list[str]:
    """The trainer arguments of ``run`` (everything after ``gnbench train``).

    Args:
      plan: the sweep plan.
      run: one of its runs.
      sweep_dir: the sweep folder (absolute paths are derived from it).

    Returns:
      ``["--config", base, "--config.<key>=<value>", ...]``.
    """
    sweep_dir = Path(sweep_dir).resolve()
    over = dict(run.overrides)
    over["train.workdir"] = str(sweep_dir / run.workdir)
    if run.init_from:
        over["train.init_from"] = str(sweep_dir / "runs" / run.init_from)
    over["wandb.group"] = plan.name
    over["wandb.name"] = run.id
    over["train.progress"] = False  # The run's log is a file: no progress bar in it.
    return ["--config", plan.base] + [f"--config.{k}={format_value(v)}" for k, v in over.items()]


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The JSON form written to ``plan.json`` (read back by :mod:`gnbench.report`)."""

    def entry(run: Run) -> dict[str, Any]:
        return dict(dataclasses.asdict(run), workdir=run.workdir)

    return dict(
        name=plan.name,
        base=plan.base,
        target_loss=plan.target_loss,
        baseline=plan.baseline,
        scan_key=plan.scan_key,
        warmup=entry(plan.warmup) if plan.warmup else None,
        runs=[entry(r) for r in plan.runs],
    )


def write_plan(plan: Plan, sweep_dir: str | Path) -> Path:
    """Writes ``plan.json`` into ``sweep_dir`` atomically and returns its path."""
    path = Path(sweep_dir) / "plan.json"
    atomic_write_json(path, plan_to_json(plan))
    return path
