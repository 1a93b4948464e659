"""Every registered optimizer through flax.nnx.Optimizer, flax's TrainState and orbax.

Each container must leave the math alone: three steps through it equal three plain
``tx.update`` / ``optax.apply_updates`` steps from the same parameters, and an orbax round trip
of the state after two steps gives the same third step. The state itself is built only from
arrays, NamedTuples and string-keyed dicts (nnx rewrites any other container inside a
parameter's slot into a string-keyed ``nnx.State``, which is what broke SOAP).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from flax.training import train_state
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from gnbench.optim import known_optimizers
from gnbench.optim.flax_train_state import apply_gradients
from gnbench.optim.registry import method
from tests.optim.test_registry_contract import K, ls_slice, make_optimizer

NAMES = known_optimizers()
D_IN, D_HID, D_OUT, N = 4, 6, 3, 8


class Tiny(nnx.Module):
    """A two-layer MLP; ``head`` sends the Muons' routing to Adam, ``hidden`` to Muon."""

    def __init__(self, rngs):
        self.hidden = nnx.Linear(D_IN, D_HID, rngs=rngs)
        self.head = nnx.Linear(D_HID, D_OUT, rngs=rngs)


# Methods whose update reads batch=: the GN family (the methods that read optimizer.gn) and the
# ladder rungs that sample curvature.
GN_FAMILY = {n for n in NAMES if "gn" in method(n).sections({"gn": {"inner": "adamw"}})}
READ_BATCH = {*GN_FAMILY, "diag_gn", "kfac", "kfac_adaptive"}


def tiny_apply(params, mb):
    """The model's function of its parameters (a dict or an ``nnx.State`` of arrays)."""
    h = jnp.tanh(mb["x"] @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def loss_of(params, batch):
    per_mb = jax.vmap(lambda mb: 0.5 * jnp.mean((tiny_apply(params, mb) - mb["y"]) ** 2))
    return jnp.mean(per_mb(batch))


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K + 1, N, D_IN)).astype(np.float32)
    y = rng.normal(size=(K + 1, N, D_OUT)).astype(np.float32)
    return {"x": x[:K], "y": y[:K]}, {"x": x[K:], "y": y[K:]}


def setup(name):
    batch, ls = data()
    opt = make_optimizer(name, tiny_apply, example=jax.tree.map(lambda a: a[0], batch))
    kwargs = dict(batch=batch, ls_batch=ls_slice(opt, ls))
    model = Tiny(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return opt, model, params, kwargs


def grads_of(opt, params, batch):
    return jax.grad(loss_of)(params, batch) if opt.reads_grads else None


def plain_steps(opt, params, kwargs, n, state=None):
    state = opt.tx.init(params) if state is None else state
    for _ in range(n):
        u, state = opt.tx.update(grads_of(opt, params, kwargs["batch"]), state, params, **kwargs)
        params = optax.apply_updates(params, u)
    return params, state


def assert_trees_close(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def assert_moved(params, start):
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(start), strict=True)
    moved = max(float(jnp.abs(a - b).max()) for a, b in pairs)
    assert moved > 1e-4, moved  # the comparisons are not vacuous


def bad_containers(state, params):
    """Paths of ``state`` leaves held in a bare tuple/list or an int-keyed dict, or in anything
    but string-keyed dicts and NamedTuples below a parameter's own slot."""
    param_paths = [
        tuple(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    bad = []
    for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = [k.key if isinstance(k, DictKey) else k for k in path]
        if any(isinstance(k, DictKey) and not isinstance(k.key, str) for k in path):
            bad.append(path)
        elif path and isinstance(path[-1], SequenceKey):
            bad.append(path)  # a bare tuple/list of arrays
        for p in param_paths:
            starts = [i for i in range(len(keys)) if tuple(keys[i : i + len(p)]) == p]
            for i in starts:
                below = path[i + len(p) :]
                if not all(isinstance(k, DictKey | GetAttrKey) for k in below):
                    bad.append(path)
    return bad


def test_container_check_rejects_old_soap_layout():
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    eye = jnp.eye(2)
    assert bad_containers({"stats": {"w": (eye, eye), "b": ()}}, params)  # tuple per parameter
    assert bad_containers({"stats": {"w": {0: eye}, "b": {}}}, params)  # int keys
    assert bad_containers({"stats": {"w": [{"a": eye}], "b": {}}}, params)  # list in the slot
    assert not bad_containers({"stats": {"w": {"axis_0": eye}, "b": {}}}, params)
    assert not bad_containers((optax.adam(1.0).init(params),), params)  # optax.chain's tuple


@pytest.mark.parametrize("name", NAMES)
def test_state_is_arrays_namedtuples_and_string_keyed_dicts(name):
    opt, _, params, kwargs = setup(name)
    state = opt.tx.init(params)
    assert bad_containers(state, params) == []
    _, state = plain_steps(opt, params, kwargs, 1, state)
    assert bad_containers(state, params) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_nnx_optimizer_matches_plain_updates(name):
    opt, model, params, kwargs = setup(name)
    want, _ = plain_steps(opt, params, kwargs, 3)
    optimizer = nnx.Optimizer(model, opt.tx, wrt=nnx.Param)

    def loss(m):
        return loss_of(nnx.as_pure(nnx.state(m, nnx.Param)), kwargs["batch"])

    for _ in range(3):
        optimizer.update(model, nnx.grad(loss)(model), **kwargs)
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert_trees_close(got, want)
    assert_moved(got, params)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_flax_train_state_matches_plain_updates(name):
    opt, _, params, kwargs = setup(name)
    want, _ = plain_steps(opt, params, kwargs, 3)
    state = train_state.TrainState.create(apply_fn=tiny_apply, params=params, tx=opt.tx)
    for _ in range(3):
        if name not in READ_BATCH:  # flax's own method
            state = state.apply_gradients(grads=grads_of(opt, state.params, kwargs["batch"]))
        else:  # methods reading the data (GN: gradients None): batch= through the helper
            grads = grads_of(opt, state.params, kwargs["batch"])
            state = apply_gradients(state, grads, **kwargs)
    assert int(state.step) == 3
    assert_trees_close(state.params, want)
    assert_moved(state.params, params)


@pytest.mark.parametrize("name", NAMES)
def test_orbax_round_trip_keeps_structure_and_next_step(name, tmp_path):
    opt, _, params, kwargs = setup(name)
    params, state = plain_steps(opt, params, kwargs, 2)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "state", state)
        ckptr.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = ckptr.restore(tmp_path / "state", target)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert_trees_close(restored, state)
    live, live_state = plain_steps(opt, params, kwargs, 1, state)
    again, again_state = plain_steps(opt, params, kwargs, 1, restored)
    assert_trees_close(again, live)
    assert_trees_close(again_state, live_state)
    assert_moved(again, params)
