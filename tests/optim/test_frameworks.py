"""Every registered optimizer trains models written with Equinox, flax.nnx and flax.linen.

Each model is small and none is gnbench's transformer: an Equinox MLP, an Equinox attention
model (``eqx.nn.MultiheadAttention``: 2-D ``(out, in)`` weights), an nnx attention model stepped
through ``nnx.Optimizer`` and a linen one (``nn.SelfAttention``) stepped through flax's
``TrainState`` (the attention layers' ``DenseGeneral`` kernels are 3-D). Every method is built by
the registry for a softmax cross-entropy, then run 15 jitted steps on a fixed batch; the loss
must fall by a fifth.
"""

import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

from gnbench.optim import BuildContext, build, known_optimizers
from gnbench.optim.flax_train_state import apply_gradients
from tests.optim.test_registry_contract import ls_slice, optimizer_config

# Every transform trains models of three frameworks: end-to-end, so make test runs it and
# make test-fast (the edit loop) does not.
pytestmark = pytest.mark.slow

NAMES = known_optimizers()
K, B, T, F, W, C = 2, 8, 4, 6, 16, 4  # micro-batches, examples, tokens, features, width, classes
STEPS = 15
# The least-squares learning rates of test_registry_contract, where a method needs more here.
LEARNING_RATES = {"muon": 0.05, "muon_optax": 0.05}


class EqxAttention(eqx.Module):
    """Input projection, one self-attention layer with a residual, classification head."""

    inp: eqx.nn.Linear
    attn: eqx.nn.MultiheadAttention
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.inp = eqx.nn.Linear(F, W, key=k1)
        self.attn = eqx.nn.MultiheadAttention(2, W, key=k2)
        self.head = eqx.nn.Linear(W, C, key=k3)

    def __call__(self, x_TxF):
        h = jax.vmap(self.inp)(x_TxF)
        h = h + self.attn(h, h, h)
        return jax.vmap(self.head)(h)


class NnxAttention(nnx.Module):
    def __init__(self, rngs):
        self.inp = nnx.Linear(F, W, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=W, decode=False, rngs=rngs)
        self.head = nnx.Linear(W, C, rngs=rngs)

    def __call__(self, x):
        h = self.inp(x)
        return self.head(h + self.attn(h))


class LinenAttention(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(W, name="inp")(x)
        h = h + nn.SelfAttention(num_heads=2, name="attn")(h)
        return nn.Dense(C, name="head")(h)


def data(x_shape, seed=0):
    """``(batch, ls_batch)``: K micro-batches and one more, labels a function of the inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K + 1, *x_shape)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int32) + 2 * (x[..., 1] > 0)
    full = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    return jax.tree.map(lambda a: a[:K], full), jax.tree.map(lambda a: a[K:], full)


def cross_entropy(logits, mb):
    return optax.softmax_cross_entropy_with_integer_labels(logits, mb["y"]).mean()


def mean_loss(apply_fn, params, batch):
    return jnp.mean(jax.vmap(lambda mb: cross_entropy(apply_fn(params, mb), mb))(batch))


def make(name, apply_fn, batch, ls):
    cfg = optimizer_config(name)
    if name in LEARNING_RATES:
        cfg.learning_rate = cfg.muon.adam_learning_rate = LEARNING_RATES[name]
    if name == "kfac":  # Attention's kernels get diagonal blocks here, which need more damping.
        cfg.kfac.damping = 0.1
    ctx = BuildContext(
        total_steps=100,
        micro_batches=K,
        apply_fn=apply_fn,
        loss_fn=cross_entropy,
        example_micro_batch=jax.tree.map(lambda a: a[0], batch),
        loss_kind="softmax_cross_entropy",
    )
    opt = build(cfg, ctx)
    return opt, dict(batch=batch, ls_batch=ls_slice(opt, ls))


def train_plain(name, apply_fn, params, x_shape):
    """``STEPS`` jitted ``tx.update`` steps; the loss before and after."""
    batch, ls = data(x_shape)
    opt, kwargs = make(name, apply_fn, batch, ls)

    @jax.jit
    def step(params, state):
        grads = jax.grad(mean_loss, argnums=1)(apply_fn, params, batch)
        updates, state = opt.tx.update(grads, state, params, **kwargs)
        return optax.apply_updates(params, updates), state

    start = float(mean_loss(apply_fn, params, batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K-FAC's diagonal-block notice (tested on its own)
        state = opt.tx.init(params)
    for _ in range(STEPS):
        params, state = step(params, state)
    return start, float(mean_loss(apply_fn, params, batch))


def assert_falls(start, end):
    assert np.isfinite(end) and end < 0.8 * start, (start, end)


@pytest.mark.parametrize("name", NAMES)
def test_equinox_mlp(name):
    model = eqx.nn.MLP(F, C, W, depth=2, activation=jnp.tanh, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)

    def apply_fn(p, mb):
        return jax.vmap(eqx.combine(p, static))(mb["x"])

    assert_falls(*train_plain(name, apply_fn, params, (B, F)))


@pytest.mark.parametrize("name", NAMES)
def test_equinox_attention(name):
    params, static = eqx.partition(EqxAttention(jax.random.key(0)), eqx.is_array)

    def apply_fn(p, mb):
        return jax.vmap(eqx.combine(p, static))(mb["x"])

    assert_falls(*train_plain(name, apply_fn, params, (B, T, F)))


@pytest.mark.parametrize("name", NAMES)
def test_nnx_attention_through_nnx_optimizer(name):
    model = NnxAttention(nnx.Rngs(0))
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(p, mb):
        return nnx.merge(graphdef, p, rest)(mb["x"])

    batch, ls = data((B, T, F))
    opt, kwargs = make(name, apply_fn, batch, ls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = nnx.Optimizer(model, opt.tx, wrt=nnx.Param)

    def loss(m):
        return mean_loss(lambda _, mb: m(mb["x"]), None, batch)

    @nnx.jit
    def step(model, optimizer):
        optimizer.update(model, nnx.grad(loss)(model), **kwargs)

    start = float(loss(model))
    for _ in range(STEPS):
        step(model, optimizer)
    assert_falls(start, float(loss(model)))


@pytest.mark.parametrize("name", NAMES)
def test_linen_attention_through_train_state(name):
    batch, ls = data((B, T, F))
    module = LinenAttention()
    variables = module.init(jax.random.key(0), batch["x"][0])

    def apply_fn(p, mb):
        return module.apply(p, mb["x"])

    opt, kwargs = make(name, apply_fn, batch, ls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = train_state.TrainState.create(apply_fn=apply_fn, params=variables, tx=opt.tx)

    @jax.jit
    def step(state):
        grads = jax.grad(mean_loss, argnums=1)(apply_fn, state.params, batch)
        return apply_gradients(state, grads, **kwargs)

    start = float(mean_loss(apply_fn, state.params, batch))
    for _ in range(STEPS):
        state = step(state)
    assert_falls(start, float(mean_loss(apply_fn, state.params, batch)))
