"""What each run achieved: cost to the target in five units, final loss, failures.

The rule, the same for every method and seed: the run crosses the target between the last
evaluation above it and the first at or below it; its cost in every unit is interpolated linearly
in the loss between those two records (the *fractional crossing*: a run whose loss falls through
the target early in an evaluation interval costs less than one that only just gets there), or is
the first record's cost when no evaluation precedes it. A run that never crosses costs ``+inf``.

Failures count as never reaching the target, whatever an evaluation before the failure showed:
- ``diverged``: a non-finite loss (the trainer stops the run); its final loss is ``+inf``;
- ``collapsed``: a run that ends worse than it started (last evaluation above the first), or at
  ``ln V`` (uniform predictions over a vocabulary of ``V``, to :data:`COLLAPSE_ATOL`): a finite
  loss that is no finished run.

The final loss is the last evaluation of the run (the budget end for a finished run).

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

# A final loss this close to ln V (nats/token) is a collapse to uniform predictions.
COLLAPSE_ATOL = 1e-3
FAILED = ("diverged", "collapsed")

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
      status: ``finished``, ``diverged``, ``collapsed`` or ``incomplete`` (no summary yet).
      to_target: unit -> cost at the fractional crossing (``inf`` if never reached).
      final_val_loss: last evaluation's loss (``inf`` if diverged, ``nan`` with no evaluation).
      evals: the evaluation records, by step.
      tokens_per_iteration: tokens one iteration reads, line search included (the batch axis of
        every scan), or ``None`` (:func:`tokens_per_iteration`).
      stage: the plan's stage of the run (``tuning``, ``headline`` or ``variant``).
      crossing_step: the fractional iteration of the crossing, ``to_target["step"]``.
      floor_share: the fraction of iterations whose line search took its smallest step size
        (training records' ``alpha`` at ``alpha_min``), ``None`` for methods without one
        (:func:`line_search_floor_share`).
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
    floor_share: float | None = None

    @property
    def reached(self) -> bool:
        """Whether the run reached the target."""
        return math.isfinite(self.to_target["step"])

    @property
    def done(self) -> bool:
        """Whether the run has a summary (finished, diverged or collapsed)."""
        return self.status in ("finished", *FAILED)

    @property
    def failed(self) -> bool:
        """Whether the run diverged or collapsed."""
        return self.status in FAILED


def crossing_fraction(
    evals: list[dict[str, Any]], target: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float]:
    """``(previous, crossing, fraction)``: the fractional crossing of ``target``.

    ``crossing`` is the first evaluation at or below the target (``None``: never reached),
    ``previous`` the last evaluation before it (``None``: none), and ``fraction`` in ``(0, 1]``
    how far between them the loss, linear between the two, fell through the target.

    Example:
      >>> prev, cross, f = crossing_fraction([{"step": 0, "val_loss": 5.0},
      ...     {"step": 4, "val_loss": 3.0}, {"step": 5, "val_loss": 2.0}], 2.5)
      >>> prev["step"], cross["step"], f
      (4, 5, 0.5)
    """
    crossing = first_crossing(evals, target)
    if crossing is None:
        return None, None, 1.0
    before = [r for r in evals if r["step"] < crossing["step"] and r.get("val_loss") is not None]
    if not before:
        return None, crossing, 1.0
    prev = max(before, key=lambda r: r["step"])
    drop = prev["val_loss"] - crossing["val_loss"]
    return prev, crossing, (prev["val_loss"] - target) / drop if drop > 0 else 1.0


def interpolated_crossing(evals: list[dict[str, Any]], target: float) -> float:
    """The fractional iteration at which the loss crossed ``target``, ``inf`` if it never did.

    Example:
      >>> interpolated_crossing([{"step": 0, "val_loss": 5.0}, {"step": 4, "val_loss": 3.0},
      ...                        {"step": 5, "val_loss": 2.0}], 2.5)
      4.5
    """
    return interpolated_cost(evals, target, "step")


def interpolated_cost(evals: list[dict[str, Any]], target: float, unit: str) -> float:
    """The cost in ``unit`` at the fractional crossing: ``inf`` if never reached, ``nan`` if the
    records do not carry ``unit`` (see :func:`cost_at`).

    Example (tokens grow by 100 per iteration; the loss falls through 2.5 halfway in 4 -> 5):
      >>> evals = [{"step": s, "tokens": 100 * s, "val_loss": v}
      ...          for s, v in [(0, 5.0), (4, 3.0), (5, 2.0)]]
      >>> interpolated_cost(evals, 2.5, "tokens")
      450.0
    """
    prev, crossing, fraction = crossing_fraction(evals, target)
    at = cost_at(crossing, evals, unit)
    if prev is None or not math.isfinite(at):
        return at
    before = prev.get(unit)
    return math.nan if before is None else float(before) + fraction * (at - float(before))


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
    """Tokens one iteration *reads*: the gradient's or inner solve's micro-batches plus the line
    search's fresh ones (the summary's ``cost_per_iteration``), else tokens per step of the last
    training record (the trainer counts both), else ``micro_batch * seq_len * micro_batches``
    from the config (older runs without records: the inner solve only)."""
    cost = (run.summary or {}).get("cost_per_iteration") or {}
    if isinstance(cost.get("inner_tokens"), int):
        return float(cost["inner_tokens"] + int(cost.get("line_search_tokens") or 0))
    train = [r for r in run.records if r.get("kind") == "train" and r.get("step")]
    if train and train[-1].get("tokens") is not None:
        return train[-1]["tokens"] / train[-1]["step"]
    sizes = [
        config_value(run.config, f"data.{k}") for k in ("micro_batch", "seq_len", "micro_batches")
    ]
    if all(isinstance(s, int) for s in sizes):
        return float(sizes[0] * sizes[1] * sizes[2])
    return None


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
    if status == "finished" and collapsed(evals, config_value(run.config, "data.vocab_size")):
        status = "collapsed"
    reached = status not in FAILED
    to_target = {u: interpolated_cost(evals, target, u) if reached else math.inf for u in UNITS}
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
        crossing_step=to_target["step"],
        floor_share=line_search_floor_share(run.records),
    )


def line_search_floor_share(records: list[dict[str, Any]]) -> float | None:
    """The fraction of training records whose ``alpha`` is at the run's ``alpha_min`` (the line
    search's smallest step size), ``None`` when no record carries both or the search has one
    step size only.

    Example:
      >>> recs = [{"kind": "train", "alpha": a, "alpha_min": 0.25} for a in (1.0, 0.25, 0.25)]
      >>> round(line_search_floor_share(recs), 3)
      0.667
    """
    pairs = [
        (r["alpha"], r["alpha_min"])
        for r in records
        if r.get("kind") == "train" and r.get("alpha") is not None and r.get("alpha_min")
    ]
    pairs = [(a, m) for a, m in pairs if math.isfinite(a) and m < 1.0]
    if not pairs:
        return None
    return sum(a <= m * (1 + 1e-6) for a, m in pairs) / len(pairs)


def collapsed(evals: list[dict[str, Any]], vocab_size: int | None) -> bool:
    """Whether a run's last evaluation is above its first, or at ``ln vocab_size``.

    Example (a run that reached 4.6 and then fell back to uniform predictions over 256 bytes):
      >>> collapsed([{"val_loss": 5.6}, {"val_loss": 4.6}, {"val_loss": math.log(256)}], 256)
      True
      >>> collapsed([{"val_loss": 5.6}, {"val_loss": 2.4}], 256)
      False
    """
    losses = [e["val_loss"] for e in evals if e.get("val_loss") is not None]
    if len(losses) < 2 or not all(math.isfinite(x) for x in losses):
        return False
    at_uniform = isinstance(vocab_size, int) and vocab_size > 1
    at_uniform = at_uniform and abs(losses[-1] - math.log(vocab_size)) <= COLLAPSE_ATOL
    return losses[-1] > losses[0] or at_uniform


def sweep_results(sweep: SweepFiles) -> tuple[float, list[RunResult]]:
    """``(target, results of every planned run)`` of a sweep folder."""
    target = sweep_target(sweep)
    return target, [run_result(r, target) for r in sweep.runs]
