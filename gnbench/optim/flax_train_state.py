"""``flax.training.train_state.TrainState`` steps for optimizers that need ``batch=``.

``TrainState.apply_gradients(grads=...)`` calls ``tx.update(grads, opt_state, params)`` and
forwards its other keyword arguments to ``replace``, so a Gauss-Newton transform (which reads
``batch`` and ``ls_batch``) cannot be stepped through it. :func:`apply_gradients` does the same
step with the extra arguments passed to ``tx.update``; for first-order optimizers (which ignore
them) it equals ``state.apply_gradients(grads=grads)``. Needs flax (the ``bench`` extra), so
``gnbench.optim`` does not import this module: import it by name.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from flax.training import train_state
  >>> from gnbench.optim.gn.gauss_newton import gauss_newton
  >>> tx = gauss_newton(lambda w, x: x @ w, lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2),
  ...                   inner=optax.sgd(1.0), inner_steps=2)
  >>> state = train_state.TrainState.create(apply_fn=None, params=jnp.zeros(2), tx=tx)
  >>> state = apply_gradients(state, None, batch=jnp.broadcast_to(jnp.eye(2), (2, 2, 2)))
  >>> int(state.step), state.params
  (1, Array([0.75, 0.75], dtype=float32))
"""

from __future__ import annotations

from typing import Any

import optax
from flax.training import train_state


def apply_gradients(
    state: train_state.TrainState,
    grads: optax.Updates | None,
    *,
    batch: Any = None,
    ls_batch: Any = None,
    **extra_args: Any,
) -> train_state.TrainState:
    """One optimizer step of ``state`` with ``batch``/``ls_batch`` passed to ``tx.update``.

    Args:
      state: a ``TrainState`` (or subclass) built with any Optax transform.
      grads: the gradient, structured like ``state.params``; ``None`` for the GN family, which
        does not read it (first-order optimizers need it).
      batch: the K micro-batches of the GN family (ignored by first-order optimizers).
      ls_batch: the line-search micro-batches of the GN family, if it has a line search.
      **extra_args: further keyword arguments for ``tx.update``.

    Returns:
      ``state`` with ``step + 1``, the updated ``params`` and the new ``opt_state``.
    """
    if isinstance(grads, dict) and train_state.OVERWRITE_WITH_GRADIENT in grads:
        raise ValueError(
            f"grads with a {train_state.OVERWRITE_WITH_GRADIENT!r} collection are not supported; "
            "use state.apply_gradients for them"
        )
    tx = optax.with_extra_args_support(state.tx)
    updates, opt_state = tx.update(
        grads, state.opt_state, state.params, batch=batch, ls_batch=ls_batch, **extra_args
    )
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
    )


__all__ = ["apply_gradients"]
