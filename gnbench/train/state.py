"""Train state, the LM's ``apply_fn``/``loss_fn``, and sharded creation of the state.

The state is created under ``jax.eval_shape`` first, its shardings derived from the shapes
(``gnbench.model.sharding``), and then materialized by a jitted init with those out-shardings, so
it never exists unsharded on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gnbench.model import ModelConfig, init_params
from gnbench.model import apply as model_apply
from gnbench.model.sharding import state_shardings
from gnbench.model.transformer import stages as model_stages
from gnbench.optim import StagedModel


class TrainState(NamedTuple):
    step: jax.Array  # Outer iterations done (int32 scalar).
    params: Any
    opt_state: Any


def lm_fns(cfg: ModelConfig) -> tuple[Callable, Callable]:
    """``apply_fn(params, seq_BxT1) -> logits_BxTxV`` and ``loss_fn(logits, seq_BxT1) -> nats``.

    A micro-batch holds sequences of T+1 tokens: inputs are the first T, targets the last T.
    """

    def apply_fn(params: Any, seq_BxT1: jax.Array) -> jax.Array:
        return model_apply(cfg, params, seq_BxT1[:, :-1])

    def loss_fn(logits_BxTxV: jax.Array, seq_BxT1: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, seq_BxT1[:, 1:]).mean()

    return apply_fn, loss_fn


def lm_staged(cfg: ModelConfig) -> StagedModel:
    """:func:`lm_fns`'s ``apply_fn`` as a chain of stages (layerwise GN shares one forward)."""
    return StagedModel(inputs=lambda seq_BxT1: seq_BxT1[:, :-1], stages=model_stages(cfg))


def create_state(
    model_cfg: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh, seed: int
) -> tuple[TrainState, TrainState]:
    """Returns ``(state, shardings)`` with the state built directly into its shardings."""

    def init() -> TrainState:
        params = init_params(model_cfg, jax.random.key(seed))
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    abstract = jax.eval_shape(init)
    shardings = state_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    return state, shardings
