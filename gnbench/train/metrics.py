"""Iterations-to-target bookkeeping and the run summary.

The rule, the same for every method and seed: evaluation runs on a fixed held-out set every
``eval_every`` iterations (and at iteration 0); the first evaluation at or below the target is the
crossing, recorded in iterations, tokens, compute (forward+backward equivalents) and wall-clock.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from gnbench.files import atomic_write_json


@dataclasses.dataclass
class Progress:
    """Counters of a run; saved in every checkpoint so a resumed run continues them."""

    tokens: int = 0  # Tokens read by the optimizer (line-search tokens included).
    flops: float = 0.0  # Compute, as XLA counts the compiled step (gnbench.train.flops).
    grad_equivalents: float = 0.0  # flops / FLOPs of one forward+backward over one micro-batch.
    wall_clock: float = 0.0  # Seconds spent in training steps (evaluation and saving excluded).
    reached: dict[str, Any] | None = None  # The target crossing, once it happened.
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    cost: dict[str, Any] | None = None  # One iteration's measured cost (flops.measure_cost).

    def units(self, step: int) -> dict[str, Any]:
        return dict(
            step=step,
            tokens=self.tokens,
            flops=self.flops,
            grad_equivalents=self.grad_equivalents,
            wall_clock=self.wall_clock,
        )

    def record_eval(self, step: int, val_loss: float, target: float) -> None:
        """Updates best/last loss and the first crossing of ``target``."""
        self.last_val_loss = val_loss
        if math.isfinite(val_loss):
            self.best_val_loss = min(val_loss, self.best_val_loss or math.inf)
        if self.reached is None and val_loss <= target:
            self.reached = {**self.units(step), "val_loss": val_loss}


def write_summary(
    path: str | os.PathLike, status: str, steps: int, target: float, progress: Progress
) -> dict[str, Any]:
    summary = dict(
        status=status,
        steps=steps,
        target_loss=target,
        reached=progress.reached,
        final_val_loss=progress.last_val_loss,
        best_val_loss=progress.best_val_loss,
        tokens=progress.tokens,
        flops=progress.flops,
        grad_equivalents=progress.grad_equivalents,
        cost_per_iteration=progress.cost,
        wall_clock=progress.wall_clock,
    )
    atomic_write_json(path, summary)
    return summary
