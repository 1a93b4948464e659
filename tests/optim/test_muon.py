"""The two Muons: ``muon`` step for step against a NumPy port of the reference
(github.com/KellerJordan/Muon), ``muon_optax`` against the GN paper's ``optax.contrib.muon``
construction, how far apart the two are, Newton-Schulz against the SVD polar factor, and
parameter routing on the gnbench model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.base import get_config
from gnbench.model import get_model_config, init_params
from gnbench.optim import BuildContext, build
from gnbench.optim.first_order.muon import default_labels, muon, orthogonalize
from gnbench.optim.first_order.muon_optax import muon_optax, paper_labels
from gnbench.optim.gn.builders import _gn_inner
from tests.optim.muon_numpy import NumpyMuonWithAuxAdam

SHAPES = [(16, 16), (8, 24), (24, 8)]  # Flax (in, out): square, wide, tall.
STEPS = 40


def least_squares(shape, seed=0):
    """``grad(w)`` of ``0.5 * mean ||x w - y||^2`` for an ``(in, out)`` kernel, and a start."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(64, shape[0])), rng.normal(size=(64, shape[1]))
    return (lambda w: x.T @ (x @ w - y) / len(x)), 0.1 * rng.normal(size=shape)


def relative_error(theta, theta_ref, theta_0):
    """``||theta - theta_ref|| / ||theta_ref - theta_0||`` over a dict of arrays."""
    num = sum(np.sum((np.asarray(theta[k]) - theta_ref[k]) ** 2) for k in theta_ref)
    den = sum(np.sum((theta_ref[k] - theta_0[k]) ** 2) for k in theta_ref)
    return float(np.sqrt(num / den))


def run_jax(tx, grad_fns, theta_0, steps=STEPS):
    """Parameters after each step; each step's gradient is taken at the current parameters."""
    params = {k: jnp.asarray(v) for k, v in theta_0.items()}
    state, update, out = tx.init(params), jax.jit(tx.update), []
    for _ in range(steps):
        grads = {k: jnp.asarray(grad_fns[k](np.asarray(params[k]))) for k in params}
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append({k: np.asarray(v) for k, v in params.items()})
    return out


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_muon_matches_numpy_reference_step_for_step(shape, nesterov):
    """``muon`` = the reference's muon_update + decay + step, every step, in float64.

    The tree also holds an embedding and a norm scale (AdamW, as the reference's
    MuonWithAuxAdam routes them). The NumPy port works in PyTorch's (out, in) layout, so the
    Flax kernel goes in transposed: this also checks the width factor's layout convention.
    ``weight_decay > 0`` checks the decay order: the port does ``p*(1 - lr*wd) - lr*u``, ours
    ``add_decayed_weights`` then ``scale_by_learning_rate``, i.e. ``p - lr*(u + wd*p)``.
    """
    lr, adam_lr, wd, adam_wd = 0.02, 0.01, 0.1, 0.05
    grad_w, w0 = least_squares(shape)
    rng = np.random.default_rng(1)
    e0, e_target = rng.normal(size=(12, shape[0])), rng.normal(size=(12, shape[0]))
    s0 = np.ones(shape[1])
    grad_fns = {"w": grad_w, "embed": lambda e: e - e_target, "scale": lambda s: 3.0 * s - 1.0}
    theta_0 = {"w": w0, "embed": e0, "scale": s0}
    labels = lambda p: {"w": "muon", "embed": "adam", "scale": "adam"}  # noqa: E731
    with jax.enable_x64(True):
        tx = muon(
            lr,
            adam_learning_rate=adam_lr,
            momentum=0.95,
            nesterov=nesterov,
            weight_decay=wd,
            adam_b1=0.9,
            adam_b2=0.95,
            adam_eps=1e-10,
            adam_weight_decay=adam_wd,
            labels=labels,
        )
        ours = run_jax(tx, grad_fns, theta_0)
        assert ours[0]["w"].dtype == np.float64
    ref_opt = NumpyMuonWithAuxAdam(
        {"w": True, "embed": False, "scale": False},
        lr=lr,
        momentum=0.95,
        weight_decay=wd,
        adam_lr=adam_lr,
        betas=(0.9, 0.95),
        eps=1e-10,
        adam_weight_decay=adam_wd,
        nesterov=nesterov,
    )
    ref = {"w": w0.T.copy(), "embed": e0, "scale": s0}  # torch layout for the matrix
    for t in range(STEPS):
        grads = {k: grad_fns[k](ref[k].T if k == "w" else ref[k]) for k in ref}
        grads["w"] = grads["w"].T
        ref = ref_opt.step(ref, grads)
        ref_flax = {**ref, "w": ref["w"].T}
        err_w = relative_error({"w": ours[t]["w"]}, {"w": ref_flax["w"]}, {"w": w0})
        err_all = relative_error(ours[t], ref_flax, theta_0)
        assert err_w <= 1e-5 and err_all <= 1e-5, (t, err_w, err_all)


