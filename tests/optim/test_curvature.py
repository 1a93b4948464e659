"""GN-vector products and the GN model against dense linear algebra (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.optim.gn.curvature import gn_vector_product, linearized_model_eval, loss_hvp


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def mlp_apply(params, batch):
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def cross_entropy(logits, batch):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))


def squared_error(outputs, batch):
    return 0.5 * jnp.mean((outputs - jax.nn.one_hot(batch["y"], outputs.shape[-1])) ** 2)


def setup(seed=0, n=6, d_in=3, hidden=5, d_out=4):
    keys = jax.random.split(jax.random.key(seed), 6)
    params = {
        "w1": jax.random.normal(keys[0], (d_in, hidden)),
        "b1": 0.1 * jax.random.normal(keys[1], (hidden,)),
        "w2": jax.random.normal(keys[2], (hidden, d_out)),
        "b2": 0.1 * jax.random.normal(keys[3], (d_out,)),
    }
    batch = {
        "x": jax.random.normal(keys[4], (n, d_in)),
        "y": jax.random.randint(keys[5], (n,), 0, d_out),
    }
    return params, batch


def dense_terms(params, batch, loss_fn):
    """J (outputs x params), H_z, g_z, L as dense float64 arrays, from basis vectors."""
    flat, unravel = ravel_pytree(params)
    outputs = mlp_apply(params, batch)
    jac = jax.jacobian(lambda f: mlp_apply(unravel(f), batch).reshape(-1))(flat)
    loss_of_flat_z = lambda z: loss_fn(z.reshape(outputs.shape), batch)  # noqa: E731
    hess = jax.hessian(loss_of_flat_z)(outputs.reshape(-1))
    grad = jax.grad(loss_of_flat_z)(outputs.reshape(-1))
    return flat, unravel, np.asarray(jac), np.asarray(hess), np.asarray(grad), loss_of_flat_z


@pytest.mark.parametrize("loss_fn", [cross_entropy, squared_error])
def test_gn_vector_product_equals_dense(loss_fn):
    params, batch = setup()
    flat, unravel, jac, hess, _, _ = dense_terms(params, batch, loss_fn)
    v = jax.random.normal(jax.random.key(1), flat.shape)
    got = ravel_pytree(gn_vector_product(mlp_apply, loss_fn, params, batch, unravel(v)))[0]
    want = jac.T @ hess @ jac @ np.asarray(v)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cross_entropy_output_hessian_is_softmax_covariance():
    params, batch = setup()
    logits = mlp_apply(params, batch)
    u = jax.random.normal(jax.random.key(2), logits.shape)
    _, _, _, hvp = loss_hvp(cross_entropy, logits, batch, u)
    p = jax.nn.softmax(logits)
    n = logits.shape[0]
    want = np.stack([(np.diag(p[i]) - np.outer(p[i], p[i])) @ u[i] / n for i in range(n)])
    np.testing.assert_allclose(hvp, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_fn", [cross_entropy, squared_error])
def test_gn_model_value_and_grad_equal_dense(loss_fn):
    params, batch = setup(seed=3)
    flat, unravel, jac, hess, grad_z, loss_of_z = dense_terms(params, batch, loss_fn)
    delta = 0.3 * np.asarray(jax.random.normal(jax.random.key(4), flat.shape))
    lam = 0.7
    ev = linearized_model_eval(mlp_apply, loss_fn, params, batch, unravel(delta), damping=lam)
    loss_t = float(loss_of_z(mlp_apply(params, batch).reshape(-1)))
    u = jac @ delta
    want_value = loss_t + grad_z @ u + 0.5 * u @ hess @ u + 0.5 * lam * delta @ delta
    want_grad = jac.T @ (grad_z + hess @ u) + lam * delta
    np.testing.assert_allclose(ev.value, want_value, rtol=1e-10)
    np.testing.assert_allclose(ravel_pytree(ev.grad)[0], want_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ev.loss, loss_t, rtol=1e-12)


def test_block_model_is_block_diagonal():
    """Two blocks: gradient = diag(J_1ᵀHJ_1, J_2ᵀHJ_2) Δ + Jᵀg + λΔ."""
    params, batch = setup(seed=5)
    flat, unravel, jac, hess, grad_z, loss_of_z = dense_terms(params, batch, cross_entropy)
    labels = {"w1": "in", "b1": "in", "w2": "out", "b2": "out"}
    in_mask = ravel_pytree(
        jax.tree.map(lambda p, lab: jnp.full(p.shape, lab == "in"), params, labels)
    )[0].astype(bool)
    delta = np.asarray(jax.random.normal(jax.random.key(6), flat.shape))
    gn = jac.T @ hess @ jac
    block = np.where(np.equal.outer(in_mask, in_mask), gn, 0.0)
    ev = linearized_model_eval(
        mlp_apply, cross_entropy, params, batch, unravel(delta), damping=0.2, block_labels=labels
    )
    want_grad = jac.T @ grad_z + block @ delta + 0.2 * delta
    np.testing.assert_allclose(ravel_pytree(ev.grad)[0], want_grad, rtol=1e-10, atol=1e-12)
    loss_t = float(loss_of_z(mlp_apply(params, batch).reshape(-1)))
    want_value = loss_t + grad_z @ jac @ delta + 0.5 * delta @ block @ delta + 0.1 * delta @ delta
    np.testing.assert_allclose(ev.value, want_value, rtol=1e-10)
    assert optax.tree_utils.tree_norm(ev.grad) > 0
