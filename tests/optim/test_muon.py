"""Muon: Newton-Schulz against the SVD polar factor, and parameter routing on the gnbench model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnbench.model import get_model_config, init_params
from gnbench.optim.muon import default_labels, muon, orthogonalize


@pytest.mark.parametrize("shape", [(16, 32), (40, 12), (24, 24)])
def test_orthogonalize_is_polar_factor_up_to_singular_values(shape):
    with jax.enable_x64(True):
        g = np.random.default_rng(0).normal(size=shape)
        x = np.asarray(orthogonalize(jnp.asarray(g), ns_steps=5))
    u, sigma, vt = np.linalg.svd(g, full_matrices=False)
    # NS is an odd matrix polynomial, X = U p(S) V^T: in G's singular bases X is diagonal ...
    core = u.T @ x @ vt.T
    off = core - np.diag(np.diag(core))
    assert np.abs(off).max() < 1e-9
    # ... and the quintic's tuned coefficients put p(S) in a band around 1, not at 1, for every
    # singular value not tiny next to ||G||_F (five steps cannot lift those all the way).
    p_sigma = np.diag(core)
    resolved = sigma / np.linalg.norm(g) > 0.01
    assert resolved.sum() >= len(sigma) - 2
    assert np.all((p_sigma[resolved] > 0.6) & (p_sigma[resolved] < 1.25))
    assert np.all((p_sigma > 0) & (p_sigma < 1.25))
    polar = u @ vt
    cosine = np.sum(x * polar) / (np.linalg.norm(x) * np.linalg.norm(polar))
    assert cosine > 0.97


def test_first_muon_step_is_scaled_orthogonalized_gradient():
    g = jax.random.normal(jax.random.key(0), (8, 32))
    params = {"block_0": {"up": {"kernel": jnp.zeros((8, 32))}}}
    tx = muon(0.1, momentum=0.9)
    u, _ = tx.update({"block_0": {"up": {"kernel": g}}}, tx.init(params), params)
    expected = -0.1 * np.sqrt(32 / 8) * orthogonalize(g)
    np.testing.assert_allclose(u["block_0"]["up"]["kernel"], expected, atol=2e-5)


def test_routing_on_tiny_model():
    params = jax.eval_shape(lambda: init_params(get_model_config("tiny"), jax.random.key(0)))
    labels = default_labels(params)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(labels)}
    assert flat["['embed']['embedding']"] == "adam"
    assert flat["['head']['kernel']"] == "adam"
    assert flat["['final_norm']['scale']"] == "adam"
    assert flat["['block_0']['attn_norm']['scale']"] == "adam"
    assert flat["['block_0']['attn']['q_norm']['scale']"] == "adam"
    for name in ("['attn']['q']", "['attn']['o']", "['up']", "['down']"):
        assert flat[f"['block_3']{name}['kernel']"] == "muon"
    shapes = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(params)
    }
    for key, label in flat.items():
        hidden = len(shapes[key]) == 2 and "embed" not in key and "head" not in key
        assert (label == "muon") == hidden, key


def test_separate_learning_rates_and_decay():
    params = {
        "embed": {"embedding": jnp.ones((16, 8))},
        "block_0": {"up": {"kernel": jnp.ones((8, 8))}, "norm": {"scale": jnp.ones((8,))}},
    }
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = muon(0.1, adam_learning_rate=0.01, weight_decay=0.5, adam_weight_decay=0.0)
    u, _ = tx.update(grads, tx.init(params), params)
    # Zero gradients: only decoupled decay moves parameters, and only the Muon part decays.
    np.testing.assert_allclose(u["block_0"]["up"]["kernel"], -0.1 * 0.5, atol=1e-6)
    assert float(jnp.abs(u["embed"]["embedding"]).max()) == 0.0
    assert float(jnp.abs(u["block_0"]["norm"]["scale"]).max()) == 0.0
    g = jax.tree.map(jnp.ones_like, params)
    u, _ = muon(0.1, adam_learning_rate=0.01).update(g, tx.init(params), params)
    # Adam's first step is -lr * sign(g).
    np.testing.assert_allclose(u["embed"]["embedding"], -0.01, rtol=1e-4)


def test_custom_labels_and_no_nesterov():
    params = {"w": jnp.ones((4, 6)), "v": jnp.ones((6, 4))}
    tx = muon(0.1, nesterov=False, labels=lambda p: {"w": "muon", "v": "adam"})
    state = tx.init(params)
    g = {"w": jnp.arange(24.0).reshape(4, 6), "v": jnp.ones((6, 4))}
    u, _ = jax.jit(tx.update)(g, state, params)
    np.testing.assert_allclose(u["v"], -0.1, rtol=1e-4)
    np.testing.assert_allclose(u["w"], -0.1 * np.sqrt(6 / 4) * orthogonalize(g["w"]), atol=2e-5)
    assert optax.tree.norm(u["w"]) > 0
