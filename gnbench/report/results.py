"""What each run achieved: cost to the target in five units, final loss, divergence.

The rule, the same for every method and seed: the crossing is the first evaluation record with
``val_loss <= target``; its iteration, tokens, compute (forward+backward equivalents of one
micro-batch) and wall-clock are the run's cost to the target. A run that never crosses costs
``+inf``. A diverged run (non-finite loss; the trainer stops it) never reaches the target, even if
an evaluation before the divergence crossed it, and its final loss is ``+inf``. The final loss is
the last evaluation of the run (the budget end for a finished run).

Units are record fields: ``step`` (iterations), ``tokens``, ``flops`` (cumulative FLOPs the
trainer measured from XLA's cost analysis), ``grad_equivalents`` (compute in forward+backward
passes over one micro-batch) and ``wall_clock``. A unit a run's records lack (``flops`` from an
older trainer) costs ``nan``: unknown, shown as "—", never a crash.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gnbench.report.io import RunFiles, SweepFiles

# Cost units: record field -> label.
UNITS = {
    "step": "iterations",
    "tokens": "tokens",
    "flops": "FLOPs",
    "grad_equivalents": "compute (grad-eq.)",
    "wall_clock": "wall-clock (s)",
}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run's outcome.

    Attributes:
      id, method, setting, seed, scan_value: from the plan.
      status: ``finished``, ``diverged`` or ``incomplete`` (no summary yet).
      to_target: unit -> cost at the first crossing (``inf`` if never reached).
      final_val_loss: last evaluation's loss (``inf`` if diverged, ``nan`` with no evaluation).
      evals: the evaluation records, by step.
      tokens_per_iteration: tokens one iteration feeds the optimizer (batch size), or ``None``.
      stage: the plan's stage of the run (``tuning``, ``headline`` or ``variant``).
      crossing_step: the iteration at which the validation loss crossed the target, linearly
        interpolated between the last evaluation above it and the first at or below it
        (``inf`` if never reached); the tuning rule's tie-break (:func:`interpolated_crossing`).
    """

    id: str
    method: str
    setting: dict[str, Any]
    seed: int | None
    scan_value: Any
    status: str
    to_target: dict[str, float]
    final_val_loss: float
    evals: list[dict[str, Any]]
    tokens_per_iteration: float | None
    stage: str = "tuning"
    crossing_step: float = math.inf

    @property
    def reached(self) -> bool:
        """Whether the run reached the target."""
        return math.isfinite(self.to_target["step"])

    @property
    def done(self) -> bool:
        """Whether the run has a summary (finished or diverged)."""
        return self.status in ("finished", "diverged")


def interpolated_crossing(evals: list[dict[str, Any]], target: float) -> float:
    """The fractional iteration at which the loss crossed ``target``, ``inf`` if it never did.

    Linear in the loss between the last evaluation above the target and the first at or below
    it. Two runs that first reach the target at the same evaluation are told apart by how far
    past it they got: the one whose loss fell through the target earlier wins.

    Example:
      >>> interpolated_crossing([{"step": 0, "val_loss": 5.0}, {"step": 4, "val_loss": 3.0},
      ...                        {"step": 5, "val_loss": 2.0}], 2.5)
      4.5
    """
    crossing = first_crossing(evals, target)
    if crossing is None:
        return math.inf
    before = [r for r in evals if r["step"] < crossing["step"] and r.get("val_loss") is not None]
    if not before:
        return float(crossing["step"])
    prev = max(before, key=lambda r: r["step"])
    drop = prev["val_loss"] - crossing["val_loss"]
    fraction = (prev["val_loss"] - target) / drop if drop > 0 else 1.0
    return prev["step"] + fraction * (crossing["step"] - prev["step"])


