"""K-FAC with adaptive damping and the quadratic model's step (kfac_adaptive) against dense NumPy:
the first step minimises the exact-GN quadratic model along the damped K-FAC direction, the second
solves the 2x2 model over (direction, previous step), and the damping follows the
Levenberg-Marquardt rule (ρ = 1 on a problem whose GN model is exact)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.optim.approx_gn.kfac_adaptive import kfac_adaptive, new_damping
from tests.optim.test_kfac import LAM, N, V, _dense_direction, _problem


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


LABELS = jnp.arange(N) % V


def ce(z, _):
    return jnp.mean(jax.nn.logsumexp(z, -1) - z[jnp.arange(N), LABELS])


def _micro_batches(x):
    """K = 2 micro-batches: the problem's inputs and a shifted copy."""
    return jnp.stack([x, 0.5 * x[::-1] + 0.2])


def _grads(apply_fn, params, batch):
    return jax.grad(lambda p: jnp.mean(jax.vmap(lambda mb: ce(apply_fn(p, mb), mb))(batch)))(params)


def _dense_ggn(apply_fn, params, batch):
    """Mean over micro-batches of Jᵀ H J / N, H = diag(p) − ppᵀ per position (NumPy)."""
    flat, unravel = ravel_pytree(params)
    total = 0.0
    for mb in batch:
        jac = np.asarray(jax.jacfwd(lambda f, mb=mb: apply_fn(unravel(f), mb))(flat))  # (N, V, P)
        z = np.asarray(apply_fn(params, mb))
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        total = (
            total
            + sum(jac[n].T @ (np.diag(p[n]) - np.outer(p[n], p[n])) @ jac[n] for n in range(N)) / N
        )
    return total / len(batch)


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def _tx(apply_fn, x, **kw):
    settings = dict(
        initial_damping=LAM,
        estimation_mode="ggn_exact",
        exact_inverses=True,
        curvature_ema=0.0,  # the factors of this step's first micro-batch only
        damping_adaptation_interval=1000,
    )
    return kfac_adaptive(apply_fn, ce, x, **{**settings, **kw})


def test_first_step_minimises_the_damped_gn_model_along_the_kfac_direction(x64):
    apply_fn, params, x = _problem()
    batch = _micro_batches(x)
    tx = _tx(apply_fn, x)
    g = _grads(apply_fn, params, batch)
    step, state = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=batch))(
        g, tx.init(params), params
    )

    delta = -_flat(_dense_direction(apply_fn, params, batch[0], g))
    gram = _dense_ggn(apply_fn, params, batch)
    gf = _flat(g)
    alpha = -(gf @ delta) / (delta @ gram @ delta + LAM * delta @ delta)
    np.testing.assert_allclose(_flat(step), alpha * delta, rtol=1e-8)
    np.testing.assert_allclose(float(state.metrics["alpha"]), alpha, rtol=1e-8)
    assert float(state.metrics["mu"]) == 0.0
    # Power: α is not 1 (the fixed-lr rung's step) and the K-FAC direction is not the gradient.
    assert abs(alpha - 1) > 0.05
    assert not np.allclose(delta / np.linalg.norm(delta), -gf / np.linalg.norm(gf), atol=1e-2)


def test_second_step_solves_the_two_by_two_model_with_the_previous_step(x64):
    apply_fn, params, x = _problem()
    batch = _micro_batches(x)
    tx = _tx(apply_fn, x)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=batch))
    step1, state = update(_grads(apply_fn, params, batch), tx.init(params), params)
    params2 = jax.tree.map(jnp.add, params, step1)
    g2 = _grads(apply_fn, params2, batch)
    step2, state = update(g2, state, params2)

    delta = -_flat(_dense_direction(apply_fn, params2, batch[0], g2))
    v = _flat(step1)
    gram = _dense_ggn(apply_fn, params2, batch)
    u = np.stack([delta, v])
    m = u @ gram @ u.T + LAM * u @ u.T
    coef = -np.linalg.solve(m, u @ _flat(g2))
    np.testing.assert_allclose(_flat(step2), coef @ u, rtol=1e-7)
    np.testing.assert_allclose(
        [float(state.metrics["alpha"]), float(state.metrics["mu"])], coef, rtol=1e-7
    )
    assert abs(coef[1]) > 1e-3  # the momentum term is used


def test_damping_rule_is_levenberg_marquardt():
    lam, omega = 0.1, 0.9**5
    cases = {0.9: lam * omega, 0.5: lam, 0.1: lam / omega, float("nan"): lam / omega}
    for rho, expected in cases.items():
        got = float(new_damping(jnp.asarray(lam), jnp.asarray(rho), omega, 1e-8, 1e8))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    clipped = new_damping(jnp.asarray(lam), jnp.asarray(0.0), omega, 1e-8, 0.12)
    np.testing.assert_allclose(float(clipped), 0.12, rtol=1e-6)


def test_rho_is_one_where_the_gn_model_is_exact_and_the_damping_falls(x64):
    """Least squares on a linear model: G is the Hessian and the quadratic model is the loss, so
    ρ = 1 and every adaptation step multiplies λ by ω = decay**T."""
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.normal(size=(2, 9, 3)))
    ys = jnp.asarray(rng.normal(size=(2, 9, 2)))
    batch = {"x": xs, "y": ys}
    apply_fn = lambda p, mb: mb["x"] @ p["w"] + p["b"]  # noqa: E731
    loss_fn = lambda z, mb: 0.5 * jnp.mean((z - mb["y"]) ** 2)  # noqa: E731
    example = jax.tree.map(lambda a: a[0], batch)
    tx = kfac_adaptive(
        apply_fn,
        loss_fn,
        example,
        initial_damping=0.5,
        damping_adaptation_interval=2,
        damping_adaptation_decay=0.8,
        loss_kind="squared_error",
        estimation_mode="ggn_curvature_prop",
    )
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    state = tx.init(params)
    grad = jax.jit(
        jax.grad(lambda p: jnp.mean(jax.vmap(lambda mb: loss_fn(apply_fn(p, mb), mb))(batch)))
    )
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=batch))
    dampings = []
    for _ in range(4):
        step, state = update(grad(params), state, params)
        params = optax_apply(params, step)
        dampings.append(float(state.damping))
    np.testing.assert_allclose(float(state.metrics["rho"]), 1.0, rtol=1e-8)
    np.testing.assert_allclose(dampings, [0.5, 0.5 * 0.8**2, 0.5 * 0.8**2, 0.5 * 0.8**4], rtol=1e-8)


def optax_apply(params, step):
    return jax.tree.map(jnp.add, params, step)
