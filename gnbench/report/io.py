"""Result files of a sweep: atomic writes and tolerant reads.

A sweep folder holds ``plan.json`` (written by :mod:`gnbench.sweep`) and one folder per run under
``runs/<run id>/`` with ``config.json``, ``metrics.jsonl`` and ``summary.json`` (written by the
trainer). Every file gnbench writes goes through a temporary file and ``os.replace``, so a reader
never sees half a file. ``metrics.jsonl`` is append-only; a run killed mid-line leaves a partial
last line, and a resumed run re-logs the records after its last checkpoint. :func:`read_jsonl`
skips the partial line and :func:`dedupe_records` keeps the last record of each (kind, step).
Anything else that cannot be read as gnbench wrote it (a file that is not JSON, a whole line that
is not a metrics record, a ``plan.json`` without its runs) raises :class:`CorruptFileError` naming
the file, and the line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

# The atomic writers and the JSON reader every layer shares live in gnbench/files.py.
from gnbench.files import CorruptFileError, read_json

_NUMBER_FIELDS = ("val_loss", "loss", "tokens", "flops", "grad_equivalents", "wall_clock")


def _bad_record(record: Any) -> str | None:
    """What makes a metrics record unusable (the report reads these fields), or ``None``."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return f"step={step!r} is not an integer"
    if record.get("kind") == "eval" and "val_loss" not in record:
        return "an eval record without val_loss"
    for key in _NUMBER_FIELDS:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key}={value!r} is not a number"
    return None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping blank and half-written lines.

    Args:
      path: the file; a missing file reads as no records.

    Returns:
      The records in file order.

    Raises:
      CorruptFileError: an unreadable file, or a whole line that is not a metrics record (an
        object with an integer ``step`` and numbers in its loss and cost fields); the message
        names the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # A line cut by a killed process.
        bad = _bad_record(record)
        if bad:
            raise CorruptFileError(
                f"{path} line {number} is not a metrics record ({bad}); fix or delete that line"
            )
        records.append(record)
    return records


def dedupe_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps the last record of each (kind, step), ordered by kind then step.

    A resumed run repeats the steps between its last checkpoint and the crash; the repeat is the
    one the final model descends from, so it wins.

    Example:
      >>> dedupe_records([{"kind": "eval", "step": 2, "val_loss": 3.0},
      ...                 {"kind": "eval", "step": 2, "val_loss": 2.9}])
      [{'kind': 'eval', 'step': 2, 'val_loss': 2.9}]
    """
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        last[(str(r.get("kind")), int(r.get("step", -1)))] = r
    return [last[k] for k in sorted(last)]


@dataclasses.dataclass
class RunFiles:
    """One planned run and whatever its folder holds so far.

    Attributes:
      entry: the run's entry in ``plan.json`` (id, method, setting, seed, scan_value, ...).
      config: ``config.json`` (resolved config) or ``None``.
      summary: ``summary.json`` or ``None`` while the run is unfinished.
      records: de-duplicated ``metrics.jsonl`` records.
    """

    entry: dict[str, Any]
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    records: list[dict[str, Any]]


@dataclasses.dataclass
class SweepFiles:
    """A sweep folder read from disk: its plan and its runs (warm-up excluded)."""

    folder: Path
    plan: dict[str, Any]
    runs: list[RunFiles]


def load_sweep(folder: str | os.PathLike) -> SweepFiles:
    """Reads ``plan.json`` and every planned run's files under ``folder``.

    Args:
      folder: a sweep folder, ``<out>/<sweep name>``.

    Returns:
      The plan and one :class:`RunFiles` per planned (non-warm-up) run.

    Raises:
      FileNotFoundError: ``folder`` has no ``plan.json``.
    """
    folder = Path(folder)
    plan = read_json(folder / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{folder} has no plan.json: not a sweep folder")
    bad = _bad_plan(plan)
    if bad:
        raise CorruptFileError(
            f"{folder / 'plan.json'} is corrupt ({bad}); rerun the sweep command to rewrite it"
        )
    return load_runs(folder, plan)


def _bad_plan(plan: dict[str, Any]) -> str | None:
    """What makes a ``plan.json`` unusable, or ``None``."""
    runs = plan.get("runs")
    if not isinstance(runs, list):
        return f"runs={runs!r} is not a list"
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict):
            return f"runs[{i}] is not an object"
        for key in ("id", "method", "workdir"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                return f"runs[{i}].{key}={entry.get(key)!r} is not a name"
        if not isinstance(entry.get("setting", {}), dict):
            return f"runs[{i}].setting is not an object"
    target = plan.get("target_loss")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        return f"target_loss={target!r} is not a number"
    return None


def load_runs(folder: str | os.PathLike, plan: dict[str, Any]) -> SweepFiles:
    """The files of every run of ``plan`` (a ``plan.json`` dict, maybe not the one on disk).

    Example:
      >>> load_runs("/nonexistent", {"runs": []}).runs
      []
    """
    folder = Path(folder)
    runs = []
    for entry in plan["runs"]:
        workdir = folder / entry["workdir"]
        runs.append(
            RunFiles(
                entry=entry,
                config=read_json(workdir / "config.json"),
                summary=read_json(workdir / "summary.json"),
                records=dedupe_records(read_jsonl(workdir / "metrics.jsonl")),
            )
        )
    return SweepFiles(folder=folder, plan=plan, runs=runs)
