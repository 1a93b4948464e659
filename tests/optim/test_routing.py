"""Muon parameter routing (gnbench.optim.routing) and layerwise GN's default blocks on ordinary
Flax models: a linen transformer built here, nnx models, MLPs; explicit overrides; the trainer's
start-up line; the gnbench transformer's routing unchanged."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib import MuonDimensionNumbers as Dims

from experiments.base import get_config
from gnbench.model import get_model_config, init_params
from gnbench.optim import BuildContext, build
from gnbench.optim.first_order.muon import default_labels, muon, orthogonalize
from gnbench.optim.first_order.muon_optax import muon_optax, paper_labels
from gnbench.optim.gn.layerwise import format_blocks, layerwise_gauss_newton, transformer_blocks
from gnbench.optim.routing import (
    RoutingWarning,
    format_routing,
    muon_labels,
    routes,
    routing_summary,
    routing_table,
)
from tests.optim.muon_numpy import NumpyMuonWithAuxAdam

D, HEADS, HEAD_DIM, D_FF, VOCAB, SEQ = 16, 2, 8, 32, 40, 8


class Block(nn.Module):
    """Pre-norm block: DenseGeneral q/k/v (d, heads, head_dim), out (heads, head_dim, d)."""

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        q, k, v = (nn.DenseGeneral((HEADS, HEAD_DIM))(h) for _ in range(3))
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(HEAD_DIM), axis=-1)
        x = x + nn.DenseGeneral(D, axis=(-2, -1))(jnp.einsum("bhqk,bkhd->bqhd", att, v))
        return x + nn.Dense(D)(nn.gelu(nn.Dense(D_FF)(nn.LayerNorm()(x))))


class LinenLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (SEQ, D))
        x = nn.Embed(VOCAB, D)(tokens) + pos[: tokens.shape[-1]]
        for _ in range(2):
            x = Block()(x)
        return nn.Dense(VOCAB, name="lm_head")(nn.LayerNorm()(x))


def linen_variables():
    return LinenLM().init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32))


def by_path(rows):
    return {path: (group, reason) for path, _, group, reason in rows}


def test_linen_transformer_routing_leaf_by_leaf():
    variables = linen_variables()
    table = routes(variables)
    rows = by_path(routing_table(variables))
    assert len(rows) == len(jax.tree.leaves(variables))
    adam = {
        "params/Embed_0/embedding": "embedding",
        "params/pos_embedding": "positional",
        "params/lm_head/kernel": "head",
        "params/lm_head/bias": "vector",
        "params/LayerNorm_0/scale": "vector",
    }
    for path, reason in adam.items():
        assert rows[path][0] == "adam" and rows[path][1].startswith(reason), (path, rows[path])
    q_dims, out_dims = Dims((0,), (1, 2)), Dims((0, 1), (2,))
    for b in ("Block_0", "Block_1"):
        for i in range(3):  # q, k, v: (d, heads, head_dim) as (d, heads*head_dim)
            r = table[("params", b, f"DenseGeneral_{i}", "kernel")]
            assert (r.group, r.dims, r.shape) == ("muon", q_dims, (D, HEADS, HEAD_DIM))
            bias = table[("params", b, f"DenseGeneral_{i}", "bias")]
            assert (bias.group, bias.shape) == ("adam", (HEADS, HEAD_DIM))  # a 2-D bias
        r = table[("params", b, "DenseGeneral_3", "kernel")]
        assert (r.group, r.dims, r.shape) == ("muon", out_dims, (HEADS, HEAD_DIM, D))
        for dense, shape in (("Dense_0", (D_FF, D)), ("Dense_1", (D, D_FF))):  # in call order
            r = table[("params", b, dense, "kernel")]
            assert (r.group, r.dims, r.shape) == ("muon", Dims((0,), (1,)), shape)
    for path, (group, _) in rows.items():  # every norm parameter and bias is Adam's
        if path.endswith(("/bias", "/scale")):
            assert group == "adam", path
    assert sum(g == "muon" for g, _ in rows.values()) == 2 * 6
    text = format_routing(variables)
    assert "params/pos_embedding" in text and text.splitlines()[-1] == routing_summary(variables)


def test_linen_transformer_blocks_one_per_top_level_group():
    variables = linen_variables()
    labels = transformer_blocks(variables)
    assert jax.tree.structure(labels) == jax.tree.structure(variables)
    names = set(jax.tree.leaves(labels))
    assert names == {"Embed_0", "pos_embedding", "Block_0", "Block_1", "LayerNorm_0", "lm_head"}
    assert set(jax.tree.leaves(labels["params"]["Block_1"])) == {"Block_1"}
    text = format_blocks(variables)
    assert text.splitlines()[0] == "6 blocks"
    counts = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    assert sum(counts.values()) == sum(x.size for x in jax.tree.leaves(variables))
    assert counts["pos_embedding"] == SEQ * D


def test_linen_routing_inside_each_layerwise_block_equals_full_tree():
    """Layerwise GN gives each block's inner Muon its block only (the rest optax.MaskedNode):
    every block must route its leaves as the full tree does, without warnings."""
    variables = linen_variables()
    full = routes(variables)
    blocks = transformer_blocks(variables)
    for name in set(jax.tree.leaves(blocks)):
        masked = jax.tree.map(
            lambda x, b, name=name: x if b == name else optax.MaskedNode(), variables, blocks
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            seen = routes(masked)
        assert seen and all(seen[k] == full[k] for k in seen), name


class NnxLM(nnx.Module):
    """The same roles in nnx: Embed, a positional Param, MultiHeadAttention, Linear, LayerNorm."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(VOCAB, D, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (SEQ, D)))
        self.attn = nnx.MultiHeadAttention(HEADS, D, decode=False, rngs=rngs)
        self.up, self.down = nnx.Linear(D, D_FF, rngs=rngs), nnx.Linear(D_FF, D, rngs=rngs)
        self.norm = nnx.LayerNorm(D, rngs=rngs)
        self.lm_head = nnx.Linear(D, VOCAB, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.pos[...][: tokens.shape[-1]]
        x = x + self.attn(x)
        x = x + self.down(jax.nn.gelu(self.up(x)))
        return self.lm_head(self.norm(x))


def lm_loss(logits, tokens):
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))


