"""Layerwise GN against the dense block-diagonal solve, and against full GN with one block;
its staged path (one shared forward, :mod:`gnbench.optim.gn.staged`) against the generic one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.model import apply, get_model_config, init_params
from gnbench.model.transformer import stages
from gnbench.optim.gn.curvature import linearized_model_eval
from gnbench.optim.gn.gauss_newton import gauss_newton, line_search_alphas
from gnbench.optim.gn.layerwise import layerwise_gauss_newton, transformer_blocks
from gnbench.optim.gn.prox_linear import gn_prox_linear, prox_linear_output_rule
from gnbench.optim.gn.staged import StagedModel, staged_model_eval
from tests.optim.test_curvature import cross_entropy, dense_terms, mlp_apply, setup
from tests.optim.test_gauss_newton import repeat

MLP_BLOCKS = {"w1": "in", "b1": "in", "w2": "out", "b2": "out"}
# mlp_apply as two stages, one per block of MLP_BLOCKS.
MLP_STAGED = StagedModel(
    inputs=lambda batch: batch["x"],
    stages=(
        ("in", lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"])),
        ("out", lambda p, h: h @ p["w2"] + p["b2"]),
    ),
)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("staged", [None, MLP_STAGED], ids=["generic", "staged"])
def test_equals_dense_block_diagonal_solve(staged):
    params, batch = setup(seed=11)
    lam = 0.5
    flat, _, jac, hess, grad_z, _ = dense_terms(params, batch, cross_entropy)
    in_mask = ravel_pytree(
        jax.tree.map(lambda p, lab: jnp.full(p.shape, lab == "in"), params, MLP_BLOCKS)
    )[0].astype(bool)
    gn = jac.T @ hess @ jac
    block_gn = np.where(np.equal.outer(in_mask, in_mask), gn, 0.0)
    want = -np.linalg.solve(block_gn + lam * np.eye(len(flat)), jac.T @ grad_z)
    lr = 1.0 / (np.linalg.eigvalsh(block_gn).max() + lam)
    tx = layerwise_gauss_newton(
        mlp_apply,
        cross_entropy,
        blocks=lambda p: MLP_BLOCKS,
        inner=optax.sgd(lr),
        inner_steps=400,
        damping=lam,
        staged=staged,
    )
    updates, state = tx.update(None, tx.init(params), params, batch=repeat(batch, 400))
    np.testing.assert_allclose(ravel_pytree(updates)[0], want, rtol=1e-7, atol=1e-9)
    assert set(state.inner_state.inner_states) == {"in", "out"}  # one inner state per block
    # ... and it is not full GN: the cross-block curvature matters here.
    full = -np.linalg.solve(gn + lam * np.eye(len(flat)), jac.T @ grad_z)
    assert np.linalg.norm(full - want) > 1e-3 * np.linalg.norm(want)


@pytest.mark.parametrize(
    "objective, full_gn", [("gn", gauss_newton), ("prox_linear", gn_prox_linear)]
)
def test_one_block_equals_full_method(objective, full_gn):
    params, batch = setup(seed=12)
    k = 4
    batches = jax.tree.map(lambda a: jnp.stack([jnp.roll(a, i, axis=0) for i in range(k)]), batch)
    kwargs = dict(
        inner=optax.adam(3e-2), inner_steps=k, damping=1e-2, line_search=line_search_alphas(3)
    )
    one_block = layerwise_gauss_newton(
        mlp_apply,
        cross_entropy,
        objective=objective,
        blocks=lambda p: jax.tree.map(lambda _: "all", p),
        **kwargs,
    )
    full = full_gn(mlp_apply, cross_entropy, **kwargs)
    p1, p2, s1, s2 = params, params, one_block.init(params), full.init(params)
    for _ in range(2):  # two outer steps: the warm start is compared too
        u1, s1 = one_block.update(None, s1, p1, batch=batches, ls_batch=batches)
        u2, s2 = full.update(None, s2, p2, batch=batches, ls_batch=batches)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        np.testing.assert_allclose(ravel_pytree(u1)[0], ravel_pytree(u2)[0], rtol=1e-12, atol=1e-15)
        for name in s2.metrics:
            np.testing.assert_allclose(s1.metrics[name], s2.metrics[name], rtol=1e-6)


def test_transformer_blocks_on_tiny_model():
    cfg = get_model_config("tiny")
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    labels = transformer_blocks(params)
    names = set(jax.tree.leaves(labels))
    assert len(names) == cfg.n_layers + 2
    assert names == {"embed", "head", *(f"block_{i}" for i in range(cfg.n_layers))}
    last = f"block_{cfg.n_layers - 1}"
    assert set(jax.tree.leaves(labels["final_norm"])) == {last}
    assert set(jax.tree.leaves(labels["block_0"])) == {"block_0"}
    # Any other model: one block per top-level entry.
    assert transformer_blocks({"dense_0": {"w": 1, "b": 2}, "dense_1": 3}) == {
        "dense_0": {"w": "dense_0", "b": "dense_0"},
        "dense_1": "dense_1",
    }


@pytest.mark.slow
def test_layerwise_step_on_small_transformer():
    """Smoke test on the gnbench model (shrunk): finite metrics, a lower true loss."""
    cfg = get_model_config("tiny", d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=32)
    params = init_params(cfg, jax.random.key(0))
    apply_fn = lambda p, seqs: apply(cfg, p, seqs[:, :-1])  # noqa: E731

    def loss_fn(logits, seqs):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, seqs[:, 1:, None], -1))

    k = 2
    seqs = jax.random.randint(jax.random.key(1), (k, 4, 9), 0, 8)  # a few tokens: learnable
    tx = layerwise_gauss_newton(
        apply_fn,
        loss_fn,
        inner=optax.adam(1e-2),
        inner_steps=k,
        line_search=line_search_alphas(3),
        objective="prox_linear",
    )
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(None, s, p, batch=seqs, ls_batch=seqs))
    for _ in range(2):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    assert step._cache_size() == 1  # the second outer step did not recompile
    assert len(state.inner_state.inner_states) == cfg.n_layers + 2
    assert all(np.isfinite(v) for v in state.metrics.values())
    assert float(state.metrics["ls_loss"]) < float(state.metrics["true_loss"])


def deep_mlp(seed, widths=(3, 6, 5, 4, 4)):
    """A float64 tanh MLP of len(widths) - 1 layers as params, apply_fn, blocks and stages."""
    keys = jax.random.split(jax.random.key(seed), 2 * len(widths))
    params = {
        f"l{i}": {
            "w": jax.random.normal(keys[2 * i], (a, b)) / np.sqrt(a),
            "b": 0.3 * jax.random.normal(keys[2 * i + 1], (b,)),
        }
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    }
    n = len(params)

    def layer(i):
        def run(p, h):
            z = h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
            return z if i == n - 1 else jnp.tanh(z)

        return run

    def apply_fn(p, batch):  # written out, not through StagedModel
        h = batch["x"]
        for i in range(n):
            h = h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
            h = h if i == n - 1 else jnp.tanh(h)
        return h

    staged = StagedModel(lambda batch: batch["x"], tuple((f"l{i}", layer(i)) for i in range(n)))
    return params, apply_fn, staged


def tiny_transformer():
    cfg = get_model_config("tiny", d_model=16, n_layers=2, n_heads=2, d_ff=32, vocab_size=32)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), init_params(cfg, jax.random.key(0)))
    # Non-trivial norms (they init to 1), so that every block's Jacobian is generic.
    params = jax.tree.map(
        lambda x: x * (1 + 0.2 * jax.random.normal(jax.random.key(x.size), x.shape)), params
    )
    apply_fn = lambda p, seqs: apply(cfg, p, seqs[:, :-1])  # noqa: E731
    staged = StagedModel(lambda seqs: seqs[:, :-1], stages(cfg))
    return cfg, params, apply_fn, staged


def lm_loss(logits, seqs):
    return optax.softmax_cross_entropy_with_integer_labels(logits, seqs[:, 1:]).mean()


@pytest.mark.slow
def test_transformer_stages_compose_to_apply():
    cfg, params, apply_fn, staged = tiny_transformer()
    seqs = jax.random.randint(jax.random.key(1), (3, 9), 0, cfg.vocab_size)
    labels = transformer_blocks(params)
    np.testing.assert_array_equal(staged.apply(params, seqs, labels), apply_fn(params, seqs))
    assert [name for name, _ in staged.stages] == ["embed", "block_0", "block_1", "head"]
    assert set(jax.tree.leaves(labels)) == {name for name, _ in staged.stages}


@pytest.mark.slow
@pytest.mark.parametrize("rule", [None, prox_linear_output_rule], ids=["gn", "prox_linear"])
def test_staged_eval_equals_generic_on_transformer(rule):
    """Same value, loss and per-block gradient as linearized_model_eval on the gnbench model.

    The model computes attention logits and returns logits in float32 (also with float64
    parameters), and the staged path orders the tangent computations differently, so the two
    agree to float32 rounding; the float64 MLP tests below compare at 1e-10.
    """
    cfg, params, apply_fn, staged = tiny_transformer()
    seqs = jax.random.randint(jax.random.key(2), (4, 9), 0, cfg.vocab_size)
    flat, unravel = ravel_pytree(params)
    delta = unravel(0.05 * jax.random.normal(jax.random.key(3), flat.shape, flat.dtype))
    kwargs = dict(damping=0.1, block_labels=transformer_blocks(params))
    if rule is not None:
        kwargs["rule"] = rule
    want = linearized_model_eval(apply_fn, lm_loss, params, seqs, delta, **kwargs)
    got = jax.jit(lambda p, d: staged_model_eval(staged, lm_loss, p, seqs, d, **kwargs))(
        params, delta
    )
    g_want, g_got = ravel_pytree(want.grad)[0], ravel_pytree(got.grad)[0]
    np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6 * np.abs(g_want).max())
    np.testing.assert_allclose([got.value, got.loss], [want.value, want.loss], rtol=1e-6)
    # ... and the block-diagonal gradient is not the full one: the comparison can fail.
    full = linearized_model_eval(apply_fn, lm_loss, params, seqs, delta, damping=0.1)
    assert np.abs(ravel_pytree(full.grad)[0] - g_want).max() > 1e-2 * np.abs(g_want).max()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["gn", "prox_linear"])
def test_staged_steps_equal_generic_with_four_blocks(objective):
    """Two outer steps (warm start, line search) on a float64 4-layer MLP, one block per layer:
    the staged path equals the generic one to rounding, so no block's JVP or VJP reaches into
    another block's parameters (a leak would change every block's gradient)."""
    params, apply_fn, staged = deep_mlp(seed=21)
    _, batch = setup(seed=22, n=8)
    k = 3
    batches = jax.tree.map(lambda a: jnp.stack([jnp.roll(a, i, axis=0) for i in range(k)]), batch)
    kwargs = dict(
        blocks=lambda p: {name: jax.tree.map(lambda _, n=name: n, v) for name, v in p.items()},
        inner=optax.adam(3e-2),
        inner_steps=k,
        damping=1e-2,
        line_search=line_search_alphas(3),
        objective=objective,
    )
    generic = layerwise_gauss_newton(apply_fn, cross_entropy, **kwargs)
    fast = layerwise_gauss_newton(apply_fn, cross_entropy, staged=staged, **kwargs)
    full = gauss_newton(
        apply_fn, cross_entropy, **{key: kwargs[key] for key in ("inner", "inner_steps")}
    )
    p1 = p2 = params
    s1, s2 = generic.init(params), fast.init(params)
    for _ in range(2):
        u1, s1 = generic.update(None, s1, p1, batch=batches, ls_batch=batches)
        u2, s2 = jax.jit(lambda p, s: fast.update(None, s, p, batch=batches, ls_batch=batches))(
            p2, s2
        )
        np.testing.assert_allclose(ravel_pytree(u2)[0], ravel_pytree(u1)[0], rtol=1e-10, atol=1e-13)
        for name in s1.metrics:
            np.testing.assert_allclose(s2.metrics[name], s1.metrics[name], rtol=1e-6)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    u_full, _ = full.update(None, full.init(params), params, batch=batches)
    u_block, _ = generic.update(None, generic.init(params), params, batch=batches, ls_batch=batches)
    assert np.abs(ravel_pytree(u_full)[0] - ravel_pytree(u_block)[0]).max() > 1e-3


def test_staged_model_errors():
    params, apply_fn, staged = deep_mlp(seed=23)
    _, batch = setup(seed=24)
    labels = {name: jax.tree.map(lambda _, n=name: n, v) for name, v in params.items()}
    wrong = {**labels, "l3": jax.tree.map(lambda _: "l2", params["l3"])}
    with pytest.raises(ValueError, match=r"stages \['l0', 'l1', 'l2', 'l3'\] do not match"):
        staged_model_eval(staged, cross_entropy, params, batch, params, block_labels=wrong)
    # A stage that reads another block's parameters fails instead of freezing them.
    leaky = StagedModel(
        staged.inputs, (*staged.stages[:3], ("l3", lambda p, h: h @ p["l3"]["w"] + p["l2"]["b"]))
    )
    with pytest.raises(TypeError):
        staged_model_eval(leaky, cross_entropy, params, batch, params, block_labels=labels)
    with pytest.raises(ValueError, match="distinct stage labels"):
        StagedModel(staged.inputs, (staged.stages[0], staged.stages[0]))
    with pytest.raises(ValueError, match="staged must be a StagedModel or None, got dict"):
        layerwise_gauss_newton(
            apply_fn, cross_entropy, inner=optax.sgd(1.0), inner_steps=1, staged={}
        )


@pytest.mark.slow
def test_registry_layerwise_gn_runs_the_trainers_stages():
    """The trainer's stages (``lm_staged``) compose to its ``apply_fn``, and the registry's
    layerwise GN runs them when ``BuildContext.staged_model`` is set: stages that do not match
    the blocks fail at the first update, and the real ones give the generic path's update."""
    from gnbench.optim.registry import BuildContext, build
    from gnbench.train.state import lm_fns, lm_staged
    from tests.optim.test_gauss_newton import gn_config

    cfg = get_model_config("tiny", d_model=16, n_layers=2, n_heads=2, d_ff=32, vocab_size=32)
    params = init_params(cfg, jax.random.key(0))
    apply_fn, loss_fn = lm_fns(cfg)
    staged = lm_staged(cfg)
    seqs = jax.random.randint(jax.random.key(4), (2, 3, 9), 0, cfg.vocab_size)
    composed = staged.apply(params, seqs[0], transformer_blocks(params))
    np.testing.assert_array_equal(composed, apply_fn(params, seqs[0]))

    def update(staged_model):
        ctx = BuildContext(10, 2, apply_fn=apply_fn, loss_fn=loss_fn, staged_model=staged_model)
        tx = build(gn_config("layerwise_gn", line_search=0), ctx).tx
        return jax.jit(lambda p, s: tx.update(None, s, p, batch=seqs)[0])(params, tx.init(params))

    with pytest.raises(ValueError, match="do not match the layerwise blocks"):
        update(StagedModel(staged.inputs, staged.stages[:-1]))  # no head stage
    got, want = ravel_pytree(update(staged))[0], ravel_pytree(update(None))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
