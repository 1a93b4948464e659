"""Diagonal GN: the sampled estimator against the dense diagonal of Jᵀ H_z J, and the update rule
against a NumPy recurrence (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnbench.optim.approx_gn.diag_gn import diag_gn, diag_gn_estimate, softmax_cotangent

V, D, H, N = 5, 3, 4, 6  # vocabulary, input width, hidden width, positions


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _model(params, x):
    """A two-layer tanh MLP producing logits (N, V): curvature that is not block-trivial."""
    return jnp.tanh(x @ params["w1"]) @ params["w2"] + params["b"]


def _problem():
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(D, H))),
        "w2": jnp.asarray(rng.normal(size=(H, V))),
        "b": jnp.asarray(rng.normal(size=(V,)) * 0.3),
    }
    return params, jnp.asarray(rng.normal(size=(N, D)))


def _dense_gn_diagonal(params, x):
    """diag(Jᵀ H_z J) with J the dense Jacobian and H_z the mean-CE Hessian, both explicit."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = np.asarray(jax.jacobian(lambda f: _model(unravel(f), x).reshape(-1))(flat))
    probs = np.asarray(jax.nn.softmax(_model(params, x), axis=-1))
    h = np.zeros((N * V, N * V))
    for n in range(N):
        p = probs[n]
        h[n * V : (n + 1) * V, n * V : (n + 1) * V] = (np.diag(p) - np.outer(p, p)) / N
    g = jac.T @ h @ jac
    return np.diag(g), unravel


def test_softmax_cotangent_covariance_is_the_output_hessian(x64):
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, V)))
    keys = jax.random.split(jax.random.key(0), 200_000)
    r = np.asarray(jax.vmap(lambda k: softmax_cotangent(logits, k))(keys)).reshape(-1, 2 * V)
    cov = r.T @ r / len(r)
    p = np.asarray(jax.nn.softmax(logits, axis=-1))
    expected = np.zeros((2 * V, 2 * V))
    for n in range(2):
        expected[n * V : (n + 1) * V, n * V : (n + 1) * V] = (
            np.diag(p[n]) - np.outer(p[n], p[n])
        ) / 2
    np.testing.assert_allclose(cov, expected, atol=3e-3)


def test_estimator_mean_is_the_exact_gn_diagonal(x64):
    params, x = _problem()
    exact, unravel = _dense_gn_diagonal(params, x)
    samples = 20_000
    keys = jax.random.split(jax.random.key(3), samples)
    est = jax.vmap(lambda k: diag_gn_estimate(_model, params, x, k))(keys)
    flat = np.asarray(jax.vmap(lambda e: jax.flatten_util.ravel_pytree(e)[0])(est))
    mean, stderr = flat.mean(0), flat.std(0) / np.sqrt(samples)
    # Monte-Carlo tolerance: 5 standard errors per coordinate (plus float round-off).
    assert np.all(np.abs(mean - exact) <= 5 * stderr + 1e-12), np.max(np.abs(mean - exact) / stderr)
    # The check has power: the estimate is not a scaled or squared-gradient look-alike.
    assert np.max(np.abs(mean - exact) / exact) < 0.05
    grad = jax.flatten_util.ravel_pytree(
        jax.grad(lambda p: -jnp.mean(jax.nn.log_softmax(_model(p, x))[:, 0]))(params)
    )[0]
    assert np.max(np.abs(N * np.asarray(grad) ** 2 - exact) / exact) > 0.5


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_update_follows_the_ema_recurrence(x64, power):
    params, x = _problem()
    b1, b2, damping, lr, wd = 0.9, 0.95, 1e-3, 0.05, 0.1
    tx = diag_gn(_model, lr, b1=b1, b2=b2, damping=damping, power=power, weight_decay=wd)
    state = tx.init(params)
    batch = x[None]  # K=1 micro-batch
    m = h = 0.0
    nu_prev = jax.flatten_util.ravel_pytree(params)[0] * 0
    for t in range(1, 4):
        grads = jax.tree.map(lambda p, t=t: jnp.sin(p * t), params)
        updates, state = tx.update(grads, state, params, batch=batch)
        g = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        nu = np.asarray(jax.flatten_util.ravel_pytree(state[0].nu)[0])
        estimate = (nu - b2 * np.asarray(nu_prev)) / (1 - b2)  # this step's sample, from the state
        assert np.all(estimate >= 0)
        nu_prev = nu
        m = b1 * m + (1 - b1) * g
        h = b2 * h + (1 - b2) * estimate
        m_hat, h_hat = m / (1 - b1**t), h / (1 - b2**t)
        theta = np.asarray(jax.flatten_util.ravel_pytree(params)[0])
        expected = -lr * (m_hat / (h_hat + damping) ** power + wd * theta)
        got = np.asarray(jax.flatten_util.ravel_pytree(updates)[0])
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
        params = jax.tree.map(jnp.add, params, updates)


