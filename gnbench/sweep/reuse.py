"""Reusing finished runs of another sweep: a run is the same run when its identity is the same.

A sweep file may name other sweeps (``"reuse": ["critical_batch_tiny"]``) whose folders sit beside
its own under ``--out``. Before running, every planned run without a ``summary.json`` of its own
is looked up there by id (``<method>-<config hash>``): a finished one whose ``identity.json`` holds
the same config hash is copied in, so the executor skips it. The copy is a plain folder copy
(metrics, summary, checkpoints, wandb offline files); nothing in the source is changed.

Example:
  >>> sources = [Path("runs/critical_batch_tiny")]
  >>> reused = reuse_finished_runs(plan, Path("runs/ladder_tiny"), sources)  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gnbench.sweep.plan import Plan
from gnbench.train.identity import read_identity


def reuse_finished_runs(plan: Plan, sweep_dir: Path, sources: list[Path]) -> list[str]:
    """Copies each planned run that ``sources`` hold finished, with the same identity.

    Returns:
      The ids of the runs copied in.
    """
    reused = []
    for run in plan.runs:
        target = sweep_dir / run.workdir
        if (target / "summary.json").exists():
            continue
        for source_dir in sources:
            source = source_dir / run.workdir
            if not (source / "summary.json").exists():
                continue
            identity = read_identity(source)
            if identity is None or identity["hash"] != run.config_hash:
                continue
            if target.exists():  # a partial run of ours: keep it, resume it instead
                break
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target)
            reused.append(run.id)
            break
    return reused
