"""The GN family inside optax's wrappers: apply_if_finite, MultiSteps, chain, inject_hyperparams.

GN reads ``batch``, not the gradient, so each wrapper is checked with real gradients and with
``None``; every result is compared with a plain GN step (and the injected damping with the
dense damped GN step), all under ``jax.jit``, in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.optim.gn.gauss_newton import gauss_newton
from gnbench.optim.gn.layerwise import layerwise_gauss_newton
from gnbench.optim.gn.prox_linear import gn_prox_linear
from gnbench.optim.gn.wrappers import inject_gn_hyperparams, none_grads_as_zeros
from tests.optim.test_curvature import cross_entropy, mlp_apply, setup
from tests.optim.test_gauss_newton import damped_gn_step, repeat

K = 3
LR = 0.05


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def problem(seed=0):
    params, batch = setup(seed=seed)
    return params, repeat(batch, K)


def gn(damping=0.0, inner_steps=K, lr=LR):
    return gauss_newton(
        mlp_apply, cross_entropy, inner=optax.adam(lr), inner_steps=inner_steps, damping=damping
    )


def grads_of(params, batch):
    return jax.grad(
        lambda p: jnp.mean(jax.vmap(lambda mb: cross_entropy(mlp_apply(p, mb), mb))(batch))
    )(params)


def plain(tx, params, batch, state=None):
    """One eager GN step: the reference every wrapped (jitted) step is compared with."""
    state = tx.init(params) if state is None else state
    return tx.update(None, state, params, batch=batch)


def assert_close(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def norm(tree):
    return float(optax.tree_utils.tree_norm(tree))


@pytest.mark.parametrize("with_grads", [True, False], ids=["grads", "none"])
def test_apply_if_finite(with_grads):
    params, batch = problem()
    tx = optax.apply_if_finite(gn(), max_consecutive_errors=3)
    if not with_grads:
        tx = none_grads_as_zeros(tx)
    update = jax.jit(tx.update)
    grads = grads_of(params, batch) if with_grads else None
    state = tx.init(params)
    want, want_state = plain(gn(), params, batch)
    got, state = update(grads, state, params, batch=batch)
    assert_close(got, want)
    assert_close(state.inner_state, want_state)
    assert bool(state.last_finite) and norm(got) > 1e-3
    if with_grads:  # A non-finite gradient: the step is skipped, the GN state is kept.
        bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads)
        skipped, skipped_state = update(bad, state, params, batch=batch)
        assert norm(skipped) == 0.0
        assert int(skipped_state.notfinite_count) == 1 and not bool(skipped_state.last_finite)
        assert_close(skipped_state.inner_state, state.inner_state)


def test_raw_apply_if_finite_needs_a_tree_for_none():
    params, batch = problem()
    tx = optax.apply_if_finite(gn(), 3)
    with pytest.raises((TypeError, ValueError)):
        tx.update(None, tx.init(params), params, batch=batch)


@pytest.mark.parametrize("with_grads", [True, False], ids=["grads", "none"])
def test_multi_steps_applies_every_second_call(with_grads):
    params, batch1 = problem(seed=0)
    _, batch2 = problem(seed=1)
    ms = optax.MultiSteps(gn(), every_k_schedule=2)
    tx = ms.gradient_transformation()
    if not with_grads:
        tx = none_grads_as_zeros(tx)
    update = jax.jit(tx.update)
    state = tx.init(params)
    grads = (lambda b: grads_of(params, b)) if with_grads else (lambda b: None)
    first, state = update(grads(batch1), state, params, batch=batch1)
    assert norm(first) == 0.0 and not bool(ms.has_updated(state))
    second, state = update(grads(batch2), state, params, batch=batch2)
    assert bool(ms.has_updated(state))
    want, want_state = plain(gn(), params, batch2)  # the second call's micro-batches
    assert_close(second, want)
    assert_close(state.inner_opt_state, want_state)
    other, _ = plain(gn(), params, batch1)
    assert norm(jax.tree.map(jnp.subtract, want, other)) > 1e-3  # batch2 really matters


@pytest.mark.parametrize("with_grads", [True, False], ids=["grads", "none"])
def test_chain_with_scale_halves_the_update(with_grads):
    params, batch = problem()
    tx = optax.chain(gn(), optax.scale(0.5))
    update = jax.jit(tx.update)
    state, ref_state = tx.init(params), None
    for _ in range(3):
        grads = grads_of(params, batch) if with_grads else None
        got, state = update(grads, state, params, batch=batch)
        want, ref_state = plain(gn(), params, batch, ref_state)
        assert_close(got, jax.tree.map(lambda u: 0.5 * u, want))
        assert_close(state[0], ref_state)
        params = optax.apply_updates(params, got)


def test_injected_damping_changes_the_update_like_a_constant():
    params, batch = problem()
    tx = inject_gn_hyperparams(gauss_newton)(
        mlp_apply, cross_entropy, inner=optax.adam(LR), inner_steps=K, damping=0.5
    )
    traces = []

    @jax.jit
    def update(state):
        traces.append(1)
        return tx.update(None, state, params, batch=batch)

    state = tx.init(params)
    assert float(state.hyperparams["damping"]) == 0.5
    at_half, _ = update(state)
    assert_close(at_half, plain(gn(damping=0.5), params, batch)[0])
    state.hyperparams["damping"] = jnp.full_like(state.hyperparams["damping"], 20.0)
    at_20, new_state = update(state)
    assert_close(at_20, plain(gn(damping=20.0), params, batch)[0])
    assert float(new_state.hyperparams["damping"]) == 20.0
    assert norm(jax.tree.map(jnp.subtract, at_half, at_20)) > 1e-3
    assert len(traces) == 1  # a new damping is a new value, not a new program


def test_injected_damping_solves_the_dense_damped_system():
    params, batch = setup(seed=1)
    lam, steps = 2.0, 400
    _, _, gn_matrix, _, want = damped_gn_step(params, batch, lam)
    lr = 1.0 / (np.linalg.eigvalsh(gn_matrix).max() + lam)
    static = ("apply_fn", "loss_fn", "inner", "inner_steps", "line_search", "warm_start")
    tx = optax.inject_hyperparams(gauss_newton, static_args=static)(
        mlp_apply, cross_entropy, inner=optax.sgd(lr), inner_steps=steps, damping=0.0
    )
    state = tx.init(params)
    state.hyperparams["damping"] = jnp.asarray(lam)
    updates, _ = jax.jit(tx.update)(None, state, params, batch=repeat(batch, steps))
    np.testing.assert_allclose(ravel_pytree(updates)[0], want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("factory", [gn_prox_linear, layerwise_gauss_newton])
def test_injected_damping_in_the_rest_of_the_family(factory):
    params, batch = problem()
    kwargs = dict(inner=optax.adam(LR), inner_steps=K)
    if factory is layerwise_gauss_newton:
        kwargs["blocks"] = lambda p: {"w1": "a", "b1": "a", "w2": "b", "b2": "b"}
    tx = inject_gn_hyperparams(factory)(mlp_apply, cross_entropy, damping=0.0, **kwargs)
    state = tx.init(params)
    state.hyperparams["damping"] = jnp.asarray(3.0)
    got, _ = jax.jit(tx.update)(None, state, params, batch=batch)
    assert_close(
        got, plain(factory(mlp_apply, cross_entropy, damping=3.0, **kwargs), params, batch)[0]
    )


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="damping must be >= 0, got -1"):
        gn(damping=-1.0)
    with pytest.raises(ValueError, match="cannot inject \\['lr'\\]"):
        inject_gn_hyperparams(gauss_newton, injected=("lr",))
    params, batch = problem()
    tx = inject_gn_hyperparams(gauss_newton, injected=("damping", "inner_steps"))(
        mlp_apply, cross_entropy, inner=optax.adam(LR), inner_steps=K
    )
    with pytest.raises(ValueError, match="inner_steps must be a Python int.*static_args"):
        jax.jit(tx.update)(None, tx.init(params), params, batch=batch)
    with pytest.raises(ValueError, match="grads must be None or structured like params"):
        gn().update({"w1": params["w1"]}, gn().init(params), params, batch=batch)
