"""K-FAC (through kfac-jax): one preconditioned direction against the dense damped Kronecker solve
(A ⊗ S + λI)⁻¹ g, with A and S computed independently in NumPy (float64), and the layer table."""

import flax.linen as flax_linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnbench.optim.approx_gn.kfac import format_layer_table, kfac, layer_table, scale_by_kfac

N, D, H, V = 7, 3, 4, 5
LAM = 0.05


class _MLP(flax_linen.Module):
    @flax_linen.compact
    def __call__(self, x):
        h = flax_linen.Dense(H, name="hidden")(x)
        return flax_linen.Dense(V, name="out")(jnp.tanh(h))


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _problem():
    model = _MLP()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(N, D)))
    params = model.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda p: p + 0.3 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
    return (lambda p, b: model.apply({"params": p}, b)), params, x


def _dense_direction(apply_fn, params, x, grads, factored=False):
    """(A ⊗ S + λI)⁻¹ g per dense layer, A = mean x̃x̃ᵀ, S = mean J_yᵀ H_n J_y (NumPy).

    ``factored``: Martens and Grosse's factored Tikhonov damping instead,
    ((A + π√λ I) ⊗ (S + √λ/π I))⁻¹ g with π² = (tr A / dim A) / (tr S / dim S) (their eq. 11
    with the trace norm), applied as Â⁻¹ G Ŝ⁻¹.
    """
    w1, b1 = np.asarray(params["hidden"]["kernel"]), np.asarray(params["hidden"]["bias"])
    w2, b2 = np.asarray(params["out"]["kernel"]), np.asarray(params["out"]["bias"])
    xs = np.asarray(x)
    y1 = xs @ w1 + b1
    a1 = np.tanh(y1)
    z = a1 @ w2 + b2
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    hess = [np.diag(pn) - np.outer(pn, pn) for pn in p]  # ∇²_z CE for each position
    # Output layer: y = z, so S = mean H_n. Hidden layer: J_y = ∂z/∂y1 = W2ᵀ diag(1 - a1²).
    s_out = np.mean(hess, axis=0)
    s_hid = np.mean(
        [(w2.T * (1 - a1[n] ** 2)).T @ hess[n] @ (w2.T * (1 - a1[n] ** 2)) for n in range(N)],
        axis=0,
    )
    out = {}
    for name, inputs, s in (("hidden", xs, s_hid), ("out", a1, s_out)):
        xt = np.concatenate([inputs, np.ones((N, 1))], axis=1)
        a = xt.T @ xt / N
        g = np.concatenate(
            [np.asarray(grads[name]["kernel"]), np.asarray(grads[name]["bias"])[None]], axis=0
        )
        if factored:
            pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(s) / len(s)))
            a_hat = a + pi * np.sqrt(LAM) * np.eye(len(a))
            s_hat = s + np.sqrt(LAM) / pi * np.eye(len(s))
            d = np.linalg.solve(a_hat, g) @ np.linalg.inv(s_hat)
        else:
            d = np.linalg.solve(np.kron(a, s) + LAM * np.eye(a.shape[0] * s.shape[0]), g.ravel())
            d = d.reshape(g.shape)
        out[name] = {"kernel": d[:-1], "bias": d[-1]}
    return out