def test_decay_then_learning_rate_is_the_reference_step_order():
    """One step is the reference's ``p*(1 - lr*wd) - lr*u`` (momentum 0 makes ``u = NS(g)``);
    ours computes it as ``p - lr*(u + wd*p)``."""
    with jax.enable_x64(True):  # exact Newton-Schulz (float32 runs it in bfloat16)
        p = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(6, 6)), jnp.float64)}
        g = {"w": jnp.asarray(np.random.default_rng(3).normal(size=(6, 6)), jnp.float64)}
        lr, wd = 0.1, 0.3
        labels = lambda _: {"w": "muon"}  # noqa: E731
        tx = muon(lr, momentum=0.0, nesterov=False, weight_decay=wd, labels=labels)
        u, _ = tx.update(g, tx.init(p), p)
        direction = np.asarray(orthogonalize(g["w"]))  # momentum 0: m = g
        expected = np.asarray(p["w"]) * (1 - lr * wd) - lr * direction
        got = np.asarray(optax.apply_updates(p, u)["w"])
        np.testing.assert_allclose(got, expected, atol=1e-10)


def paper_construction(lr, wd, b1, b2, beta, clip):
    """The GN paper's Muon, as its EasyLM/optimizers.py MuonOptimizerFactory builds it, on
    gnbench's names (its ``params.transformer.wte.embedding`` / ``params.lm_head.kernel``)."""
    adamw_chain = optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(learning_rate=lr, weight_decay=wd, b1=b1, b2=b2, mu_dtype=jnp.float32),
    )
    muon_chain = optax.chain(
        optax.clip_by_global_norm(clip),
        optax.contrib.muon(
            learning_rate=lr,
            adam_weight_decay=wd,
            adam_b1=b1,
            adam_b2=b2,
            beta=beta,
            mu_dtype=jnp.float32,
        ),
    )

    def selector(params):
        def one(path, _):
            name = ".".join(k.key for k in path)
            return "adamw" if name in ("embed.embedding", "head.kernel") else "muon"

        return jax.tree_util.tree_map_with_path(one, params)

    return optax.multi_transform({"adamw": adamw_chain, "muon": muon_chain}, selector)


