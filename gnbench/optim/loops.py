"""``scan`` and ``map`` that unroll on request, so XLA's cost analysis counts every iteration.

XLA's HLO cost analysis counts the body of a while loop once, whatever its trip count (measured
with jax 0.10.2: ``cost_analysis()["flops"]`` of a ``lax.scan`` over 1, 4 or 16 matmuls is the
same number). Every loop of a training step (the trainer's scan over K micro-batches, GN's inner
scan, the line search's maps) therefore goes through these two functions: in normal use they are
``lax.scan``/``lax.map``; inside :func:`unrolled` they unroll completely, so that lowering the
step there and asking XLA for its cost analysis gives the FLOPs of the whole step
(:mod:`gnbench.train.flops`). Unrolling only changes how the loop is compiled, never its result.

Example:
  >>> import jax, jax.numpy as jnp
  >>> f = lambda xs: scan(lambda c, x: (c + x @ x, None), jnp.zeros(()), xs)[0]
  >>> xs = jnp.ones((4, 8))
  >>> with unrolled():
  ...     flops = jax.jit(f).lower(xs).compile().cost_analysis()["flops"]
  >>> flops >= 4 * 2 * 8
  True
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax

_UNROLL = contextvars.ContextVar("gnbench_unroll_loops", default=False)


@contextlib.contextmanager
def unrolled() -> Iterator[None]:
    """Within this block, :func:`scan` and :func:`map` traced from now on unroll fully."""
    token = _UNROLL.set(True)
    try:
        yield
    finally:
        _UNROLL.reset(token)


def scan(f: Callable, init: Any, xs: Any, length: int | None = None) -> tuple[Any, Any]:
    """``jax.lax.scan(f, init, xs, length)``, fully unrolled inside :func:`unrolled`."""
    return jax.lax.scan(f, init, xs, length=length, unroll=True if _UNROLL.get() else 1)


def map(f: Callable, xs: Any) -> Any:  # noqa: A001 (mirrors jax.lax.map)
    """``jax.lax.map(f, xs)``, fully unrolled inside :func:`unrolled`."""
    if not _UNROLL.get():
        return jax.lax.map(f, xs)
    return jax.lax.scan(lambda _, x: (None, f(x)), None, xs, unroll=True)[1]


__all__ = ["map", "scan", "unrolled"]
