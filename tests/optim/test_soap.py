"""gnbench.optim.first_order.soap against an independent float64 NumPy port (soap_numpy.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnbench.optim.first_order.soap import axis_key, merged_shape, scale_by_soap, soap
from tests.optim.soap_numpy import NumpySoap, merge

STEPS = 32

CASES = {
    "2d_3d_1d": (dict(), {"a": (5, 5), "b": (4, 5, 6), "c": (7,)}),
    "dim_above_max": (dict(max_precond_dim=20), {"a": (6, 40), "b": (4, 30, 5)}),
    "merge_dims": (
        dict(merge_dims=True, max_precond_dim=10),
        {"a": (2, 4, 8), "b": (2, 3, 5, 4), "c": (5, 5), "d": (6,)},
    ),
    "precondition_1d": (dict(precondition_1d=True, precondition_frequency=3), {"a": (4,)}),
    "frequency_1": (dict(precondition_frequency=1), {"a": (5, 5), "b": (3, 4, 5)}),
    "frequency_3_normalize": (
        dict(precondition_frequency=3, normalize_grads=True),
        {"a": (6, 6), "b": (3, 4, 5)},
    ),
    "no_bias_correction": (
        dict(correct_bias=False, shampoo_beta=0.9, b1=0.9, weight_decay=0.1),
        {"a": (5, 5), "b": (4,)},
    ),
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_port(name):
    kwargs, shapes = CASES[name]
    lr = 0.02
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    refs = {k: NumpySoap(s, lr=lr, **kwargs) for k, s in shapes.items()}
    expected = dict(params)
    tx = soap(lr, **kwargs)
    state = tx.init(jax.tree.map(jnp.asarray, params))
    update = jax.jit(tx.update)
    got = jax.tree.map(jnp.asarray, params)
    for step in range(STEPS):
        grads = {k: rng.normal(size=s) for k, s in shapes.items()}
        expected = {k: refs[k].step(grads[k], expected[k]) for k in shapes}
        u, state = update(jax.tree.map(jnp.asarray, grads), state, got)
        got = optax.apply_updates(got, u)
        if step == 0:
            # A rank-one statistic (1-D parameters) has no unique eigenbasis: start both from
            # the same one. Higher-rank shapes here have full-rank statistics from step 0.
            for k, s in shapes.items():
                if len(s) == 1 and refs[k].rot[0]:
                    refs[k].Q[0] = np.asarray(state.bases[k][axis_key(0)])
        for k in shapes:
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-10, err_msg=k)
    moved = max(np.abs(np.asarray(got[k]) - params[k]).max() for k in shapes)
    assert moved > 3 * lr  # the comparison is not vacuous


def test_first_step_leaves_params_unchanged():
    params = {"a": jnp.ones((3, 4)), "b": jnp.ones((5,))}
    tx = soap(0.1, weight_decay=0.5, precondition_1d=True)
    state = tx.init(params)
    grads = jax.tree.map(lambda p: 2.0 * p, params)
    u, state = tx.update(grads, state, params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u))
    u, _ = tx.update(grads, state, params)
    assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(u))


def test_state_layout():
    params = {"a": jnp.zeros((6, 40)), "b": jnp.zeros((7,)), "c": jnp.zeros((2, 4, 8))}
    state = scale_by_soap(max_precond_dim=20, merge_dims=True).init(params)
    # Only rotated axes have an entry: "a"'s axis 1 (40 > 20) and the 1-D "b" have none.
    assert {k: s.shape for k, s in state.stats["a"].items()} == {"axis_0": (6, 6)}
    assert state.stats["b"] == {}
    assert {k: q.shape for k, q in state.bases["c"].items()} == {"axis_0": (8, 8), "axis_1": (8, 8)}
    np.testing.assert_array_equal(state.bases["c"]["axis_1"], np.eye(8))
    assert state.mu["c"].shape == (2, 4, 8)


@pytest.mark.parametrize("shape", [(2, 4, 8), (2, 3, 5, 4), (30,), (1, 7, 1), (50, 3)])
def test_merged_shape(shape):
    assert merged_shape(shape, 10) == merge(shape, 10)
    assert np.prod(merged_shape(shape, 10)) == np.prod(shape)


def test_refresh_compiles_once():
    traces = []
    tx = soap(0.01, precondition_frequency=2)

    @jax.jit
    def step(grads, state, params):
        traces.append(1)
        return tx.update(grads, state, params)

    params = {"a": jnp.ones((4, 4))}
    state = tx.init(params)
    for i in range(7):
        g = {"a": jnp.full((4, 4), float(i)) + jnp.eye(4)}
        u, state = step(g, state, params)
        params = optax.apply_updates(params, u)
    assert len(traces) == 1
    assert step._cache_size() == 1