@pytest.mark.slow
def test_nnx_state_muon_labels_and_jitted_updates():
    graphdef, state = nnx.split(NnxLM(nnx.Rngs(0)), nnx.Param)
    labels = muon_labels(state)
    assert jax.tree.structure(labels) == jax.tree.structure(state)
    table = routes(state)
    for name in ("query", "key", "value"):
        assert table[("attn", name, "kernel")].dims == Dims((0,), (1, 2))
    assert table[("attn", "out", "kernel")].dims == Dims((0, 1), (2,))
    muon_leaves = {"/".join(k) for k, r in table.items() if r.group == "muon"}
    assert muon_leaves == {
        "attn/query/kernel",
        "attn/key/kernel",
        "attn/value/kernel",
        "attn/out/kernel",
        "up/kernel",
        "down/kernel",
    }
    tokens = jax.random.randint(jax.random.key(1), (2, SEQ), 0, VOCAB)
    loss = lambda s: lm_loss(nnx.merge(graphdef, s)(tokens), tokens)  # noqa: E731
    for tx in (muon(0.02, adam_learning_rate=1e-3), muon_optax(0.02, adam_learning_rate=1e-3)):
        opt_state = tx.init(state)

        @jax.jit
        def step(s, o, tx=tx):
            updates, o = tx.update(jax.grad(loss)(s), o, s)
            return optax.apply_updates(s, updates), o

        new, _ = step(state, opt_state)
        assert jax.tree.structure(new) == jax.tree.structure(state)
        for old_leaf, new_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(new), strict=True):
            assert float(jnp.abs(new_leaf - old_leaf).max()) > 0
        assert float(loss(new)) < float(loss(state))


