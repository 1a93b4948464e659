"""Orbax checkpoints of the train state plus a JSON record of everything else a resumed run
needs (data-iterator state, tokens, compute and wall-clock so far, the target crossing).

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run killed
at any moment leaves only whole checkpoints behind.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy


class Checkpointer:
    """Saves and restores ``(state, meta)`` under ``directory``; keeps the last ``keep``.

    Example:
      >>> ckpt = Checkpointer("/tmp/gnbench-doc/ckpt")   # doctest: +SKIP
      >>> ckpt.save(10, state, {"tokens": 1234})          # doctest: +SKIP
      >>> state, meta = ckpt.restore(abstract_state)      # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                preservation_policy=preservation_policy.LatestN(keep), create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the shardings carried by ``abstract_state`` (ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], dict(out["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``tree`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
