"""The trainer: sharded state, jitted steps, evaluation, checkpoints and metrics.

``train`` is imported on first use, so :mod:`gnbench.train.identity` (used by sweeps) and
:mod:`gnbench.train.validation` load without JAX.
"""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from gnbench.train.loop import train

        return train
    raise AttributeError(f"module 'gnbench.train' has no attribute {name!r}")