@pytest.mark.slow
def test_nnx_state_layerwise_blocks_and_jitted_step():
    graphdef, state = nnx.split(NnxLM(nnx.Rngs(0)), nnx.Param)
    labels = transformer_blocks(state)
    assert jax.tree.structure(labels) == jax.tree.structure(state)
    assert set(jax.tree.leaves(labels)) == {"embed", "pos", "attn", "up", "down", "norm", "lm_head"}
    apply_fn = lambda s, tokens: nnx.merge(graphdef, s)(tokens)  # noqa: E731
    k = 2
    tokens = jax.random.randint(jax.random.key(2), (k, 2, SEQ), 0, VOCAB)
    tx = layerwise_gauss_newton(
        apply_fn, lm_loss, inner=muon(0.01, adam_learning_rate=1e-3), inner_steps=k
    )
    gn_state = tx.init(state)
    updates, gn_state = jax.jit(lambda s, g: tx.update(None, g, s, batch=tokens))(state, gn_state)
    assert len(gn_state.inner_state.inner_states) == 7
    new = optax.apply_updates(state, updates)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates))


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        sizes = (6, 16, 16, 3)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:], strict=False)]
        )


def test_mlp_output_layer_goes_to_adam():
    variables = LinenMLP().init(jax.random.key(0), jnp.zeros((1, 6)))
    rows = by_path(routing_table(variables))
    assert rows["params/Dense_2/kernel"][0] == "adam"
    assert rows["params/Dense_2/kernel"][1].startswith("output layer")
    assert rows["params/Dense_0/kernel"][0] == rows["params/Dense_1/kernel"][0] == "muon"
    state = nnx.state(NnxMLP(nnx.Rngs(0)), nnx.Param)
    labels = muon_labels(state)
    assert jax.tree.structure(labels) == jax.tree.structure(state)
    groups = {"/".join(k): r.group for k, r in routes(state).items()}
    assert groups["layers/2/kernel"] == "adam"
    assert groups["layers/0/kernel"] == groups["layers/1/kernel"] == "muon"
    blocks = set(jax.tree.leaves(transformer_blocks(state)))
    assert blocks == {"layers/0", "layers/1", "layers/2"}


def test_unclear_output_layer_warns_and_labels_override():
    params = {
        "hidden": {"kernel": jnp.ones((6, 16)), "bias": jnp.zeros(16)},
        "out": {"kernel": jnp.ones((16, 3)), "bias": jnp.zeros(3)},
    }
    with pytest.warns(RoutingWarning, match="no output layer among top-level layers hidden, out"):
        assert routes(params)[("out", "kernel")].group == "muon"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = routes(params, labels={"hidden": "muon", "out": "adam"})  # a prefix tree
    assert fixed[("out", "kernel")].group == "adam" and fixed[("out", "bias")].group == "adam"
    assert fixed[("out", "kernel")].reason.startswith("labels= (default: muon")
    with pytest.warns(RoutingWarning, match=r"odd \(4, 4\)"):
        routes({"odd": jnp.ones((4, 4))})  # a square 2-D leaf with a name that says nothing


