"""Gradient descent with a backtracking (Armijo) line search: a method that reads the data.

    gnbench train --config examples/my_optimizers/line_search_config.py

A first-order method gets the trainer's gradient, averaged over the K micro-batches of the
iteration. This one asks for the micro-batches instead (``Optimizer(reads_grads=False)``, as
gnbench's Gauss-Newton family does): the trainer then computes no gradient and passes
``None``, and ``tx.update(None, state, params, batch=seqs_KxBxT1)`` computes the loss L and its
gradient g on ``batch`` itself with the model's ``apply_fn``/``loss_fn`` (from the
``BuildContext``), then tries the steps α_i = η s^i (i = 0 .. tries−1, η the learning rate in
use, s the shrink factor) on the same micro-batches and takes the largest that satisfies the
Armijo condition

    L(θ − α g) ≤ L(θ) − c α ‖g‖²

(the smallest when none does). The trials run as one ``gnbench.optim.loops.map``, and the K
micro-batches as one ``loops.scan``: in normal use they are ``lax.map``/``lax.scan``, and the
trainer's FLOP count unrolls them, so the report's FLOPs hold every trial.

The state is a NamedTuple of arrays (orbax checkpoints it; nothing recompiles). Its ``metrics``
field is what the trainer logs from an optimizer: ``true_loss`` (L at θ_t, logged as the
iteration's loss since the trainer computed none), ``alpha`` (the step taken, as a fraction of
η) and ``alpha_min`` (the smallest fraction tried: the report marks a search that mostly takes
it as limited by its range, as it does for GN's line search).

Reads ``optimizer.line_search`` (``shrink``, ``tries``, ``armijo``; line_search_config.py adds
it) and the shared ``optimizer.learning_rate`` under ``optimizer.schedule``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gnbench.optim import BuildContext, Optimizer, loops, outside_method
from gnbench.optim.checks import Checks, in_range
from gnbench.optim.registry import outer_schedule


class LineSearchSGDState(NamedTuple):
    """``count``: iterations done; ``metrics``: float32 scalars of the last one."""

    count: jax.Array
    metrics: dict[str, jax.Array]


def line_search_sgd(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    learning_rate: optax.ScalarOrSchedule,
    *,
    shrink: float = 0.5,
    tries: int = 4,
    armijo: float = 1e-4,
) -> optax.GradientTransformationExtraArgs:
    """Gradient descent on the iteration's micro-batches with a backtracking line search.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> outputs``.
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss``.
      learning_rate: the largest step η (a number or a schedule of the iteration).
      shrink: s in (0, 1]: each trial step is s times the one before.
      tries: how many steps are tried (η, η s, ..., η s^(tries−1)).
      armijo: c >= 0 of the sufficient-decrease condition.

    Returns:
      A transform whose ``update(None, state, params, batch=seqs_KxBxT1)`` returns the step.

    Example:
      >>> tx = line_search_sgd(lambda p, x: x * p, lambda y, x: jnp.mean((y - 1.0) ** 2), 1.0)
      >>> state = tx.init(jnp.zeros(()))
      >>> step, state = tx.update(None, state, jnp.zeros(()), batch=jnp.ones((2, 3)))
      >>> float(step), float(state.metrics["alpha"])  # L(θ) = (θ - 1)²: θ = 1 at α = η/2
      (1.0, 0.5)
    """
    fractions = jnp.asarray(shrink, jnp.float32) ** jnp.arange(tries, dtype=jnp.float32)

    def init_fn(params):
        del params
        nan = jnp.full((), jnp.nan, jnp.float32)
        metrics = dict(true_loss=nan, alpha=nan, alpha_min=fractions[-1])
        return LineSearchSGDState(count=jnp.zeros((), jnp.int32), metrics=metrics)

    def update_fn(updates, state, params, *, batch, ls_batch=None, **extra):
        del updates, ls_batch, extra  # No gradient is passed: this method reads the data.

        def loss_on_batch(p):
            def body(total, micro_batch):
                return total + loss_fn(apply_fn(p, micro_batch), micro_batch), None

            total, _ = loops.scan(body, jnp.zeros((), jnp.float32), batch)
            return total / batch.shape[0]

        loss, grads = jax.value_and_grad(loss_on_batch)(params)
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        squared_norm = sum(
            jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)
        )

        def trial(fraction):
            step = eta * fraction
            return loss_on_batch(jax.tree.map(lambda p, g: p - step * g, params, grads))

        losses = loops.map(trial, fractions)
        ok = losses <= loss - armijo * eta * fractions * squared_norm
        fraction = fractions[jnp.where(ok.any(), jnp.argmax(ok), tries - 1)]
        step = eta * fraction
        updates = jax.tree.map(lambda g: (-step * g).astype(g.dtype), grads)
        metrics = dict(
            true_loss=loss.astype(jnp.float32),
            alpha=fraction,
            alpha_min=fractions[-1],
        )
        return updates, LineSearchSGDState(count=state.count + 1, metrics=metrics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@outside_method(
    reads=("line_search",),
    check=Checks(
        positive_ints=("line_search.tries",),
        nonnegative_floats=("line_search.armijo",),
        extra=(in_range("line_search.shrink", 0, 1, "0.5"),),
    ),
)
def build(cfg, ctx: BuildContext) -> Optimizer:
    """The registry contract: ``optimizer`` section and context in, :class:`Optimizer` out."""
    if ctx.apply_fn is None or ctx.loss_fn is None:
        raise ValueError("line_search_sgd needs the model: BuildContext(apply_fn=, loss_fn=)")
    ls = cfg.line_search
    tx = line_search_sgd(
        ctx.apply_fn,
        ctx.loss_fn,
        outer_schedule(cfg, cfg.learning_rate, ctx),
        shrink=ls.shrink,
        tries=ls.tries,
        armijo=ls.armijo,
    )
    return Optimizer(
        tx=tx,
        hparams=dict(
            name="line_search_sgd",
            learning_rate=cfg.learning_rate,
            shrink=ls.shrink,
            tries=ls.tries,
            armijo=ls.armijo,
        ),
        reads_grads=False,  # The trainer passes None and logs metrics["true_loss"] as the loss.
    )
