"""Misuse gets one line that names the problem and the fix; Equinox params route as (out, in).

Each case is one a new user hits with the README open (issue 24): the message is asserted, and
so is that it is one line.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

from gnbench.optim import (
    diag_gn,
    format_routing,
    gauss_newton,
    kfac,
    layerwise_gauss_newton,
    muon,
    muon_optax,
    routing_table,
    soap,
)
from gnbench.optim.approx_gn.kfac import layer_table
from gnbench.optim.first_order.muon import orthogonalize
from gnbench.optim.gn.layerwise import format_blocks
from gnbench.optim.routing import RoutingWarning, routes


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def mlp(depth=1):
    """An Equinox MLP 8 -> 16 (-> 16 ...) -> 4: its weights are (out, in)."""
    model = eqx.nn.MLP(8, 4, 16, depth=depth, activation=jnp.tanh, key=jax.random.key(0))
    return model, *eqx.partition(model, eqx.is_array)


def mlp_data():
    x = jax.random.normal(jax.random.key(1), (2, 32, 8))  # K = 2 micro-batches of 32
    return {"x": x, "y": (x[..., 0] > 0).astype(jnp.int32)}


def cross_entropy(logits, mb):
    return optax.softmax_cross_entropy_with_integer_labels(logits, mb["y"]).mean()


def test_diag_gn_batch_without_micro_batch_axis():
    _, params, static = mlp()
    apply_fn = lambda p, mb: jax.vmap(eqx.combine(p, static))(mb["x"])  # noqa: E731
    tx = diag_gn(apply_fn, 1e-2)
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    one_batch = jax.tree.map(lambda a: a[0], mlp_data())  # (32, 8): the K axis forgotten
    with pytest.raises(ValueError, match=r"batch= needs a leading axis of K micro-batches") as e:
        tx.update(grads, state, params, batch=one_batch)
    assert "fails on micro-batch shapes" in one_line(e)
    tx.update(grads, state, params, batch=mlp_data())  # the same with the K axis runs


@pytest.mark.parametrize("factory", [muon, muon_optax])
def test_muon_without_a_matrix_warns(factory):
    params = {"scale": jnp.ones(4), "bias": jnp.zeros(4)}
    with pytest.warns(RoutingWarning, match=r"no parameter is routed to Muon.*optax.adamw"):
        factory(0.02).init(params)


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda s: gauss_newton(None, None, inner=optax.sgd(1.0), inner_steps=1, damping=s),
         "inject_gn_hyperparams"),
        (lambda s: diag_gn(None, 1e-3, damping=s), "only learning_rate takes a schedule"),
        (lambda s: kfac(None, 1e-3, None, damping=s), "only learning_rate takes a schedule"),
    ],
)  # fmt: skip
def test_damping_schedule_is_refused_by_name(make, fix):
    with pytest.raises(ValueError, match=r"damping must be a number, got a function") as e:
        make(optax.linear_schedule(1.0, 0.1, 10))
    assert fix in one_line(e)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gauss_newton(lambda p, x: x, cross_entropy, inner=optax.sgd(1.0), inner_steps=2),
        lambda: soap(),
        lambda: muon(0.02),
        lambda: diag_gn(lambda p, x: x, 1e-2),
    ],
)
def test_integer_leaf_in_params(make):
    params = {"w": jnp.zeros((4, 4)), "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(ValueError, match=r"params leaf \['step'\] has dtype int32") as e:
        make().init(params)
    assert "eqx.is_inexact_array" in one_line(e)


@pytest.mark.parametrize("factory", [soap, lambda: muon(0.02), lambda: muon_optax(0.02)])
def test_unpartitioned_equinox_model(factory):
    model, _, _ = mlp()
    with pytest.raises(TypeError, match=r"params leaf \.activation is a .*, not an array") as e:
        factory().init(model)
    assert "eqx.partition(model, eqx.is_array)" in one_line(e)


def test_soap_under_inject_hyperparams_needs_no_static_args():
    params = {"w": jax.random.normal(jax.random.key(0), (4, 4)), "b": jnp.zeros(4)}
    # Square, fresh gradients each step: else the statistics are rank-deficient (or the second
    # moment in the eigenbasis ~0 off the diagonal) and the update there is float32 noise.
    keys = jax.random.split(jax.random.key(1), 4)
    grads = [jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape), params) for k in keys]
    injected = optax.inject_hyperparams(soap)(learning_rate=1e-2, precondition_frequency=2)
    plain = soap(1e-2, precondition_frequency=2)

    def run(tx):
        step = jax.jit(tx.update)
        state, out = tx.init(params), []
        for g in grads:
            u, state = step(g, state, params)
            out.append(u)
        return out

    for got, want in zip(run(injected), run(plain), strict=True):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(run(injected)[-1]["w"]).max()) > 0  # not vacuous
    merged = optax.inject_hyperparams(soap)(learning_rate=1e-2, merge_dims=True)
    state = merged.init(params)
    with pytest.raises(ValueError, match=r"static_args=\('max_precond_dim',\)") as e:
        jax.jit(merged.update)(grads[0], state, params)
    one_line(e)


def test_routing_line_of_the_readme():
    _, params, _ = mlp()
    assert format_routing(routing_table(params)) == format_routing(params)
    text = format_routing(routing_table(params))
    assert "layers/0/weight  (16, 8)" in text and "as (out, in): equinox Linear" in text
    flax_params = {"kernel": jnp.zeros((8, 16))}
    assert "hidden matrix as (in, out): flax" in format_routing(flax_params)


def equinox_and_flax_updates(factory):
    """One update of ``factory`` on an Equinox MLP and on the same MLP stored as flax does."""
    _, params, _ = mlp()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.05, params)
    as_flax = lambda t: {  # noqa: E731
        f"Dense_{i}": {"kernel": layer.weight.T, "bias": layer.bias}
        for i, layer in enumerate(t.layers)
    }
    tx = factory()
    eqx_u, _ = tx.update(grads, tx.init(params), params)
    flax_u, _ = tx.update(as_flax(grads), tx.init(as_flax(params)), as_flax(params))
    return eqx_u, flax_u, grads


@pytest.mark.parametrize("factory", [lambda: muon(0.1), lambda: muon_optax(0.1)])
def test_muon_on_equinox_weights_equals_flax_on_the_transpose(factory):
    eqx_u, flax_u, grads = equinox_and_flax_updates(factory)
    for i, layer in enumerate(eqx_u.layers):
        np.testing.assert_allclose(layer.weight, flax_u[f"Dense_{i}"]["kernel"].T, rtol=1e-6)
        np.testing.assert_allclose(layer.bias, flax_u[f"Dense_{i}"]["bias"], rtol=1e-6)


def test_muon_shape_factor_on_equinox_linear():
    """(16, 8) Equinox weight = 8 inputs, 16 outputs: the factor is √(16/8), not 1."""
    eqx_u, _, grads = equinox_and_flax_updates(lambda: muon(0.1))
    _, params, _ = mlp()
    dims = {r.path: r.dims for r in routes(params).values()}
    assert dims["layers/0/weight"] == MuonDimensionNumbers((1,), (0,))
    # First step, Nesterov, momentum 0.95: m = 0.05 g, orthogonalized 0.05 g + 0.95 m.
    g = grads.layers[0].weight
    want = -0.1 * np.sqrt(2.0) * orthogonalize((0.05 * g + 0.95 * (0.05 * g)).T).T
    np.testing.assert_allclose(eqx_u.layers[0].weight, want, rtol=1e-5, atol=1e-7)


def test_layerwise_gn_on_equinox_with_default_blocks_and_a_labels_function():
    _, params, static = mlp(depth=2)
    apply_fn = lambda p, mb: jax.vmap(eqx.combine(p, static))(mb["x"])  # noqa: E731
    batch = mlp_data()

    def by_layer(p):  # an Equinox-shaped label tree: itself a callable module
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "first" if path[1].idx == 0 else "rest", p
        )

    assert callable(by_layer(params))
    assert format_blocks(params).startswith("3 blocks\nlayers/0  144  layers/0/weight")
    assert format_blocks(params, by_layer).startswith("2 blocks\nfirst  144")
    for blocks in (None, by_layer):
        extra = {} if blocks is None else {"blocks": blocks}
        tx = layerwise_gauss_newton(
            apply_fn, cross_entropy, inner=optax.adam(1e-2), inner_steps=2, **extra
        )
        updates, state = jax.jit(tx.update)(None, tx.init(params), params, batch=batch)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert float(state.metrics["update_norm"]) > 0


def test_kfac_layer_table_on_equinox_params_and_attention_warning():
    _, params, static = mlp()
    apply_fn = lambda p, mb: jax.vmap(eqx.combine(p, static))(mb["x"])  # noqa: E731
    example = jax.tree.map(lambda a: a[0], mlp_data())
    rows = layer_table(apply_fn, params, example)
    assert [(p, s) for p, s, _ in rows] == sorted(
        (jax.tree_util.keystr(p), x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)
    )
    # kfac-jax does not recognise Equinox's W @ x: diagonal blocks, said at init.
    with pytest.warns(UserWarning, match=r"matrices \.layers\[0\]\.weight, \.layers\[1\]"):
        kfac(apply_fn, 0.1, example).init(params)
    kernel = {"q": jnp.ones((4, 2, 3)) * 0.1}  # a DenseGeneral (d, heads, head_dim) kernel
    attn = lambda p, mb: jnp.einsum("bd,dhk->bhk", mb["x"], p["q"]).reshape(-1, 6)  # noqa: E731
    with pytest.warns(UserWarning, match=r"3-D kernels \['q'\] get diagonal blocks"):
        kfac(attn, 0.1, {"x": jnp.ones((5, 4))}).init(kernel)


@pytest.mark.parametrize("mode", ["ggn_exact", "fisher_exact"])
def test_kfac_exact_modes_refused_on_sequence_logits(mode):
    params = {"w": jnp.ones((3, 5)) * 0.1}
    apply_fn = lambda p, mb: mb @ p["w"]  # noqa: E731  (B, T, 3) -> logits (B, T, 5)
    with pytest.raises(ValueError, match=r"use estimation_mode='fisher_gradients'") as e:
        kfac(apply_fn, 0.1, jnp.ones((2, 4, 3)), estimation_mode=mode).init(params)
    assert "(2, 4, 5)" in one_line(e)
    kfac(apply_fn, 0.1, jnp.ones((8, 3)), estimation_mode=mode).init(params)  # (B, V): fine


def test_every_transform_the_readme_names_is_a_callable_export():
    import inspect

    import gnbench.optim as optim
    from gnbench.optim.approx_gn import diag_gn as diag_gn_module
    from gnbench.optim.approx_gn import kfac as kfac_module

    names = ["gauss_newton", "gn_prox_linear", "layerwise_gauss_newton", "soap", "muon"]
    names += ["muon_optax", "diag_gn", "kfac", "none_grads_as_zeros", "inject_gn_hyperparams"]
    names += ["line_search_alphas", "transformer_blocks", "format_routing", "routing_table"]
    for name in names:
        assert name in optim.__all__ and inspect.isfunction(getattr(optim, name)), name
    assert inspect.ismodule(kfac_module) and inspect.ismodule(diag_gn_module)
    assert kfac_module.kfac is optim.kfac and diag_gn_module.diag_gn is optim.diag_gn


def test_user_given_out_in_convention_through_weight_dimension_numbers():
    w_out_in = jax.random.normal(jax.random.key(3), (16, 8))
    g = jnp.sin(w_out_in)
    wdn = {"w": MuonDimensionNumbers((1,), (0,))}
    text = format_routing({"w": w_out_in}, weight_dimension_numbers=wdn)
    assert "weight_dimension_numbers=" in text
    tx = muon(0.1, weight_dimension_numbers=wdn)
    got, _ = tx.update({"w": g}, tx.init({"w": w_out_in}), {"w": w_out_in})
    ref = muon(0.1)
    want, _ = ref.update({"w": g.T}, ref.init({"w": w_out_in.T}), {"w": w_out_in.T})
    np.testing.assert_allclose(got["w"], want["w"].T, rtol=1e-6)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda s: muon(0.02, momentum=s), "muon: momentum"),
        (lambda s: muon_optax(0.02, weight_decay=s), "muon_optax: weight_decay"),
        (lambda s: soap(1e-3, weight_decay=s), "soap: weight_decay"),
        (lambda s: kfac(None, 1e-3, None, momentum=s), "kfac: momentum"),
    ],
)
def test_other_schedules_where_numbers_go_are_refused_by_name(make, name):
    with pytest.raises(ValueError, match=rf"{name} must be a number, got a function") as e:
        make(optax.linear_schedule(0.9, 0.5, 10))
    assert "only learning_rate takes a schedule" in one_line(e)
