"""Where each run of a sweep stands, from the files on disk.

The truth is each run's ``summary.json`` (written by the trainer at the very end): it exists iff
the run is done, and says ``finished`` or ``diverged``. Everything else is pending: never started,
killed, or crashed (the trainer resumes it from its last checkpoint on the next attempt). The
sweep adds ``status.json`` next to ``plan.json`` with what only it knows: attempts, exit codes and
which runs failed (a crash, or an exit without a summary), so a rerun retries them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gnbench.files import atomic_write_json, read_json
from gnbench.sweep.plan import Plan, Run

DONE_STATES = ("finished", "diverged")


def run_state(sweep_dir: str | Path, run: Run) -> str:
    """``finished`` or ``diverged`` from the run's summary, else ``pending``.

    Example:
      >>> from gnbench.sweep.plan import Run
      >>> run_state("/nonexistent", Run("adamw-0", "adamw", {}, {}, 0))
      'pending'
    """
    summary = read_json(Path(sweep_dir) / run.workdir / "summary.json")
    if summary is None:
        return "pending"
    status = str(summary.get("status", "finished"))
    return status if status in DONE_STATES else "finished"


@dataclasses.dataclass
class SweepStatus:
    """``status.json``: per run id its state, attempts made by this sweep and last exit code."""

    path: Path
    runs: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, sweep_dir: str | Path, plan: Plan) -> SweepStatus:
        """Reads ``status.json`` and refreshes every state from the summaries on disk."""
        path = Path(sweep_dir) / "status.json"
        old = (read_json(path) or {}).get("runs", {})
        runs = {}
        for run in plan.all_runs():
            entry = dict(old.get(run.id, {}))
            entry.setdefault("attempts", 0)
            entry.setdefault("returncode", None)
            entry["method"] = run.method
            state = run_state(sweep_dir, run)
            # A failure stays recorded until a later attempt succeeds; "running" left by a killed
            # sweep is pending again.
            if state != "pending" or entry.get("state") != "failed":
                entry["state"] = state
            runs[run.id] = entry
        return cls(path=path, runs=runs)

    def set(self, run_id: str, **fields: Any) -> None:
        """Updates one run's entry and rewrites ``status.json`` atomically."""
        self.runs[run_id].update(fields)
        self.save()

    def counts(self) -> dict[str, int]:
        """How many runs are in each state."""
        out: dict[str, int] = {}
        for entry in self.runs.values():
            out[entry["state"]] = out.get(entry["state"], 0) + 1
        return out

    def save(self) -> None:
        """Writes ``status.json`` atomically."""
        atomic_write_json(self.path, {"counts": self.counts(), "runs": self.runs})