def test_gnbench_transformer_routing_unchanged_and_silent():
    params = jax.eval_shape(lambda: init_params(get_model_config("tiny"), jax.random.key(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = default_labels(params)
        table = routes(params)
    old_rule = jax.tree_util.tree_map_with_path(  # the name rule the benchmark's results used
        lambda p, x: "adam" if x.ndim != 2 or p[0].key in ("embed", "head") else "muon", params
    )
    assert labels == old_rule
    assert all(r.dims in (None, Dims((0,), (1,))) for r in table.values())
    # muon_optax's outer AdamW group is the paper's selector (embed, head) on this model.
    outer = {k: r.group == "adam" and r.role in ("embedding", "head") for k, r in table.items()}
    paper = {
        tuple(k.key for k in p): v == "adam"
        for p, v in jax.tree_util.tree_leaves_with_path(paper_labels(params))
    }
    assert outer == paper


def test_startup_line_summary_on_tiny_model():
    """The trainer prints the registry-built optimizer's ``describe(params)``."""
    params = jax.eval_shape(lambda: init_params(get_model_config("tiny"), jax.random.key(0)))
    leaves = jax.tree_util.tree_leaves_with_path(params)
    hidden = [x.size for p, x in leaves if x.ndim == 2 and p[0].key not in ("embed", "head")]
    rest = [x.size for p, x in leaves if not (x.ndim == 2 and p[0].key not in ("embed", "head"))]
    line = routing_summary(params)
    assert line == (
        f"muon: {len(hidden)} leaves, {sum(hidden) / 1e6:.2f}M params; "
        f"adam: {len(rest)} leaves, {sum(rest) / 1e3:.1f}K params"
    )
    cfg = get_config().optimizer
    for name, inner, shown in [
        ("muon", "adamw", True),
        ("muon_optax", "adamw", True),
        ("layerwise_gn", "muon", True),
        ("gauss_newton", "muon_optax", True),
        ("gauss_newton", "adamw", False),
        ("adamw", "muon", False),
    ]:
        cfg.name, cfg.gn.inner = name, inner
        built = build(cfg, BuildContext(10, 2, apply_fn=lambda p, b: b, loss_fn=lambda z, b: z))
        got = None if built.describe is None else built.describe(params)
        assert (got is not None) == shown, (name, inner)
        if shown:
            assert got.endswith(line) and name in got


def first_step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def spectrum(m):
    return np.linalg.svd(np.asarray(m), compute_uv=False)


def polar(g):
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    return u @ vt


@pytest.mark.parametrize("which", ["muon", "muon_optax"])
def test_overrides_force_orthogonalized_updates(which):
    """A leaf forced to Muon moves by -lr * width * NS(g) after one step at momentum 0: its
    singular values all in NS5's band around 1 and its direction the polar factor of g (the
    Adam step -lr*sign(g) it gets by default has a spread spectrum); a leaf forced to Adam
    moves by -lr*sign(g), Adam's first step."""
    variables = LinenMLP().init(jax.random.key(0), jnp.zeros((1, 6)))
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), variables)
    lr, adam_lr = 0.1, 0.01
    kw = dict(momentum=0.0, adam_learning_rate=adam_lr)
    make = muon if which == "muon" else lambda *a, **k: muon_optax(*a, mu_dtype=None, **k)
    wdn = jax.tree.map(lambda _: None, variables)  # all Adam ...
    wdn["params"]["Dense_1"]["kernel"] = Dims(0, 1)
    wdn["params"]["Dense_2"]["kernel"] = Dims(0, 1)  # ... but these: the output layer, too
    labels = jax.tree.map(lambda _: "adam", variables)
    labels["params"]["Dense_1"]["kernel"] = labels["params"]["Dense_2"]["kernel"] = "muon"
    g = {k: np.asarray(grads["params"][k]["kernel"]) for k in ("Dense_0", "Dense_2")}
    default = first_step(make(lr, **kw), variables, grads)["params"]
    out = np.asarray(default["Dense_2"]["kernel"])
    np.testing.assert_allclose(out, -adam_lr * np.sign(g["Dense_2"]), rtol=1e-4)
    assert spectrum(out).max() / spectrum(out).min() > 1.5
    for override in (dict(weight_dimension_numbers=wdn), dict(labels=labels)):
        u = first_step(make(lr, **kw, **override), variables, grads)["params"]
        x = np.asarray(u["Dense_2"]["kernel"]) / -lr  # (16, 3): width factor 1
        sigma = spectrum(x)
        assert np.all((sigma > 0.6) & (sigma < 1.25)), sigma
        p = polar(g["Dense_2"])
        assert np.sum(x * p) / (np.linalg.norm(x) * np.linalg.norm(p)) > 0.97
        # The hidden layer forced to Adam: AdamW's first step -lr*sign(g) in muon; in muon_optax
        # optax.contrib.muon's NAdamW, whose first step is -lr*(1 + b1(1-b1)/(1-b1^2))*sign(g).
        nesterov_gain = 1.0 if which == "muon" else 1 + 0.9 * 0.1 / (1 - 0.9**2)
        want = -adam_lr * nesterov_gain * np.sign(g["Dense_0"])
        np.testing.assert_allclose(u["Dense_0"]["kernel"], want, rtol=1e-4)


@pytest.mark.parametrize(
    "module, shape, split",
    [("query", (8, 2, 4), 1), ("out", (2, 4, 8), 2)],
)
def test_3d_kernel_update_equals_numpy_port_on_reshaped_matrix(module, shape, split):
    """Default routing of a 3-D DenseGeneral kernel; the reference Muon's updates over 6 steps
    equal the NumPy port of KellerJordan/Muon run on the (fan_in, fan_out) matrix (torch
    layout: transposed), reshaped back. Float64; weight decay on."""
    fan_in, fan_out = int(np.prod(shape[:split])), int(np.prod(shape[split:]))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, fan_in)), rng.normal(size=(32, fan_out))
    grad_m = lambda w: x.T @ (x @ w - y) / len(x)  # noqa: E731  (fan_in, fan_out)
    w0 = 0.1 * rng.normal(size=shape)
    params = {module: {"kernel": w0}}
    with jax.enable_x64(True):
        table = routes(params)
        assert table[(module, "kernel")].group == "muon"
        assert table[(module, "kernel")].dims == Dims(tuple(range(split)), tuple(range(split, 3)))
        tx = muon(0.02, momentum=0.95, weight_decay=0.1)
        p = {module: {"kernel": jnp.asarray(w0)}}
        state, ours = tx.init(p), []
        for _ in range(6):
            g = grad_m(np.asarray(p[module]["kernel"]).reshape(fan_in, fan_out)).reshape(shape)
            u, state = tx.update({module: {"kernel": jnp.asarray(g)}}, state, p)
            p = optax.apply_updates(p, u)
            ours.append(np.asarray(p[module]["kernel"]))
    ref_opt = NumpyMuonWithAuxAdam({"w": True}, lr=0.02, momentum=0.95, weight_decay=0.1)
    ref = {"w": w0.reshape(fan_in, fan_out).T.copy()}
    for t in range(6):
        ref = ref_opt.step(ref, {"w": grad_m(ref["w"].T).T})
        want = ref["w"].T.reshape(shape)
        np.testing.assert_allclose(ours[t], want, rtol=1e-9, atol=1e-12)
    assert np.abs(ours[-1] - w0).max() > 1e-3


def test_bad_overrides_name_the_leaf_and_choices():
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"labels= gave 'sgd' for 'w'; valid: \('muon', 'adam'\)"):
        routes(params, labels={"w": "sgd", "b": "adam"})
    with pytest.raises(ValueError, match="sends 'b' \\(4,\\) to Muon"):
        routes(params, labels={"w": "muon", "b": "muon"})
    with pytest.raises(ValueError, match="weight_dimension_numbers= for 'w'.*overlap"):
        routes(params, weight_dimension_numbers={"w": Dims(0, 0), "b": None})
    with pytest.raises(ValueError, match="not both"):
        muon(0.1, labels={"w": "muon"}, weight_dimension_numbers={"w": Dims()}).init(params)
    np.testing.assert_allclose(  # a 2-D kernel with axes (1, 0) is orthogonalized transposed
        first_step(
            muon(1.0, momentum=0.0, weight_dimension_numbers={"w": Dims(1, 0), "b": None}),
            params,
            {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4)},
        )["w"],
        -orthogonalize(jnp.arange(12.0).reshape(3, 4).T).T * np.sqrt(max(1, 3 / 4)),
        atol=1e-5,
    )
