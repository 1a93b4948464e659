"""Optax wrappers around the Gauss-Newton family: ``None`` gradients and injected damping.

GN transforms (:func:`gnbench.optim.gn.gauss_newton.gauss_newton`, ``gn_prox_linear``,
``layerwise_gauss_newton``) never read the gradient passed to ``update``, so callers may pass
``None``. Two optax wrappers need more:

* ``optax.apply_if_finite`` and ``optax.MultiSteps`` read the gradient tree. Pass the real
  gradient, or wrap the outermost transform in :func:`none_grads_as_zeros`.
* ``optax.inject_hyperparams(gauss_newton)`` would call ``apply_fn`` and ``loss_fn`` as
  schedules and trace ``inner_steps``; :func:`inject_gn_hyperparams` makes every argument but the
  injected ones (``damping`` by default) static.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from gnbench.optim.gn.gauss_newton import gauss_newton
  >>> gn = inject_gn_hyperparams(gauss_newton)(
  ...     lambda w, x: x @ w, lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2),
  ...     inner=optax.sgd(1.0), inner_steps=2, damping=0.0)
  >>> tx = none_grads_as_zeros(optax.apply_if_finite(gn, 3))
  >>> w, batch = jnp.zeros(2), jnp.broadcast_to(jnp.eye(2), (2, 2, 2))
  >>> state = tx.init(w)
  >>> tx.update(None, state, w, batch=batch)[0]  # two SGD steps on the GN model
  Array([0.75, 0.75], dtype=float32)
  >>> state.inner_state.hyperparams["damping"] = jnp.asarray(1.0)  # pulls toward w
  >>> tx.update(None, state, w, batch=batch)[0]
  Array([0.25, 0.25], dtype=float32)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import optax


def none_grads_as_zeros(tx: Any) -> optax.GradientTransformationExtraArgs:
    """``tx`` with ``update(None, ...)`` read as ``update(zeros_like(params), ...)``.

    For optax wrappers around a GN transform that read the gradient tree
    (``optax.apply_if_finite``, ``optax.MultiSteps``) when the caller passes ``None``: wrap the
    outermost transform. Zeros are finite, so ``apply_if_finite`` then never skips. Keyword
    arguments (``batch=``, ``ls_batch=``) always reach ``tx.update``, also for
    ``optax.MultiSteps(...).gradient_transformation()``, a plain ``GradientTransformation``
    whose extra arguments ``optax.with_extra_args_support`` (and so ``optax.chain``) would drop.

    Args:
      tx: an Optax transform, or anything with its ``init`` and ``update`` (``optax.MultiSteps``).

    Returns:
      A transform with ``update(grads_or_none, state, params, **extra_args)``.

    Example:
      >>> tx = none_grads_as_zeros(optax.apply_if_finite(optax.scale(2.0), 3))
      >>> tx.update(None, tx.init(jnp.ones(2)), jnp.ones(2))[0]
      Array([0., 0.], dtype=float32)
    """

    def update_fn(updates, state, params=None, **extra_args):
        if updates is None:
            if params is None:
                raise ValueError("none_grads_as_zeros needs params when grads is None")
            updates = optax.tree.zeros_like(params)
        return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def inject_gn_hyperparams(
    factory: Callable[..., optax.GradientTransformation], injected: Sequence[str] = ("damping",)
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``optax.inject_hyperparams(factory)`` for a GN-family factory: only ``injected`` move.

    Plain ``optax.inject_hyperparams(gauss_newton)`` fails: it calls ``apply_fn`` and
    ``loss_fn`` as schedules and traces ``inner_steps``, which fixes shapes. This lists every
    other argument of ``factory`` in ``static_args``; an injected value may be a number or a
    schedule of the outer step. Set a new value with the old one's dtype (``jnp.full_like``) so
    that a jitted step is not traced again. The same call by hand:
    ``optax.inject_hyperparams(gauss_newton, static_args=("apply_fn", "loss_fn", "inner",
    "inner_steps", "line_search", "warm_start"))``.

    Args:
      factory: :func:`gauss_newton`, ``gn_prox_linear`` or ``layerwise_gauss_newton``.
      injected: the arguments to keep in ``state.hyperparams`` (numeric ones only).

    Returns:
      A factory taking ``factory``'s arguments.

    Example:
      >>> from gnbench.optim.gn.gauss_newton import gauss_newton
      >>> tx = inject_gn_hyperparams(gauss_newton)(
      ...     lambda w, x: x @ w, lambda z, x: jnp.mean(z**2), inner=optax.sgd(0.1),
      ...     inner_steps=2, damping=0.5)
      >>> state = tx.init(jnp.zeros(2))
      >>> float(state.hyperparams["damping"])
      0.5
    """
    names = list(inspect.signature(factory).parameters)
    unknown = sorted(set(injected) - set(names))
    if unknown:
        raise ValueError(f"cannot inject {unknown}: {factory.__name__} takes {names}")
    static = tuple(n for n in names if n not in injected)
    return optax.inject_hyperparams(factory, static_args=static)


__all__ = ["inject_gn_hyperparams", "none_grads_as_zeros"]
