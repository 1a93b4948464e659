"""Trackers: where per-iteration metrics go. Library code logs through :class:`Tracker` and never
imports wandb; :class:`WandbTracker` imports it only when built.

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

    def close(self) -> None: ...


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

    def close(self) -> None:
        self._file.close()


class WandbTracker:
    """Logs records to wandb with the step as x-axis; every unit (tokens, compute, wall-clock) is a
    logged field, so dashboards can plot loss against any of them.

    Args:
      mode: ``auto`` (``$WANDB_MODE`` if set, else online when ``WANDB_API_KEY`` is set and
        offline otherwise), ``online``,
        ``offline`` or ``disabled``.
      project, group, name: wandb project, group (the sweep) and display name.
      run_id: the wandb run id (default ``name``); the trainer derives it from the run's config
        hash (:func:`gnbench.train.identity.wandb_run_id`), so runs never share one.
      config: the resolved run config (a flat or nested dict).
      directory: where wandb writes its files (offline runs land in ``directory/wandb``).
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
        )

    def log(self, record: dict[str, Any]) -> None:
        prefix = "eval/" if record.get("kind") == "eval" else "train/"
        data = {prefix + k: v for k, v in record.items() if k not in ("kind", "step")}
        self._run.log(data, step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


class MultiTracker:
    """Sends each record to every tracker."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log(self, record: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(record)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
