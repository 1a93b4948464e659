"""The jitted training and evaluation steps.

A step batch ``seqs_KxBxT1`` holds K micro-batches of B sequences of T+1 tokens. The gradient is
averaged over the K micro-batches with ``lax.scan`` and handed to the optimizer together with the
micro-batches themselves (``batch=``) and, for methods with a line search, K more (``ls_batch=``);
first-order methods ignore both. Methods that do not read the gradient (the GN family) leave it
unused, and XLA removes its backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

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
) -> Callable:
    """``state, metrics = step(state, seqs_KxBxT1[, ls_seqs_KxBxT1])``, jitted, state donated."""

    def micro_loss(params, seqs_BxT1):
        return loss_fn(apply_fn(params, seqs_BxT1), seqs_BxT1)

    def step(state: TrainState, seqs_KxBxT1: jax.Array, ls_seqs_KxBxT1: jax.Array | None = None):
        def body(grad_sum, seqs_BxT1):
            loss, grads = jax.value_and_grad(micro_loss)(state.params, seqs_BxT1)
            return jax.tree.map(jnp.add, grad_sum, grads), loss

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grad_sum, losses_K = jax.lax.scan(body, zeros, seqs_KxBxT1)
        grads = jax.tree.map(lambda g: g / seqs_KxBxT1.shape[0], grad_sum)
        updates, opt_state = tx.update(
            grads, state.opt_state, state.params, batch=seqs_KxBxT1, ls_batch=ls_seqs_KxBxT1
        )
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": losses_K.mean(),
            **_hyperparams(opt_state),
            **_optimizer_metrics(opt_state),
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
