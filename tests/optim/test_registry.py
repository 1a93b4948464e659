"""Registry basics: unknown names, clipping semantics, schedules, logged hyperparameters."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import base
from gnbench.optim import BuildContext, build, known_optimizers
from gnbench.optim.registry import clip, schedule


def test_unknown_optimizer_lists_known_names():
    cfg = base.get_config().optimizer
    cfg.name = "lion"
    with pytest.raises(ValueError) as err:
        build(cfg, BuildContext(total_steps=10, micro_batches=2))
    assert "'lion'" in str(err.value)
    for name in known_optimizers():
        assert name in str(err.value)


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_clip_zero_or_none_is_off_not_clip_to_zero(off):
    tx = clip(off)
    g = {"w": jnp.array([3.0, 4.0])}
    updates, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(updates["w"], g["w"])


def test_clip_positive_clips_global_norm_and_negative_fails():
    tx = clip(1.0)
    g = {"w": jnp.array([3.0, 4.0])}
    updates, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(updates["w"], [0.6, 0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="grad_clip must be >= 0"):
        clip(-1.0)


def test_adamw_with_clip_zero_still_moves_parameters():
    cfg = base.get_config().optimizer
    cfg.grad_clip = 0.0
    cfg.schedule = "constant"
    opt = build(cfg, BuildContext(total_steps=10, micro_batches=2))
    params = {"w": jnp.ones(3)}
    updates, _ = opt.tx.update({"w": jnp.ones(3)}, opt.tx.init(params), params, batch=None)
    assert float(jnp.abs(updates["w"]).min()) > 1e-4


def test_warmup_cosine_shape_and_unknown_schedule():
    s = schedule(1.0, total_steps=100, warmup_steps=10, kind="warmup_cosine")
    assert float(s(0)) == 0.0
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(100)) == pytest.approx(0.1)
    assert schedule(0.5, 100, 10, "constant") == 0.5  # A number: it lives in the state.
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        schedule(1.0, 10, 1, "linear")


def test_learning_rate_in_use_is_visible_in_state():
    cfg = base.get_config().optimizer
    opt = build(cfg, BuildContext(total_steps=20, micro_batches=2))
    params = {"w": jnp.ones(2)}
    state = opt.tx.init(params)
    for _ in range(5):
        _, state = opt.tx.update({"w": jnp.ones(2)}, state, params)
    lr = optax.tree_utils.tree_get(state, "hyperparams")["learning_rate"]
    expected = schedule(cfg.learning_rate, 20, cfg.warmup_steps, cfg.schedule)(4)
    assert float(lr) == pytest.approx(float(expected))


@pytest.mark.parametrize("name", ["adamw", "soap", "gauss_newton", "gn_prox_linear"])
def test_constant_learning_rates_compile_to_one_program(name):
    """A constant (inner) learning rate is state: a grid over it shares one compiled program,
    GN's line-search fallback (which re-initializes the inner state in the step) included."""
    import jax

    gn = name != "adamw" and name != "soap"

    def hlo(lr, kind):
        cfg = base.get_config().optimizer
        cfg.name, cfg.schedule, cfg.learning_rate = name, kind, lr
        cfg.gn.inner_schedule, cfg.gn.inner_learning_rate, cfg.gn.line_search = kind, lr, 3
        ctx = BuildContext(
            total_steps=20,
            micro_batches=2,
            apply_fn=lambda p, x: x @ p["w"],
            loss_fn=lambda z, x: jnp.mean(z**2),
        )
        tx = build(cfg, ctx).tx
        params = {"w": jnp.ones((2, 2))}
        update = jax.jit(lambda g, s, p, x: tx.update(g, s, p, batch=x, ls_batch=x))
        if not gn:
            update = jax.jit(lambda g, s, p, x: tx.update(g, s, p))
        x = jnp.ones((2, 3, 2))
        return update.lower(params, tx.init(params), params, x).as_text()

    assert hlo(1e-3, "constant") == hlo(3e-3, "constant")
    kind = "global_cosine" if gn else "warmup_cosine"
    assert hlo(1e-3, kind) != hlo(3e-3, kind)
