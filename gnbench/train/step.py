"""The jitted training and evaluation steps.

A step batch ``seqs_KxBxT1`` holds K micro-batches of B sequences of T+1 tokens. The gradient is
averaged over the K micro-batches with ``lax.scan`` and handed to the optimizer together with the
micro-batches themselves (``batch=``) and, for methods with a line search, K more (``ls_batch=``,
fresh by default, or the same K when the line search reuses the inner solve's data);
first-order methods ignore both. Methods that do not read the gradient (the GN family) get none:
the step computes no gradient for them, so the measured FLOPs hold only what the method uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from gnbench.optim import loops
from gnbench.train.state import TrainState


def _hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """Injected hyperparameters (e.g. the learning rate in use), found anywhere in the state."""
    found = optax.tree_utils.tree_get(opt_state, "hyperparams", default={})
    return {k: v for k, v in found.items() if jnp.ndim(v) == 0}


def _optimizer_metrics(opt_state: Any) -> dict[str, jax.Array]:
    """Scalars an optimizer reports in a state field named ``metrics`` (e.g. GN's alpha)."""
    found = optax.tree_utils.tree_get(opt_state, "metrics", default={})
    return dict(found) if isinstance(found, dict) else {}


def make_train_step(
    apply_fn: Callable,
    loss_fn: Callable,
    tx: optax.GradientTransformationExtraArgs,
    state_shardings: TrainState,
    batch_sharding: NamedSharding,
    with_ls_batch: bool,
    ls_reuses_batch: bool = False,
    reads_grads: bool = True,
) -> Callable:
    """``state, metrics = step(state, seqs_KxBxT1[, ls_seqs_KxBxT1])``, jitted, state donated.

    ``with_ls_batch``: the step takes a second batch of fresh micro-batches for the line search.
    ``ls_reuses_batch``: the line search gets the step's own micro-batches instead.
    ``reads_grads=False`` (the GN family): no gradient is computed (``tx.update`` gets ``None``)
    and the logged ``loss`` is the optimizer's own ``true_loss`` metric, so the step pays for
    no pass the optimizer does not use.
    """

    def micro_loss(params, seqs_BxT1):
        return loss_fn(apply_fn(params, seqs_BxT1), seqs_BxT1)

    def step(state: TrainState, seqs_KxBxT1: jax.Array, ls_seqs_KxBxT1: jax.Array | None = None):
        def body(grad_sum, seqs_BxT1):
            loss, grads = jax.value_and_grad(micro_loss)(state.params, seqs_BxT1)
            return jax.tree.map(jnp.add, grad_sum, grads), loss

        grads = loss = None
        if reads_grads:
            zeros = jax.tree.map(jnp.zeros_like, state.params)
            grad_sum, losses_K = loops.scan(body, zeros, seqs_KxBxT1)
            grads = jax.tree.map(lambda g: g / seqs_KxBxT1.shape[0], grad_sum)
            loss = losses_K.mean()
        if ls_reuses_batch:
            ls_seqs_KxBxT1 = seqs_KxBxT1
        updates, opt_state = tx.update(
            grads, state.opt_state, state.params, batch=seqs_KxBxT1, ls_batch=ls_seqs_KxBxT1
        )
        params = optax.apply_updates(state.params, updates)
        opt_metrics = _optimizer_metrics(opt_state)
        metrics = {
            "loss": opt_metrics["true_loss"] if loss is None else loss,
            **_hyperparams(opt_state),
            **opt_metrics,
        }
        return TrainState(state.step + 1, params, opt_state), metrics

    batch_shardings = (batch_sharding, batch_sharding) if with_ls_batch else (batch_sharding,)
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, *batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
    return jitted


def make_eval_step(
    apply_fn: Callable, loss_fn: Callable, params_shardings: Any, batch_sharding: NamedSharding
) -> Callable:
    """``mean_loss = eval_step(params, seqs_NxBxT1)``: mean loss over N fixed batches."""

    def evaluate(params, seqs_NxBxT1):
        def body(total, seqs_BxT1):
            return total + loss_fn(apply_fn(params, seqs_BxT1), seqs_BxT1), None

        total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), seqs_NxBxT1)
        return total / seqs_NxBxT1.shape[0]

    return jax.jit(evaluate, in_shardings=(params_shardings, batch_sharding))
