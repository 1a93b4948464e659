"""Compute of a training step, measured by XLA's cost analysis of the compiled step.

Every run charges each iteration the FLOPs XLA counts in its compiled training step (forward,
backward, GN's linearizations and products, the line search, the optimizer update), so compute
is measured on the model, method and hardware at hand instead of assumed. Two facts shape how:

- XLA's cost analysis counts a while loop's body once, whatever its trip count. The step's loops
  (the K micro-batches, GN's inner solve, the line search) go through
  :mod:`gnbench.optim.loops`, which unrolls them while :func:`step_flops` lowers the step.
- Unrolling K inner steps and the line search makes compiling slow (a GN step at K=8 takes ~20 s
  to compile unrolled on 2 CPU cores). The step's FLOPs are affine in K (every loop runs K times,
  or a fixed number of step sizes times K), so :func:`step_flops` compiles the unrolled step at
  K=1 and K=2 and extrapolates exactly: ``F(K) = F(1) + (K - 1) (F(2) - F(1))``
  (``tests/train/test_flops.py`` checks it against an unrolled compile at larger K).

The unit of compute in reports, *grad-equivalents*, is FLOPs divided by the FLOPs of one
forward+backward pass of the model on one micro-batch, measured the same way
(:func:`fwd_bwd_flops`).

Where the backend gives no cost analysis, :func:`formula_fwd_bwd_flops` (6N per token plus the
attention term) stands in, the caller says so in the logs, and a step counts its K
forward+backward passes only (GN's extra products are then not counted).

Example:
  >>> from gnbench.model import get_model_config
  >>> cfg = get_model_config("tiny")
  >>> f"{formula_fwd_bwd_flops(cfg, micro_batch=16, seq_len=64):.3g}"
  '5.43e+09'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gnbench.model import ModelConfig
from gnbench.optim import loops


def xla_flops(compiled: jax.stages.Compiled) -> float | None:
    """The ``flops`` of a compiled computation's cost analysis, or ``None`` if not reported."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # Backends without a cost model raise (e.g. NotImplementedError).
        return None
    if isinstance(analysis, list | tuple):  # Older JAX: one dict per device program.
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def step_flops(lower_at: Callable[[int], jax.stages.Lowered], k: int) -> float | None:
    """FLOPs of one training step over ``k`` micro-batches.

    Args:
      lower_at: ``k -> the step lowered for k micro-batches`` (the trainer rebuilds the optimizer
        for that k). Called inside :func:`gnbench.optim.loops.unrolled`, at k = 1 and 2.
      k: the run's micro-batches per iteration.

    Returns:
      ``F(1) + (k - 1) (F(2) - F(1))``, or ``None`` when XLA reports no cost analysis.
    """
    with loops.unrolled():
        f1 = xla_flops(lower_at(1).compile())
        f2 = xla_flops(lower_at(2).compile()) if k > 1 else f1
    if f1 is None or f2 is None:
        return None
    return f1 + (k - 1) * (f2 - f1)


def _micro_loss(apply_fn: Callable, loss_fn: Callable) -> Callable:
    """``(params, micro_batch) -> scalar loss``."""
    return lambda p, mb: loss_fn(apply_fn(p, mb), mb)


def fwd_bwd_flops(
    apply_fn: Callable, loss_fn: Callable, params: Any, micro_batch: jax.ShapeDtypeStruct
) -> float | None:
    """FLOPs of ``value_and_grad`` of the loss on one micro-batch (one grad-equivalent).

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> outputs``.
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar``.
      params: parameters or their ``jax.ShapeDtypeStruct`` s.
      micro_batch: shape of one micro-batch.
    """

    loss = _micro_loss(apply_fn, loss_fn)
    return xla_flops(jax.jit(jax.value_and_grad(loss)).lower(params, micro_batch).compile())


def forward_flops(
    apply_fn: Callable, loss_fn: Callable, params: Any, micro_batch: jax.ShapeDtypeStruct
) -> float | None:
    """FLOPs of the loss (forward only) on one micro-batch."""

    loss = _micro_loss(apply_fn, loss_fn)
    return xla_flops(jax.jit(loss).lower(params, micro_batch).compile())


def measure_cost(
    lower_at: Callable[[int], jax.stages.Lowered],
    k: int,
    measure_fwd_bwd: Callable[[], float | None],
    *,
    devices: int,
    formula: float,
) -> dict[str, Any]:
    """What one iteration of a run costs, as the trainer logs it.

    Args:
      lower_at: see :func:`step_flops`.
      k: micro-batches per iteration.
      measure_fwd_bwd: returns :func:`fwd_bwd_flops` of one micro-batch on the same mesh.
      devices: devices the step is partitioned over (XLA counts one device's program; the
        total is that times ``devices``).
      formula: :func:`formula_fwd_bwd_flops` of one micro-batch, the fallback.

    Returns:
      ``{"step_flops", "fwd_bwd_flops", "source"}``: FLOPs of one iteration and of one
      forward+backward pass over one micro-batch (all devices), and where they come from.
    """
    step, unit = step_flops(lower_at, k), measure_fwd_bwd()
    if step is None or unit is None or unit <= 0:
        print(
            "gnbench: XLA gives no cost analysis on this backend; compute falls back to the "
            f"formula 6N + attention ({formula:.3g} FLOPs per forward+backward) x {k} "
            "micro-batches per iteration, which leaves out any extra work of the method"
        )
        return dict(step_flops=formula * k, fwd_bwd_flops=formula, source="formula")
    return dict(step_flops=step * devices, fwd_bwd_flops=unit * devices, source="XLA cost analysis")


def formula_fwd_bwd_flops(cfg: ModelConfig, *, micro_batch: int, seq_len: int) -> float:
    """The textbook count of a forward+backward pass: 6N per token plus attention.

    N counts the matrices a token goes through (per block: q, k, v, o and the two MLP matrices;
    the output head), not the embedding lookup. Attention's score and value products cost
    4·T·d per token and layer forward (Hoffmann et al. 2022, appendix F, with the full T×T
    product that XLA computes under a causal mask), three times that forward+backward.

    Args:
      cfg: the model.
      micro_batch: sequences per micro-batch.
      seq_len: tokens per sequence.

    Returns:
      FLOPs of one forward+backward pass over one micro-batch.
    """
    d, n_layers, t = cfg.d_model, cfg.n_layers, seq_len
    n_matrix = n_layers * (4 * d * d + 2 * d * cfg.d_ff) + d * cfg.vocab_size
    per_token = 6 * n_matrix + 12 * n_layers * t * d
    return float(per_token * micro_batch * seq_len)


__all__ = [
    "formula_fwd_bwd_flops",
    "forward_flops",
    "fwd_bwd_flops",
    "measure_cost",
    "step_flops",
    "xla_flops",
]
