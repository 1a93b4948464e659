"""Start a run from another run's parameters (the paper's shared AdamW warm-up checkpoint).

Only the parameters are taken: every method then starts from the same point with fresh optimizer
state and its own schedule, as in Abreu et al. (2025), where all methods start from one warm-up
checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


def load_init_params(run_dir: str | os.PathLike, abstract_params: Any) -> Any:
    """Parameters of the last checkpoint of the run in ``run_dir``.

    Args:
      run_dir: a run folder (holding ``ckpt/``) of a run with the same model.
      abstract_params: ShapeDtypeStructs with shardings: the restore target.

    Raises:
      FileNotFoundError: ``run_dir`` has no checkpoint.
    """
    ckpt_dir = Path(run_dir).absolute() / "ckpt"
    manager = ocp.CheckpointManager(ckpt_dir) if ckpt_dir.exists() else None
    step = manager.latest_step() if manager else None
    if step is None:
        raise FileNotFoundError(
            f"train.init_from={str(run_dir)!r} has no checkpoint (looked in {ckpt_dir})"
        )
    target = {"params": abstract_params}
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            )
        ),
    )
    manager.close()
    return restored["state"]["params"]
