"""Orbax checkpoints of the train state plus a JSON record of everything else a resumed run
needs (data-iterator state, tokens, compute and wall-clock so far, the target crossing).

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run killed
at any moment leaves only whole checkpoints behind. A disk can still break one:
:func:`checkpoint_problem` reads the metadata of the newest one (no arrays, no compilation) so
that a start refuses it at once, and a restore that fails on the arrays themselves fails without
the tracebacks orbax's leftover reads would print.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
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
        with quiet_leftover_reads():
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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def checkpoint_problem(ckpt_dir: str | os.PathLike) -> tuple[Path, str] | None:
    """``(step folder, why)`` when the newest checkpoint under ``ckpt_dir`` cannot be restored,
    else ``None``.

    Reads the run record (``meta``) and the metadata of every array of the state; not the
    arrays, so a chunk broken inside an array is found only by the restore itself.
    """
    ckpt_dir = Path(ckpt_dir).absolute()
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step()
    if step is None:
        manager.close()
        return None
    step_dir = ckpt_dir / str(step)
    absl_log, level = logging.getLogger("absl"), logging.getLogger("absl").level
    absl_log.setLevel(logging.ERROR)  # Orbax warns about each file a broken checkpoint lacks.
    try:
        with quiet_leftover_reads():
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = meta["meta"]
            if not isinstance(meta, dict) or not {"data", "progress"} <= set(meta):
                raise ValueError("its meta record lacks the data iterator or the progress")
            ocp.StandardCheckpointHandler().metadata(step_dir / "state")
    except Exception as e:  # Orbax raises many kinds; every one means "unusable".
        return step_dir, _one_line(e)
    finally:
        manager.close()
        absl_log.setLevel(level)
    return None


def _leftover_read(unraisable: Any) -> bool:
    e = unraisable.exc_value
    return isinstance(e, RuntimeError) and "Event loop is closed" in str(e)


@contextlib.contextmanager
def quiet_leftover_reads() -> Iterator[None]:
    """Drops the "Event loop is closed" reports of reads a failed orbax restore left in flight.

    A restore that fails on one array closes its event loop while tensorstore still completes
    the other reads; each completion then reports ``RuntimeError: Event loop is closed`` through
    ``sys.unraisablehook``, long after the restore raised. The filter stays installed after a
    failure (those reports come later) and is removed after a success. Other reports pass.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _leftover_read(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    yield  # On an exception the filter stays.
    sys.unraisablehook = previous
