"""Full GN against known minimizers and dense linear algebra (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from experiments.base import get_config
from gnbench.optim import BuildContext, build
from gnbench.optim.gn.builders import _gn_inner_schedule
from gnbench.optim.gn.gauss_newton import gauss_newton, line_search_alphas, with_inner_schedule
from tests.optim.test_curvature import cross_entropy, dense_terms, mlp_apply, setup

METRICS = {
    "true_loss",
    "gn_model_before",
    "gn_model_after",
    "alpha",
    "alpha_min",
    "ls_loss",
    "update_norm",
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def linear_apply(w, batch):
    return batch["x"] @ w


def squares(z, batch):
    return 0.5 * jnp.mean((z - batch["y"]) ** 2)


def least_squares_problem(n=12, d=3, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d))
    return {"x": x, "y": jax.random.normal(ky, (n,))}


def repeat(batch, k):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), batch)


def test_least_squares_lands_on_solution():
    data = least_squares_problem()
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    lr = 1.0 / np.linalg.eigvalsh(x.T @ x / len(y)).max()
    w0 = jnp.array([0.5, -1.0, 2.0])
    tx = gauss_newton(linear_apply, squares, inner=optax.sgd(lr), inner_steps=300)
    updates, state = tx.update(None, tx.init(w0), w0, batch=repeat(data, 300))
    want = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(w0 + updates, want, rtol=1e-8, atol=1e-10)
    # The GN model of a linear least-squares problem is the loss itself.
    np.testing.assert_allclose(state.metrics["gn_model_before"], squares(x @ w0, data), rtol=1e-6)
    np.testing.assert_allclose(state.metrics["gn_model_after"], squares(x @ want, data), rtol=1e-6)


def damped_gn_step(params, batch, lam):
    flat, unravel, jac, hess, grad_z, _ = dense_terms(params, batch, cross_entropy)
    gn = jac.T @ hess @ jac
    step = -np.linalg.solve(gn + lam * np.eye(len(flat)), jac.T @ grad_z)
    return flat, unravel, gn, jac.T @ grad_z, step


def test_mlp_inner_solve_converges_to_damped_gn_step():
    params, batch = setup(seed=1)
    lam = 0.5
    flat, unravel, gn, _, want = damped_gn_step(params, batch, lam)
    lr = 1.0 / (np.linalg.eigvalsh(gn).max() + lam)
    tx = gauss_newton(mlp_apply, cross_entropy, inner=optax.sgd(lr), inner_steps=400, damping=lam)
    updates, _ = tx.update(None, tx.init(params), params, batch=repeat(batch, 400))
    np.testing.assert_allclose(ravel_pytree(updates)[0], want, rtol=1e-7, atol=1e-9)


def test_damping_pulls_toward_theta_t():
    params, batch = setup(seed=2)
    norms = []
    for lam in (0.1, 10.0, 1e4):
        flat, _, gn, grad, _ = damped_gn_step(params, batch, lam)
        lr = 1.0 / (np.linalg.eigvalsh(gn).max() + lam)
        tx = gauss_newton(
            mlp_apply, cross_entropy, inner=optax.sgd(lr), inner_steps=200, damping=lam
        )
        updates, _ = tx.update(None, tx.init(params), params, batch=repeat(batch, 200))
        norms.append(optax.tree_utils.tree_norm(updates))
    assert norms[0] > norms[1] > norms[2] > 0
    # Large λ: the step tends to −∇L/λ.
    np.testing.assert_allclose(ravel_pytree(updates)[0] * 1e4, -grad, rtol=1e-3, atol=1e-4)


def ls_setup(loss_fn, k=4, n_alpha=6):
    data = least_squares_problem(seed=3)
    lr = 1.0 / np.linalg.eigvalsh(np.asarray(data["x"].T @ data["x"]) / 12).max()
    tx = gauss_newton(
        linear_apply,
        loss_fn,
        inner=optax.sgd(lr),
        inner_steps=k,
        line_search=line_search_alphas(n_alpha),
    )
    return data, tx


def test_line_search_picks_lowest_true_loss():
    data, tx = ls_setup(squares, k=50)
    ls_data = least_squares_problem(seed=4)
    w0 = jnp.zeros(3)
    state = tx.init(w0)
    updates, state = tx.update(None, state, w0, batch=repeat(data, 50), ls_batch=repeat(ls_data, 3))
    direction = state.inner_params - w0
    alphas = line_search_alphas(6)
    losses = [float(squares(ls_data["x"] @ (w0 + a * direction), ls_data)) for a in alphas]
    best = int(np.argmin(losses))
    assert best > 0, "the test wants a case where alpha=1 is not the best"
    np.testing.assert_allclose(state.metrics["alpha"], alphas[best], rtol=1e-6)
    np.testing.assert_allclose(state.metrics["alpha_min"], alphas[-1], rtol=1e-6)
    np.testing.assert_allclose(state.metrics["ls_loss"], losses[best], rtol=1e-6)
    np.testing.assert_allclose(updates, alphas[best] * direction, rtol=1e-12)


def test_line_search_never_picks_a_non_finite_loss():
    # The loss is +inf wherever an output leaves [-c, c]; the full step leaves it.
    def capped(z, batch):
        return squares(z, batch) + jnp.where(jnp.max(jnp.abs(z)) > batch["cap"], jnp.inf, 0.0)

    data, tx = ls_setup(capped, k=50)
    w0 = jnp.zeros(3)
    state = tx.init(w0)
    data = {**data, "cap": jnp.asarray(1e9)}
    _, state = tx.update(None, state, w0, batch=repeat(data, 50), ls_batch=repeat(data, 2))
    full_step_max = float(jnp.max(jnp.abs(data["x"] @ state.inner_params)))
    ls_data = {**data, "cap": jnp.asarray(0.6 * full_step_max)}
    state = tx.init(w0)
    updates, state = tx.update(None, state, w0, batch=repeat(data, 50), ls_batch=repeat(ls_data, 2))
    alpha = float(state.metrics["alpha"])
    assert 0 < alpha <= 0.6
    assert np.isfinite(state.metrics["ls_loss"])
    assert bool(jnp.all(jnp.isfinite(updates)))
    # Nothing finite at all: no step, and the next solve is cold-started.
    nan_data = {**data, "y": jnp.full_like(data["y"], jnp.nan)}
    updates, state = tx.update(
        None, state, w0, batch=repeat(data, 50), ls_batch=repeat(nan_data, 2)
    )
    assert float(state.metrics["alpha"]) == 0.0
    assert np.isnan(state.metrics["ls_loss"])
    np.testing.assert_array_equal(updates, 0.0)
    np.testing.assert_array_equal(state.inner_params, w0)


@pytest.mark.parametrize("warm_start", [True, False])
def test_warm_and_cold_start(warm_start):
    """Inner steps move only during the first outer step (lr 0 afterwards), so the second
    outer step returns exactly where its inner solve started."""
    k = 5
    data = least_squares_problem(seed=5)
    inner = with_inner_schedule(optax.adam(1.0), lambda s: jnp.where(s < k, 0.05, 0.0))
    tx = gauss_newton(linear_apply, squares, inner=inner, inner_steps=k, warm_start=warm_start)
    w0 = jnp.zeros(3)
    updates, state = tx.update(None, tx.init(w0), w0, batch=repeat(data, k))
    theta_hat = w0 + updates
    w1 = w0 + 0.5 * updates  # as if a line search had chosen α = 1/2
    updates2, state2 = tx.update(None, state, w1, batch=repeat(data, k))
    assert int(state2.inner_step) == 2 * k  # the schedule's step is never reset
    assert float(state2.metrics["inner_learning_rate"]) == 0.0
    adam_count = int(optax.tree_utils.tree_get(state2.inner_state, "count"))
    if warm_start:  # starts at the previous inner solution itself, inner state kept
        np.testing.assert_allclose(w1 + updates2, theta_hat, rtol=1e-12)
        assert adam_count == 2 * k
    else:  # starts at θ_t with a fresh inner optimizer
        np.testing.assert_array_equal(updates2, 0.0)
        assert adam_count == k


def test_outer_step_compiles_once_and_reports_finite_metrics():
    params, batch = setup(seed=6)
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)  # float32 under x64
    k = 3
    tx = gauss_newton(
        mlp_apply,
        cross_entropy,
        inner=optax.adam(1e-2),
        inner_steps=k,
        damping=1e-3,
        line_search=line_search_alphas(4),
    )
    traces = []

    @jax.jit
    def step(params, state, batch, ls_batch):
        traces.append(1)
        updates, state = tx.update(None, state, params, batch=batch, ls_batch=ls_batch)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state, repeat(batch, k), repeat(batch, 2))
    assert len(traces) == 1
    assert set(state.metrics) == METRICS
    for name, value in state.metrics.items():
        assert value.dtype == jnp.float32 and value.shape == (), name
        assert np.isfinite(value), name
    assert jax.tree.map(lambda p: p.dtype, params) == jax.tree.map(lambda p: jnp.float32, params)
    assert float(state.metrics["gn_model_after"]) < float(state.metrics["true_loss"]) + 1e-3


def gn_config(name, **gn):
    cfg = get_config().optimizer
    cfg.name = name
    for key, value in gn.items():
        cfg.gn[key] = value
    return cfg


def test_registry_builders_declare_line_search_data_and_need_model():
    k = 3
    ctx = BuildContext(total_steps=10, micro_batches=k, apply_fn=linear_apply, loss_fn=squares)
    for name in ("gauss_newton", "gn_prox_linear", "layerwise_gn", "layerwise_prox_linear"):
        cfg = gn_config(name, line_search=4)
        opt = build(cfg, ctx)
        assert opt.ls_micro_batches == k and opt.fresh_ls_micro_batches == k
        assert not opt.reads_grads
        assert opt.hparams["inner_steps"] == k and opt.hparams["line_search"] == 4
        reuse = build(gn_config(name, line_search=4, line_search_data="inner"), ctx)
        assert reuse.ls_reuses_batch and reuse.fresh_ls_micro_batches == 0
        assert build(gn_config(name, line_search=0), ctx).ls_micro_batches == 0
        with pytest.raises(ValueError, match="'fresh', 'inner'"):
            build(gn_config(name, line_search_data="old"), ctx)
        with pytest.raises(ValueError, match="apply_fn"):
            build(cfg, BuildContext(total_steps=10, micro_batches=k))


@pytest.mark.parametrize("kind", ["global_cosine", "cosine_per_outer", "constant"])
def test_inner_schedule_runs_over_inner_steps(kind):
    k, total, peak = 4, 5, 1e-2
    g = gn_config(
        "gauss_newton", inner_schedule=kind, inner_learning_rate=peak, inner_warmup_steps=0
    ).gn
    lr = _gn_inner_schedule(g, BuildContext(total_steps=total, micro_batches=k))
    values = np.array([float(lr(s)) if callable(lr) else lr for s in range(total * k)])
    if kind == "constant":
        np.testing.assert_allclose(values, peak)
    elif kind == "global_cosine":  # one decay over all T*K inner steps, to 10% of peak
        np.testing.assert_allclose(values[0], peak)
        assert np.all(np.diff(values) < 0)
        np.testing.assert_allclose(
            values[-1],
            peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (total * k - 1) / (total * k)))),
            rtol=1e-5,
        )
    else:  # peak at the start of every outer step, cosine inside it
        within = peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.arange(k) / k)))
        np.testing.assert_allclose(values, np.tile(within, total), rtol=1e-5)


@pytest.mark.parametrize("name", ["gauss_newton", "layerwise_gn"])
def test_registry_muon_inner_runs(name):
    k = 2
    params = {
        "embed": {"embedding": 0.1 * jnp.ones((5, 4))},
        "block_0": {"w": jnp.eye(4) + 0.01 * jnp.arange(16.0).reshape(4, 4)},
        "head": {"kernel": 0.1 * jnp.ones((4, 5))},
    }

    def apply_fn(p, tokens):
        h = p["embed"]["embedding"][tokens[:, :-1]]
        return jnp.tanh(h @ p["block_0"]["w"]) @ p["head"]["kernel"]

    def loss_fn(logits, tokens):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    ctx = BuildContext(total_steps=4, micro_batches=k, apply_fn=apply_fn, loss_fn=loss_fn)
    opt = build(
        gn_config(
            name,
            inner="muon",
            inner_learning_rate=0.02,
            line_search=2,
            inner_schedule="constant",
            inner_warmup_steps=0,
        ),
        ctx,
    )
    tokens = jax.random.randint(jax.random.key(0), (k, 3, 6), 0, 5)
    state = opt.tx.init(params)
    updates, state = jax.jit(lambda p, s: opt.tx.update(None, s, p, batch=tokens, ls_batch=tokens))(
        params, state
    )
    assert all(np.isfinite(v) for v in state.metrics.values())
    np.testing.assert_allclose(state.metrics["inner_learning_rate"], 0.02, rtol=1e-6)
    assert float(state.metrics["ls_loss"]) < float(state.metrics["true_loss"])
