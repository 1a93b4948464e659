"""Trackers: where per-iteration metrics go. Library code logs through :class:`Tracker` and never
imports wandb; :class:`WandbTracker` imports it only when built.

In wandb, every row carries the iteration and the unit counters (tokens, FLOPs, forward+backward
equivalents, wall-clock) unprefixed, so any of them can be a chart's x-axis, and the run summary
holds the cost to the target in each unit (:class:`WandbTracker` says why this layout).

Example:
  >>> t = JsonlTracker("/tmp/gnbench-doc/metrics.jsonl")
  >>> t.log({"kind": "train", "step": 1, "loss": 2.5})
  >>> t.close()
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

WANDB_MODES = ("auto", "online", "offline", "disabled")


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self, summary: dict[str, Any] | None = None) -> None: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable ("nan", "inf").
    return value


class JsonlTracker:
    """Appends one JSON object per record to ``path`` (flushed each time, so a crash loses none).

    ``truncate_after_step`` drops records of steps beyond a resumed checkpoint, so a resumed run
    never holds a step twice.
    """

    def __init__(self, path: str | os.PathLike, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= truncate_after_step
            ]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        self._file = open(self.path, "a")  # noqa: SIM115 (kept open for the run)

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Closes the file (the summary has its own file, ``summary.json``)."""
        self._file.close()


STEP_AXIS = "iteration"  # wandb's default x-axis: the outer iteration (also wandb's own step).
UNITS = ("tokens", "flops", "grad_equivalents", "wall_clock")  # The other selectable x-axes.


def wandb_row(record: dict[str, Any]) -> dict[str, Any]:
    """One tracker record -> the wandb row: its metrics under ``train/`` or ``eval/``, the
    iteration and every unit counter unprefixed (the same names in train and eval rows, so one
    x-axis serves both).

    Example:
      >>> wandb_row({"kind": "eval", "step": 2, "tokens": 64, "val_loss": 3.1})
      {'eval/val_loss': 3.1, 'iteration': 2, 'tokens': 64}
    """
    prefix = "eval/" if record.get("kind") == "eval" else "train/"
    skip = {"kind", "step", *UNITS}
    row = {prefix + k: v for k, v in record.items() if k not in skip}
    row[STEP_AXIS] = int(record["step"])
    row.update({unit: record[unit] for unit in UNITS if unit in record})
    return row


def wandb_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``'s fields -> the wandb run summary: status, ``reached_target``, the cost to
    the target in every unit (``to_target/iterations``, ``/tokens``, ``/flops``,
    ``/grad_equivalents``, ``/wall_clock``; ``None`` when not reached), and the best and final
    validation loss.

    Example:
      >>> s = wandb_summary({"status": "finished", "steps": 6, "target_loss": 4.5, "reached": None,
      ...                    "best_val_loss": 4.8, "final_val_loss": 4.9})
      >>> s["reached_target"], s["to_target/iterations"], s["best_val_loss"]
      (False, None, 4.8)
    """
    reached = summary.get("reached") or None
    out = {
        "status": summary.get("status"),
        "iterations": summary.get("steps"),
        "target_loss": summary.get("target_loss"),
        "reached_target": reached is not None,
        "best_val_loss": summary.get("best_val_loss"),
        "final_val_loss": summary.get("final_val_loss"),
    }
    for unit, key in (("iterations", "step"), *((u, u) for u in UNITS)):
        out[f"to_target/{unit}"] = reached.get(key) if reached else None
    return out


class WandbTracker:
    """Logs records to wandb so that runs compare in any unit.

    Axes. wandb's ``define_metric`` gives a metric one default x-axis (``step_metric``), so every
    row carries the iteration and every unit counter (``tokens``, ``flops``,
    ``grad_equivalents``, ``wall_clock``) under the same names in train and eval rows
    (:func:`wandb_row`): each is then a logged series that the x-axis menu of any chart offers,
    for ``train/*`` and ``eval/*`` alike. ``define_metric("train/*", step_metric="iteration")``
    (and ``eval/*``) makes the iteration the default; ``eval/val_loss`` also keeps its minimum in
    the summary. The iteration is wandb's own step too (``log(..., step=)``), so a resumed run
    appends where it stopped.

    Summary. :meth:`close` with the run's ``summary.json`` fields writes the cost to the target in
    every unit, ``reached_target`` and the best and final validation loss into the run summary
    (:func:`wandb_summary`), the columns a runs table sorts by.

    Args:
      mode: ``auto`` (``$WANDB_MODE`` if set, else online when ``WANDB_API_KEY`` is set and
        offline otherwise), ``online``,
        ``offline`` or ``disabled``.
      project, group, name: wandb project, group (the sweep) and display name.
      run_id: the wandb run id (default ``name``); the trainer derives it from the run's config
        hash (:func:`gnbench.train.identity.wandb_run_id`), so runs never share one.
      config: the config to log (the trainer's: :func:`gnbench.train.identity.wandb_config`).
      directory: where wandb writes its files (offline runs land in ``directory/wandb``).
      tags: the run's tags (the trainer's: method, sweep, model).
    """

    def __init__(
        self,
        mode: str,
        project: str,
        group: str,
        name: str,
        config: dict,
        directory: str | os.PathLike,
        run_id: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
    ):
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb.mode={mode!r}; valid: {', '.join(WANDB_MODES)}")
        if mode == "auto":
            default = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            mode = os.environ.get("WANDB_MODE", default)
        import wandb  # Imported here only: library code never needs it.

        self._wandb = wandb
        self._run = wandb.init(
            mode=mode,
            project=project,
            group=group or None,
            name=name,
            id=run_id or name,
            resume="allow",
            config=config,
            dir=str(directory),
            reinit="finish_previous",
            tags=list(tags) or None,
        )
        self._run.define_metric(STEP_AXIS)
        for unit in UNITS:
            self._run.define_metric(unit, step_metric=STEP_AXIS)
        for prefix in ("train/*", "eval/*"):
            self._run.define_metric(prefix, step_metric=STEP_AXIS)
        self._run.define_metric("eval/val_loss", step_metric=STEP_AXIS, summary="min,last")

    def log(self, record: dict[str, Any]) -> None:
        self._run.log(wandb_row(record), step=int(record["step"]))

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Finishes the run; ``summary`` (``summary.json``'s fields) goes into its summary."""
        if summary is not None:
            self._run.summary.update(wandb_summary(summary))
        self._run.finish()


class MultiTracker:
    """Sends each record to every tracker."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log(self, record: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(record)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Closes every tracker, handing each the run's summary (``None``: none written)."""
        for t in self.trackers:
            t.close(summary)
