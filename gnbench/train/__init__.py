"""The trainer: sharded state, jitted steps, evaluation, checkpoints and metrics."""

from gnbench.train.loop import train

__all__ = ["train"]