def small_model_tree(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {
        "embed": {"embedding": (10, 8)},
        "block_0": {
            "attn_norm": {"scale": (8,)},
            "up": {"kernel": (8, 16)},
            "down": {"kernel": (16, 8)},
        },
        "final_norm": {"scale": (8,)},
        "head": {"kernel": (8, 10)},
    }
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def test_muon_optax_equals_paper_optax_contrib_muon():
    """Same updates as the paper's construction, directly and through the registry; gradients
    big enough that each group's own global-norm clip is active."""
    lr, wd, b1, b2, beta, clip = 0.01, 1e-3, 0.9, 0.95, 0.95, 1.0
    params = small_model_tree()
    paper = paper_construction(lr, wd, b1, b2, beta, clip)
    ours = muon_optax(
        lr,
        momentum=beta,
        weight_decay=0.0,
        adam_b1=b1,
        adam_b2=b2,
        adam_weight_decay=wd,
        grad_clip=clip,
    )
    cfg = get_config().optimizer
    cfg.name, cfg.learning_rate, cfg.schedule, cfg.warmup_steps = "muon_optax", lr, "constant", 0
    cfg.b1, cfg.b2, cfg.weight_decay, cfg.grad_clip = b1, b2, 0.0, clip
    cfg.muon.adam_learning_rate, cfg.muon.adam_weight_decay, cfg.muon.momentum = lr, wd, beta
    registry = build(cfg, BuildContext(total_steps=10, micro_batches=2)).tx
    txs = [paper, ours, registry]
    states = [tx.init(params) for tx in txs]
    for t in range(5):
        grads = small_model_tree(seed=10 + t)
        assert float(optax.tree.norm(grads)) > 3 * clip
        outs = []
        for i, tx in enumerate(txs):
            u, states[i] = tx.update(grads, states[i], params)
            outs.append(u)
        for a, b, c in zip(*(jax.tree.leaves(u) for u in outs), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-9)
        params = optax.apply_updates(params, outs[0])


@pytest.mark.parametrize("shape", SHAPES)
def test_muon_and_muon_optax_differ_with_nesterov_agree_without(shape):
    """The two names are different algorithms: optax's bias-corrected Nesterov mix moves the
    trajectory by ~1e-3 relative (measured 9e-4 to 9e-3 over 40 steps); without Nesterov the
    bias correction is a scalar that Newton-Schulz's normalization removes, leaving only the
    epsilon's effect (measured <= 2.2e-6)."""
    grad_w, w0 = least_squares(shape)
    worst = {}
    for nesterov in (True, False):
        with jax.enable_x64(True):
            kwargs = dict(momentum=0.95, nesterov=nesterov, weight_decay=0.1)
            ref = run_jax(muon(0.02, **kwargs), {"w": grad_w}, {"w": w0})
            opt = run_jax(muon_optax(0.02, mu_dtype=None, **kwargs), {"w": grad_w}, {"w": w0})
        worst[nesterov] = max(
            relative_error(o, r, {"w": w0}) for o, r in zip(opt, ref, strict=True)
        )
    assert worst[True] > 5e-4, worst
    assert worst[False] < 1e-5, worst


def test_paper_labels_on_tiny_model():
    params = jax.eval_shape(lambda: init_params(get_model_config("tiny"), jax.random.key(0)))
    flat = {
        jax.tree_util.keystr(p): v
        for p, v in jax.tree_util.tree_leaves_with_path(paper_labels(params))
    }
    assert flat["['embed']['embedding']"] == "adam"
    assert flat["['head']['kernel']"] == "adam"
    # 1-D leaves stay with optax.contrib.muon (which hands them to its own Adam).
    assert flat["['final_norm']['scale']"] == "muon"
    assert flat["['block_0']['attn_norm']['scale']"] == "muon"
    assert flat["['block_3']['up']['kernel']"] == "muon"
    assert {v for k, v in flat.items() if "embed" not in k and "head" not in k} == {"muon"}


@pytest.mark.parametrize("inner", ["muon", "muon_optax"])
def test_gn_inner_at_unit_rate_equals_the_optimizer_at_the_inner_rate(inner):
    lr, adam_lr, wd = 0.02, 0.01, 0.1
    cfg = get_config().optimizer
    cfg.gn.inner, cfg.gn.inner_schedule, cfg.gn.inner_warmup_steps = inner, "constant", 0
    cfg.gn.inner_learning_rate, cfg.gn.inner_adam_learning_rate = lr, adam_lr
    cfg.gn.inner_weight_decay = wd
    tx, refresh = _gn_inner(cfg, BuildContext(total_steps=10, micro_batches=2))
    assert refresh is None  # Only a K-FAC inner is refreshed per outer step.
    kwargs = dict(adam_learning_rate=adam_lr, adam_b1=cfg.gn.inner_b1, adam_b2=cfg.gn.inner_b2)
    if inner == "muon":
        direct = muon(lr, weight_decay=wd, adam_weight_decay=wd, **kwargs)
    else:  # The paper's inner: adam_weight_decay=wd, Muon matrices undecayed, no clipping.
        direct = muon_optax(lr, weight_decay=0.0, adam_weight_decay=wd, **kwargs)
    params = small_model_tree()
    s_inner, s_direct = tx.init(params), direct.init(params)
    for t in range(3):
        grads = small_model_tree(seed=20 + t)
        u, s_inner = tx.update(grads, s_inner, params, inner_step=jnp.asarray(t))
        v, s_direct = direct.update(grads, s_direct, params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8)
        params = optax.apply_updates(params, u)


def test_gn_inner_unknown_lists_choices():
    cfg = get_config().optimizer
    cfg.gn.inner = "sgd"
    with pytest.raises(ValueError, match="'adamw', 'muon', 'muon_optax'"):
        _gn_inner(cfg, BuildContext(total_steps=10, micro_batches=2))


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
    # float64: Newton-Schulz runs in bfloat16 for float32 (as the reference), whose rounding
    # depends on the input's scale; in float64 the identity is exact.
    with jax.enable_x64(True):
        g = jax.random.normal(jax.random.key(0), (8, 32), jnp.float64)
        params = {"block_0": {"up": {"kernel": jnp.zeros((8, 32), jnp.float64)}}}
        tx = muon(0.1, momentum=0.9)
        u, _ = tx.update({"block_0": {"up": {"kernel": g}}}, tx.init(params), params)
        expected = -0.1 * np.sqrt(32 / 8) * orthogonalize(g)
        np.testing.assert_allclose(u["block_0"]["up"]["kernel"], expected, atol=1e-8)  # NS eps


def test_newton_schulz_of_float32_is_bfloat16_as_the_reference():
    g = jax.random.normal(jax.random.key(0), (8, 32))
    x64 = np.asarray(g, np.float64)
    with jax.enable_x64(True):
        exact = np.asarray(orthogonalize(jnp.asarray(x64)))
    got = np.asarray(orthogonalize(g), np.float64)
    err = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 1e-3 < err < 0.15, err  # bf16 rounding (a float32 NS would be ~1e-6), still close


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
    with jax.enable_x64(True):  # exact Newton-Schulz (float32 runs it in bfloat16)
        params = {"w": jnp.ones((4, 6), jnp.float64), "v": jnp.ones((6, 4), jnp.float64)}
        tx = muon(0.1, nesterov=False, labels=lambda p: {"w": "muon", "v": "adam"})
        state = tx.init(params)
        g = {"w": jnp.arange(24.0, dtype=jnp.float64).reshape(4, 6), "v": params["v"]}
        u, _ = jax.jit(tx.update)(g, state, params)
        np.testing.assert_allclose(u["v"], -0.1, rtol=1e-4)
        expected = -0.1 * np.sqrt(6 / 4) * orthogonalize(g["w"])
        np.testing.assert_allclose(u["w"], expected, atol=1e-8)
        assert optax.tree.norm(u["w"]) > 0
