"""GN-prox-linear against the explicitly linearized model (dense Jacobian, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.optim.gn.curvature import linearized_model_eval
from gnbench.optim.gn.prox_linear import gn_prox_linear, prox_linear_output_rule
from tests.optim.test_curvature import cross_entropy, dense_terms, mlp_apply, setup
from tests.optim.test_gauss_newton import repeat


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def explicit_objective(params, batch, lam):
    """p(Δ) = L(f_t + J Δ) + λ/2 ‖Δ‖² with J a dense matrix, as a function of flat Δ."""
    flat, unravel, jac, _, _, loss_of_z = dense_terms(params, batch, cross_entropy)
    f_t = mlp_apply(params, batch).reshape(-1)
    return flat, unravel, lambda d: loss_of_z(f_t + jac @ d) + 0.5 * lam * d @ d


def test_inner_gradient_is_gradient_of_linearized_loss():
    params, batch = setup(seed=7)
    lam = 0.3
    flat, unravel, objective = explicit_objective(params, batch, lam)
    delta = 0.5 * jax.random.normal(jax.random.key(8), flat.shape)
    ev = linearized_model_eval(
        mlp_apply,
        cross_entropy,
        params,
        batch,
        unravel(delta),
        damping=lam,
        rule=prox_linear_output_rule,
    )
    np.testing.assert_allclose(
        ravel_pytree(ev.grad)[0], jax.grad(objective)(delta), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(ev.value, objective(delta), rtol=1e-12)
    np.testing.assert_allclose(ev.loss, cross_entropy(mlp_apply(params, batch), batch), rtol=1e-12)


def test_one_step_reaches_minimizer_of_linearized_problem():
    params, batch = setup(seed=9)
    lam = 0.5
    flat, unravel, objective = explicit_objective(params, batch, lam)
    want = jnp.zeros_like(flat)
    for _ in range(20):  # Newton's method on the (strongly convex) dense objective
        want = want - jnp.linalg.solve(jax.hessian(objective)(want), jax.grad(objective)(want))
    lr = 1.0 / np.linalg.eigvalsh(jax.hessian(objective)(want)).max()
    tx = gn_prox_linear(mlp_apply, cross_entropy, inner=optax.sgd(lr), inner_steps=400, damping=lam)
    updates, state = tx.update(None, tx.init(params), params, batch=repeat(batch, 400))
    np.testing.assert_allclose(ravel_pytree(updates)[0], want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(state.metrics["gn_model_after"], objective(want), rtol=1e-6)


def test_large_damping_steps_along_negative_gradient():
    params, batch = setup(seed=10)
    lam = 1e4
    grad = ravel_pytree(jax.grad(lambda p: cross_entropy(mlp_apply(p, batch), batch))(params))[0]
    tx = gn_prox_linear(
        mlp_apply, cross_entropy, inner=optax.sgd(1.0 / (lam + 10.0)), inner_steps=200, damping=lam
    )
    updates, _ = tx.update(None, tx.init(params), params, batch=repeat(batch, 200))
    step = ravel_pytree(updates)[0]
    np.testing.assert_allclose(step * lam, -grad, rtol=1e-3, atol=1e-4)
    # The damping pulls toward θ_t: a tenfold λ gives a roughly tenfold smaller step.
    tx10 = gn_prox_linear(
        mlp_apply,
        cross_entropy,
        inner=optax.sgd(1.0 / (10 * lam + 10.0)),
        inner_steps=200,
        damping=10 * lam,
    )
    updates10, _ = tx10.update(None, tx10.init(params), params, batch=repeat(batch, 200))
    ratio = jnp.linalg.norm(step) / jnp.linalg.norm(ravel_pytree(updates10)[0])
    np.testing.assert_allclose(ratio, 10.0, rtol=1e-2)
