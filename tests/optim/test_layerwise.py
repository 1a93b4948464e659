"""Layerwise GN against the dense block-diagonal solve, and against full GN with one block."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnbench.model import apply, get_model_config, init_params
from gnbench.optim.gn.gauss_newton import gauss_newton, line_search_alphas
from gnbench.optim.gn.layerwise import layerwise_gauss_newton, transformer_blocks
from gnbench.optim.gn.prox_linear import gn_prox_linear
from tests.optim.test_curvature import cross_entropy, dense_terms, mlp_apply, setup
from tests.optim.test_gauss_newton import repeat

MLP_BLOCKS = {"w1": "in", "b1": "in", "w2": "out", "b2": "out"}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_equals_dense_block_diagonal_solve():
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