def test_direction_equals_the_dense_damped_kronecker_solve(x64):
    apply_fn, params, x = _problem()
    tx = scale_by_kfac(apply_fn, x, damping=LAM, estimation_mode="ggn_exact")
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    direction, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=x[None]))(
        grads, tx.init(params), params
    )
    expected = _dense_direction(apply_fn, params, x, grads)
    for name in ("hidden", "out"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(direction[name][leaf], expected[name][leaf], rtol=1e-9)
    # Power of the check: the plain gradient and the undamped-free scaling differ from it.
    assert not np.allclose(grads["out"]["kernel"], expected["out"]["kernel"], rtol=1e-2)


def test_factored_damping_equals_the_dense_pi_adjusted_solve(x64):
    """exact_inverses=False (what the ladder runs) is classic K-FAC's factored damping, which
    is not the damped block's inverse: the check tells the two apart."""
    apply_fn, params, x = _problem()
    tx = scale_by_kfac(apply_fn, x, damping=LAM, estimation_mode="ggn_exact", exact_inverses=False)
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    direction, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=x[None]))(
        grads, tx.init(params), params
    )
    expected = _dense_direction(apply_fn, params, x, grads, factored=True)
    exact = _dense_direction(apply_fn, params, x, grads)
    for name in ("hidden", "out"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(direction[name][leaf], expected[name][leaf], rtol=1e-9)
    assert not np.allclose(expected["out"]["kernel"], exact["out"]["kernel"], rtol=1e-2)


def test_inverses_refresh_every_inverse_update_period_steps(x64):
    """Between refreshes the last inverses are reused while the factors keep averaging: with
    period 3, steps 1 and 2 precondition with step 0's inverses (the direction is linear in g),
    step 3 with fresh ones."""
    apply_fn, params, x = _problem()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    x2 = 1.7 * x[::-1]  # Other inputs: other factors from step 1 on.
    tx = scale_by_kfac(
        apply_fn, x, damping=LAM, estimation_mode="ggn_exact", inverse_update_period=3
    )
    step = jax.jit(lambda s, b: tx.update(grads, s, params, batch=b[None]))
    d0, state = step(tx.init(params), x)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731
    dirs = [d0]
    for _ in range(3):
        d, state = step(state, x2)
        dirs.append(d)
    np.testing.assert_allclose(flat(dirs[1]), flat(d0), rtol=1e-12)
    np.testing.assert_allclose(flat(dirs[2]), flat(d0), rtol=1e-12)
    assert not np.allclose(flat(dirs[3]), flat(d0), rtol=1e-3)
    with pytest.raises(ValueError, match="inverse_update_period"):
        scale_by_kfac(apply_fn, x, inverse_update_period=0)


def test_sampled_fisher_averages_to_the_same_factors(x64):
    """fisher_gradients (sampled labels, the default) is unbiased: factor EMAs over many steps
    approach the exact-mode direction."""
    apply_fn, params, x = _problem()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    exact = scale_by_kfac(apply_fn, x, damping=LAM, estimation_mode="ggn_exact")
    sampled = scale_by_kfac(apply_fn, x, damping=LAM, curvature_ema=0.999)
    d_exact, _ = exact.update(grads, exact.init(params), params, batch=x[None])
    step = jax.jit(lambda s: sampled.update(grads, s, params, batch=x[None]))
    state = sampled.init(params)
    for _ in range(400):
        d_sampled, state = step(state)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731
    err = np.linalg.norm(flat(d_sampled) - flat(d_exact)) / np.linalg.norm(flat(d_exact))
    assert err < 0.1, err


def test_kfac_update_is_lr_times_momentum_of_the_direction(x64):
    apply_fn, params, x = _problem()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    pre = scale_by_kfac(apply_fn, x, damping=LAM, estimation_mode="ggn_exact")
    tx = kfac(apply_fn, 0.1, x, damping=LAM, momentum=0.5, estimation_mode="ggn_exact")
    d, _ = pre.update(grads, pre.init(params), params, batch=x[None])
    u, _ = tx.update(grads, tx.init(params), params, batch=x[None])
    np.testing.assert_allclose(
        jax.flatten_util.ravel_pytree(u)[0], -0.1 * jax.flatten_util.ravel_pytree(d)[0], rtol=1e-12
    )


def test_state_is_plain_containers():
    apply_fn, params, x = _problem()
    state = kfac(apply_fn, 0.1, x).init(params)
    for path, _ in jax.tree_util.tree_leaves_with_path(state):
        for key in path:
            assert not isinstance(key, jax.tree_util.DictKey) or isinstance(key.key, str), path


def test_layer_table_on_the_gnbench_transformer():
    from gnbench.model import CONFIGS, apply, init_params

    cfg = CONFIGS["tiny"]
    seq = jnp.zeros((2, 9), jnp.int32)
    params = init_params(cfg, jax.random.key(0))
    rows = layer_table(lambda p, s: apply(cfg, p, s[:, :-1]), params, seq)
    blocks = {path: block for path, _, block in rows}
    assert len(rows) == len(jax.tree.leaves(params))
    dense = [p for p in blocks if "kernel" in p]
    assert dense and all("Kronecker" in blocks[p] for p in dense), blocks
    assert any("Diagonal" in b for b in blocks.values())
    text = format_layer_table(rows)
    assert text.count("\n") == len(rows) - 1


def test_gn_with_kfac_inner_estimates_curvature_at_theta_t(x64):
    """gn.inner='kfac' through the registry: the first inner step's direction is the K-FAC
    solve of the GN model's gradient with factors at θ_t (checked against the dense solve)."""
    from experiments.base import get_config
    from gnbench.optim import BuildContext, build

    apply_fn, params, x = _problem()
    y = jnp.asarray(np.random.default_rng(1).integers(0, V, size=N))

    def loss_fn(logits, mb):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    cfg = get_config().optimizer
    cfg.name, cfg.gn.inner = "gauss_newton", "kfac"
    cfg.gn.inner_schedule, cfg.gn.inner_warmup_steps = "constant", 0
    cfg.gn.inner_learning_rate, cfg.gn.line_search = 0.1, 0
    cfg.kfac.damping, cfg.kfac.momentum, cfg.kfac.estimation_mode = LAM, 0.0, "ggn_exact"
    ctx = BuildContext(10, 1, apply_fn, loss_fn, example_micro_batch=x)
    opt = build(cfg, ctx)
    updates, _ = opt.tx.update(None, opt.tx.init(params), params, batch=x[None])
    grads = jax.grad(lambda p: loss_fn(apply_fn(p, x), x))(params)  # ∇q(0) = ∇L(θ_t)
    expected = _dense_direction(apply_fn, params, x, grads)
    for name in ("hidden", "out"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(
                updates[name][leaf], -0.1 * expected[name][leaf], rtol=1e-8, atol=1e-12
            )


def test_a_fresh_transform_updates_a_state_another_one_initialized(x64):
    """A restored state (e.g. in a resumed process) meets a transform whose init never ran."""
    apply_fn, params, x = _problem()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)

    def make():
        return scale_by_kfac(apply_fn, x, damping=LAM, estimation_mode="ggn_exact")

    first = make()
    want, _ = first.update(grads, first.init(params), params, batch=x[None])
    got, _ = make().update(grads, first.init(params), params, batch=x[None])
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731
    np.testing.assert_allclose(flat(got), flat(want), rtol=1e-12)


def _gn_kfac(refresh: str, k: int, **kfac_settings):
    """GN with a K-FAC inner solver through the registry, on :func:`_problem` (lr 0.1, no
    momentum, no line search, exact GGN factors) and its fixed labels."""
    from experiments.base import get_config
    from gnbench.optim import BuildContext, build

    apply_fn, params, x = _problem()
    y = jnp.asarray(np.random.default_rng(1).integers(0, V, size=N))

    def loss_fn(logits, mb):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    cfg = get_config().optimizer
    cfg.name, cfg.gn.inner, cfg.gn.inner_kfac_refresh = "gauss_newton", "kfac", refresh
    cfg.gn.inner_schedule, cfg.gn.inner_warmup_steps = "constant", 0
    cfg.gn.inner_learning_rate, cfg.gn.line_search = 0.1, 0
    cfg.kfac.damping, cfg.kfac.momentum, cfg.kfac.estimation_mode = LAM, 0.0, "ggn_exact"
    cfg.kfac.update(kfac_settings)
    opt = build(cfg, BuildContext(10, k, apply_fn, loss_fn, example_micro_batch=x))
    return opt, apply_fn, loss_fn, params, x


@pytest.mark.slow
def test_gn_kfac_refreshed_per_outer_step_uses_the_factors_of_its_first_micro_batch(x64):
    """gn.inner_kfac_refresh='outer': both inner steps of a K=2 outer step are preconditioned by
    the factors of micro-batch 1 at θ_t; step 2's GN gradient (on micro-batch 2, at Δ₁) is built
    from dense Jacobians and the dense softmax Hessian, the solves from NumPy's factors."""
    from jax.flatten_util import ravel_pytree

    opt, apply_fn, loss_fn, params, x = _gn_kfac("outer", 2)
    x2 = 1.7 * x[::-1]
    batch = jnp.stack([x, x2])
    updates, _ = jax.jit(lambda s: opt.tx.update(None, s, params, batch=batch))(opt.tx.init(params))

    flat, unravel = ravel_pytree(params)
    grads1 = jax.grad(lambda p: loss_fn(apply_fn(p, x), x))(params)  # ∇q₁(0) = ∇L₁(θ_t)
    step1 = -0.1 * ravel_pytree(_dense_direction(apply_fn, params, x, grads1))[0]
    logits2 = apply_fn(params, x2)
    jac = np.asarray(jax.jacobian(lambda v: apply_fn(unravel(v), x2).ravel())(flat))
    hess = np.asarray(jax.hessian(lambda z: loss_fn(z.reshape(logits2.shape), x2))(logits2.ravel()))
    grad_l2 = np.asarray(ravel_pytree(jax.grad(lambda p: loss_fn(apply_fn(p, x2), x2))(params))[0])
    grads2 = unravel(jnp.asarray(grad_l2 + jac.T @ hess @ jac @ np.asarray(step1)))
    step2 = -0.1 * ravel_pytree(_dense_direction(apply_fn, params, x, grads2))[0]
    np.testing.assert_allclose(ravel_pytree(updates)[0], step1 + step2, rtol=1e-8, atol=1e-12)

    # Power: refreshed at every inner step, step 2 uses micro-batch 2's factors too.
    opt_inner, *_ = _gn_kfac("inner", 2)
    per_step, _ = opt_inner.tx.update(None, opt_inner.tx.init(params), params, batch=batch)
    assert not np.allclose(ravel_pytree(per_step)[0], step1 + step2, rtol=1e-3)


def test_gn_kfac_refresh_settings_are_checked():
    with pytest.raises(ValueError, match="inner_kfac_refresh 'sometimes'; valid: outer, inner"):
        _gn_kfac("sometimes", 1)
    with pytest.raises(ValueError, match="inverse_update_period must be 1, got 3"):
        _gn_kfac("outer", 1, inverse_update_period=3)


def test_a_kfac_step_lowers_to_one_program_every_time():
    """kfac_compat orders kfac-jax's layer-tag inputs: without it, jaxpr variables hashed by
    address reorder the step's operations from one lowering to the next (seen: 4 programs out
    of 4), so no K-FAC run ever hit the persistent compilation cache."""
    import builtins
    import hashlib

    from kfac_jax._src import tracer

    from gnbench.optim.approx_gn import kfac_compat

    class Deep(flax_linen.Module):
        @flax_linen.compact
        def __call__(self, x):
            for i in range(4):
                x = jnp.tanh(flax_linen.Dense(6, name=f"d{i}")(x))
            return flax_linen.Dense(V, name="out")(x)

    model, x = Deep(), jnp.ones((N, D))
    params = model.init(jax.random.key(0), x)["params"]

    def program() -> str:
        tx = scale_by_kfac(lambda p, b: model.apply({"params": p}, b), x, exact_inverses=False)
        update = jax.jit(lambda s: tx.update(params, s, params, batch=x[None]))
        return hashlib.sha256(update.lower(tx.init(params)).as_text().encode()).hexdigest()

    kfac_compat.apply()
    assert kfac_compat.needs_ordered_sets() and tracer.set is kfac_compat.InsertionOrderedSet
    assert len({program() for _ in range(3)}) == 1
    try:  # Power: kfac-jax's own set gives a new program nearly every time.
        tracer.set = builtins.set
        assert len({program() for _ in range(4)}) > 1
    finally:
        tracer.set = kfac_compat.InsertionOrderedSet
