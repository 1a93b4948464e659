"""The plan of a sweep: every run, its stable id, its overrides and its command line.

A run's id is ``<method>-<identity[:10]>``, the identity being
:func:`gnbench.train.identity.config_hash` of the run's fully resolved config: the base
experiment as loaded now, with the run's overrides applied (method, grid point, scan value,
seed, sweep-wide overrides, target). It is the hash the trainer writes into the run's
``identity.json``. Keys that cannot change results (work folder, wandb names, progress bar: see
:data:`gnbench.train.identity.NON_RESULT_KEYS`) are left out, and the warm-up run's identity is
hashed in instead of its path. So the same run gets the same id, folder and checkpoint on every
machine and every rerun, and a changed base experiment (or gnbench version) makes new runs.

Run folders are ``<out>/<name>/runs/<run id>``; the plan is ``<out>/<name>/plan.json``.

Stages. :func:`make_plan` gives stage 1 (``stage: "tuning"``): every method at every scan value,
grid point and seed of ``seeds``. A sweep with ``headline_seeds`` or ``variants`` gets stage 2 from
:func:`gnbench.sweep.stage2.stage2_runs`, planned from the finished stage-1 results with the
report's own tuning code (:func:`gnbench.report.tuning.summarize` on the tuning seeds, then
:func:`gnbench.report.headline.headline_rows`):

- ``stage: "headline"``: each method's tuned setting at its best scan value, one run per seed of
  ``headline_seeds``. Planned once every stage-1 run of the method is done.
- ``stage: "variant"``: each variant on its grid at its reference's headline scan value, one run
  per seed of ``seeds + headline_seeds``. Planned once every stage-1 run of the reference is done.

Stage-2 ids are hashed exactly like stage-1 ones (the same overrides give the same id), so a rerun
finds them. ``plan.json`` also records ``seeds`` (tuning seeds), ``headline_seeds``, ``grids``
(``{method: {key: [values]}}``, variants included), ``grids_at`` (``{method: {scan value:
{key: [values]}}}``, where a method's grid depends on the scan value) and ``variants``
(``{variant: reference}``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from gnbench.files import atomic_write_json
from gnbench.sweep.spec import SweepSpec, check_overrides, flatten
from gnbench.train.identity import INIT_FROM, config_hash

# Keys set per run by the sweep itself; none enters the run id (train.init_from enters as the
# warm-up's identity).
PLUMBING_KEYS = (
    "train.workdir",
    "train.init_from",
    "wandb.group",
    "wandb.name",
    "wandb.grid_point",
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
      stage: ``tuning`` (stage 1), ``headline`` or ``variant`` (stage 2).
      config_hash: the run's identity (:func:`gnbench.train.identity.config_hash`); ``id``
        ends with its first 10 hex digits.
    """

    id: str
    method: str
    overrides: dict[str, Any]
    setting: dict[str, Any]
    seed: int | None
    scan_value: Any = None
    init_from: str | None = None
    stage: str = "tuning"
    config_hash: str = ""

    @property
    def workdir(self) -> str:
        """Run folder relative to the sweep folder."""
        return f"runs/{self.id}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """All runs of a sweep; ``warmup`` (if any) must finish before ``runs`` start.

    ``seeds`` are the tuning seeds, ``headline_seeds`` the stage-2 ones, ``grids`` each method's
    (and variant's) grid, ``grids_at`` its grid at the scan values where it differs (keys are
    the scan values as strings) and ``variants`` maps each variant to its reference method.
    ``hold``: ids executors must not launch this time (runs that failed earlier in the same
    command; not written to ``plan.json``).
    """

    name: str
    base: str
    target_loss: float | None
    baseline: str
    scan_key: str | None
    warmup: Run | None
    runs: list[Run]
    seeds: list[int] = dataclasses.field(default_factory=list)
    headline_seeds: list[int] = dataclasses.field(default_factory=list)
    grids: dict[str, dict[str, list[Any]]] = dataclasses.field(default_factory=dict)
    grids_at: dict[str, dict[str, dict[str, list[Any]]]] = dataclasses.field(default_factory=dict)
    full_gn: str = "gauss_newton"
    variants: dict[str, str] = dataclasses.field(default_factory=dict)
    hold: frozenset[str] = frozenset()

    @property
    def two_stage(self) -> bool:
        """Whether stage 2 (headline seeds, variants) follows stage 1."""
        return bool(self.headline_seeds or self.variants)

    def stage2_note(self) -> str | None:
        """One line saying what stage 2 will add, or ``None`` without a stage 2."""
        if not self.two_stage:
            return None
        parts = []
        if self.headline_seeds:
            parts.append(
                f"headline seeds {self.headline_seeds} at each method's tuned setting"
                + (f" at its best {self.scan_key}" if self.scan_key else "")
            )
        if self.variants:
            parts.append(
                "variants "
                + ", ".join(f"{v} (of {of})" for v, of in self.variants.items())
                + f" tuned at their reference's headline point with seeds "
                f"{self.seeds + self.headline_seeds}"
            )
        planned = sum(r.stage != "tuning" for r in self.runs)
        return f"stage 2 ({'; '.join(parts)}) is planned from stage-1 results as they finish" + (
            f"; {planned} stage-2 runs planned so far" if planned else ""
        )

    def all_runs(self) -> list[Run]:
        """The warm-up (if any) followed by the planned runs."""
        return ([self.warmup] if self.warmup else []) + list(self.runs)


def run_id(prefix: str, digest: str) -> str:
    """``<prefix>-<first 10 hex digits of digest>``.

    Example:
      >>> run_id("adamw", "9ac5acb94b0f")
      'adamw-9ac5acb94b'
    """
    return f"{prefix}-{digest[:10]}"


def resolved_hash(
    spec: SweepSpec, overrides: dict[str, Any], init_from_hash: str | None = None
) -> str:
    """The identity of the run of ``spec`` with ``overrides``: the base config (as loaded by
    :func:`gnbench.sweep.spec.parse_sweep`) with the overrides applied, hashed like the trainer
    hashes it; ``init_from_hash`` is the identity of the run it starts from.

    A spec without a loaded base config hashes the overrides alone.
    """
    if spec.base_config is not None:
        config = flatten(check_overrides(spec.base_config, overrides, "run"))
    else:
        config = dict(overrides)
    if init_from_hash:
        config[INIT_FROM] = "(the warm-up run)"  # Replaced by init_from_hash when hashed.
    return config_hash(config, init_from_id=init_from_hash)


def _shared_overrides(spec: SweepSpec) -> dict[str, Any]:
    common = dict(spec.overrides)
    if spec.target_loss is not None:
        common["train.target_loss"] = spec.target_loss
    return common


def _common(spec: SweepSpec) -> tuple[dict[str, Any], Run | None]:
    """The overrides every run shares and the shared warm-up run (or ``None``)."""
    common = _shared_overrides(spec)
    warmup = None
    if spec.warmup_steps:
        w_over = {
            **common,
            "optimizer.name": "adamw",
            "train.steps": spec.warmup_steps,
            **spec.warmup_overrides,
        }
        digest = resolved_hash(spec, w_over)
        warmup = Run(
            id=run_id("warmup", digest),
            method="warmup",
            overrides=w_over,
            setting={},
            seed=w_over.get("seed"),
            config_hash=digest,
        )
    return common, warmup


def warmup_run(spec: SweepSpec) -> Run | None:
    """The shared warm-up run of ``spec``, or ``None``."""
    return _common(spec)[1]


def run_overrides(
    spec: SweepSpec, method: str, setting: dict[str, Any], seed: int, scan_value: Any = None
) -> dict[str, Any]:
    """Every override of the base config that one run of ``method`` uses (plumbing excluded):
    the sweep-wide ones, the method's, the grid point, the seed and the scan value's."""
    common = _shared_overrides(spec)
    m = spec.methods.get(method) or spec.variants[method]
    over = {**common, **m.overrides, **setting, "seed": seed}
    if spec.scan_key is not None:
        scan_values, scan_with = spec.scan_of(method)
        over[spec.scan_key] = scan_value
        i = scan_values.index(scan_value)
        over.update({key: values[i] for key, values in scan_with.items()})
    return over


def make_run(
    spec: SweepSpec,
    method: str,
    setting: dict[str, Any],
    seed: int,
    scan_value: Any = None,
    stage: str = "tuning",
) -> Run:
    """One run of ``method`` (a method or a variant of ``spec``) with its id.

    The id hashes the run's resolved config (the base with the sweep-wide overrides, the
    method's, the grid point, the seed, the scan value, and the warm-up's identity), never its
    stage: the same run always gets the same id.

    Example:
      >>> from gnbench.sweep.spec import MethodSpec
      >>> spec = SweepSpec("s", Path("b.py"), {}, {"adamw": MethodSpec({}, {})}, [0])
      >>> make_run(spec, "adamw", {}, 1).id == make_run(spec, "adamw", {}, 1, stage="headline").id
      True
    """
    _, warmup = _common(spec)
    over = run_overrides(spec, method, setting, seed, scan_value)
    digest = resolved_hash(spec, over, warmup.config_hash if warmup else None)
    return Run(
        id=run_id(method, digest),
        method=method,
        overrides=over,
        setting=dict(setting),
        seed=seed,
        scan_value=scan_value,
        init_from=warmup.id if warmup else None,
        stage=stage,
        config_hash=digest,
    )


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of a grid, in the order listed (one empty point for an empty grid).

    Example:
      >>> grid_points({"a": [1, 2], "b": [0]})
      [{'a': 1, 'b': 0}, {'a': 2, 'b': 0}]
    """
    keys = list(grid)
    return [dict(zip(keys, p, strict=True)) for p in itertools.product(*(grid[k] for k in keys))]