def first_crossing(evals: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation record (by step) with ``val_loss <= target``, else ``None``.

    Example:
      >>> first_crossing([{"step": 0, "val_loss": 5.0}, {"step": 2, "val_loss": 2.5},
      ...                 {"step": 4, "val_loss": 2.4}], 2.6)["step"]
      2
    """
    for record in sorted(evals, key=lambda r: r["step"]):
        loss = record.get("val_loss")
        if loss is not None and math.isfinite(loss) and loss <= target:
            return record
    return None


def cost_at(crossing: dict[str, Any] | None, evals: list[dict[str, Any]], unit: str) -> float:
    """The cost in ``unit`` at ``crossing``: ``inf`` if never reached, ``nan`` if unknown.

    Unknown: the run has evaluation records but none carries ``unit``, or the crossing lacks it.
    A run without any evaluation never reached the target: ``inf`` in every unit.

    Example:
      >>> evals = [{"step": 2, "tokens": 20, "val_loss": 1.0}]
      >>> cost_at(evals[0], evals, "tokens"), cost_at(evals[0], evals, "flops")
      (20.0, nan)
      >>> cost_at(None, evals, "tokens"), cost_at(None, evals, "flops")
      (inf, nan)
    """
    if crossing is None:
        has_unit = any(e.get(unit) is not None for e in evals)
        return math.inf if has_unit or not evals else math.nan
    value = crossing.get(unit)
    return math.nan if value is None else float(value)


def config_value(tree: dict[str, Any] | None, path: str) -> Any:
    """The value at dotted ``path`` of a (nested or flat) config dict, else ``None``.

    Example:
      >>> config_value({"train": {"steps": 40}}, "train.steps")
      40
    """
    if isinstance(tree, dict) and path in tree:  # A flat config with dotted keys.
        return tree[path]
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def tokens_per_iteration(run: RunFiles) -> float | None:
    """``micro_batch * seq_len * micro_batches`` from the run's config (the optimizer's batch),
    else tokens per step of its last training record."""
    sizes = [
        config_value(run.config, f"data.{k}") for k in ("micro_batch", "seq_len", "micro_batches")
    ]
    if all(isinstance(s, int) for s in sizes):
        return float(sizes[0] * sizes[1] * sizes[2])
    train = [r for r in run.records if r.get("kind") == "train" and r.get("step")]
    return train[-1]["tokens"] / train[-1]["step"] if train else None


def sweep_target(sweep: SweepFiles) -> float:
    """The sweep's target loss: the plan's, else the runs' ``train.target_loss``.

    Raises:
      ValueError: no target anywhere, or runs that disagree.
    """
    if sweep.plan.get("target_loss") is not None:
        return float(sweep.plan["target_loss"])
    targets = {config_value(r.config, "train.target_loss") for r in sweep.runs if r.config}
    targets |= {r.summary.get("target_loss") for r in sweep.runs if r.summary}
    targets.discard(None)
    if len(targets) != 1:
        raise ValueError(f"{sweep.folder}: cannot tell the target loss (found {targets})")
    return float(targets.pop())


def run_result(run: RunFiles, target: float) -> RunResult:
    """Scores one run against ``target`` (see the module docstring for the rule).

    Args:
      run: the run's plan entry and files.
      target: validation loss to reach, nats/token.

    Returns:
      Its :class:`RunResult`.
    """
    evals = sorted((r for r in run.records if r.get("kind") == "eval"), key=lambda r: r["step"])
    status = "incomplete" if run.summary is None else str(run.summary.get("status", "finished"))
    crossing = None if status == "diverged" else first_crossing(evals, target)
    to_target = {u: cost_at(crossing, evals, u) for u in UNITS}
    if status == "diverged":
        final = math.inf
    else:
        final = float(evals[-1]["val_loss"]) if evals else math.nan
    entry = run.entry
    return RunResult(
        id=entry["id"],
        method=entry["method"],
        setting=dict(entry.get("setting", {})),
        seed=entry.get("seed"),
        scan_value=entry.get("scan_value"),
        status=status,
        to_target=to_target,
        final_val_loss=final,
        evals=evals,
        tokens_per_iteration=tokens_per_iteration(run),
        stage=str(entry.get("stage") or "tuning"),
        crossing_step=math.inf if crossing is None else interpolated_crossing(evals, target),
    )


def sweep_results(sweep: SweepFiles) -> tuple[float, list[RunResult]]:
    """``(target, results of every planned run)`` of a sweep folder."""
    target = sweep_target(sweep)
    return target, [run_result(r, target) for r in sweep.runs]