def test_first_step_estimate_is_one_sample_at_the_current_params(x64):
    params, x = _problem()
    tx = diag_gn(_model, 0.1, b2=0.0)
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params, batch=x[None])
    nu = jax.flatten_util.ravel_pytree(state[0].nu)[0]
    # The transform draws its sample with a key split from its seed: reproduce it directly.
    _, sub = jax.random.split(jax.random.key(0))
    (key,) = jax.random.split(sub, 1)
    direct = jax.flatten_util.ravel_pytree(diag_gn_estimate(_model, params, x, key))[0]
    np.testing.assert_allclose(nu, direct, rtol=1e-12)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="power must be in"):
        diag_gn(_model, 0.1, power=2.0)
    with pytest.raises(ValueError, match="damping must be > 0"):
        diag_gn(_model, 0.1, damping=0.0)
    tx = diag_gn(_model, 0.1)
    params, x = _problem()
    with pytest.raises(ValueError, match="batch="):
        tx.update(params, tx.init(params), params)


def test_curvature_over_k_micro_batches_is_their_mean_estimate_and_unbiased(x64):
    """With ``curvature_micro_batches=K`` the diagonal averages one sampled estimate per
    micro-batch (as the gradient averages K gradients), whose mean is the dense GN diagonal
    averaged over the K micro-batches."""
    params, _ = _problem()
    k = 3
    xs = jnp.asarray(np.random.default_rng(7).normal(size=(k, N, D)))
    tx = diag_gn(_model, 0.1, b2=0.0, curvature_micro_batches=k)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params, batch=xs)
    nu = np.asarray(jax.flatten_util.ravel_pytree(state[0].nu)[0])
    _, sub = jax.random.split(jax.random.key(0))
    keys = jax.random.split(sub, k)
    per_mb = [
        jax.flatten_util.ravel_pytree(diag_gn_estimate(_model, params, xs[i], keys[i]))[0]
        for i in range(k)
    ]
    np.testing.assert_allclose(nu, np.mean(per_mb, axis=0), rtol=1e-12)
    # Unbiased for the K micro-batches' mean dense diagonal (Monte Carlo, 5 standard errors).
    exact = np.mean([_dense_gn_diagonal(params, xs[i])[0] for i in range(k)], axis=0)
    samples = 8_000
    draws = jax.random.split(jax.random.key(11), (samples, k))

    def averaged(ks):
        ests = [
            jax.flatten_util.ravel_pytree(diag_gn_estimate(_model, params, xs[i], ks[i]))[0]
            for i in range(k)
        ]
        return sum(ests) / k

    flat = np.asarray(jax.vmap(averaged)(draws))
    mean, stderr = flat.mean(0), flat.std(0) / np.sqrt(samples)
    assert np.all(np.abs(mean - exact) <= 5 * stderr + 1e-12)
    # One micro-batch's diagonal is not the K-batch mean: the test can tell them apart.
    assert np.max(np.abs(_dense_gn_diagonal(params, xs[0])[0] - exact) / exact) > 0.05