def _check_unique(runs: list[Run]) -> None:
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"the sweep plans the same run twice: {dup} (duplicate grid values?)")


def make_plan(spec: SweepSpec) -> Plan:
    """Stage 1 of a sweep: scan values x methods x grid points x seeds (all ``stage="tuning"``).

    Args:
      spec: a checked sweep (see :func:`gnbench.sweep.spec.load_sweep_file`).

    Returns:
      The :class:`Plan`, runs in a fixed order. Stage 2 (if the sweep has one) comes later from
      :func:`gnbench.sweep.stage2.stage2_runs` and :func:`~gnbench.sweep.stage2.with_stage2`.
    """
    _, warmup = _common(spec)
    runs = [
        make_run(spec, method, setting, seed, scan_value)
        for scan_value in spec.all_scan_values() or [None]
        for method, m in spec.methods.items()
        if scan_value is None or scan_value in spec.scan_of(method)[0]
        for setting in grid_points(m.grid_for(scan_value))
        for seed in spec.seeds
    ]
    _check_unique(runs)
    return Plan(
        name=spec.name,
        base=str(spec.base),
        target_loss=spec.target_loss,
        baseline=spec.baseline,
        full_gn=spec.full_gn,
        scan_key=spec.scan_key,
        warmup=warmup,
        runs=runs,
        seeds=list(spec.seeds),
        headline_seeds=list(spec.headline_seeds),
        grids=spec.grids(),
        grids_at=spec.grids_at(),
        variants={v: vs.of for v, vs in spec.variants.items()},
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


def grid_point(plan: Plan, run: Run) -> dict[str, Any]:
    """The values the sweep chose for ``run``: its grid point and, with a scan, its scan value
    (the seed is not a grid value; the wandb config holds it anyway).

    Example:
      >>> run = Run("adamw-0", "adamw", {}, {"optimizer.learning_rate": 0.01}, 0, scan_value=8)
      >>> plan = Plan("s", "b.py", None, "adamw", "data.micro_batches", None, [run])
      >>> grid_point(plan, run)
      {'optimizer.learning_rate': 0.01, 'data.micro_batches': 8}
    """
    point = dict(run.setting)
    if plan.scan_key is not None and run.scan_value is not None:
        point[plan.scan_key] = run.scan_value
    return point


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
    over["wandb.grid_point"] = json.dumps(grid_point(plan, run), sort_keys=True)
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
        full_gn=plan.full_gn,
        scan_key=plan.scan_key,
        warmup=entry(plan.warmup) if plan.warmup else None,
        runs=[entry(r) for r in plan.runs],
        seeds=list(plan.seeds),
        headline_seeds=list(plan.headline_seeds),
        grids=plan.grids,
        grids_at=plan.grids_at,
        variants=plan.variants,
    )


def write_plan(plan: Plan, sweep_dir: str | Path) -> Path:
    """Writes ``plan.json`` into ``sweep_dir`` atomically and returns its path."""
    path = Path(sweep_dir) / "plan.json"
    atomic_write_json(path, plan_to_json(plan))
    return path
