"""The contract every registered optimizer keeps, checked on small least-squares problems.

Each problem is ``apply_fn(params, micro_batch) -> outputs`` with
``loss_fn(outputs, micro_batch) = 0.5 * mean(residual^2)``, so the Gauss-Newton family builds
from the same :class:`BuildContext` as the first-order methods. Batches carry a leading axis of
K micro-batches, as the trainer passes them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

from experiments.base import get_config
from gnbench.model.sharding import make_mesh, state_shardings
from gnbench.optim import BuildContext, build, known_optimizers
from gnbench.optim.first_order.muon import muon
from gnbench.optim.first_order.muon_optax import muon_optax
from gnbench.optim.first_order.soap import soap

K = 2  # micro-batches per iteration
D_IN, D_OUT, N = 16, 8, 32
FIRST_ORDER_LR = {"adamw": 0.02, "muon": 0.02, "muon_optax": 0.02, "soap": 0.02, "diag_gn": 0.05}
FIRST_ORDER_LR["kfac"] = 0.05  # a preconditioned (Newton-scale) step, with momentum 0.9
GN_INNER_LR = 0.02


def linear_apply(params, mb):
    return mb["x"] @ params["w"] + params["b"]


def rosenbrock_apply(params, mb):
    x, y = params["xy"][0], params["xy"][1]
    return jnp.stack([mb["a"] - x, jnp.sqrt(mb["c"]) * (y - x**2)])


def rosenbrock_target(mb):
    return jnp.zeros(2, mb["a"].dtype)


def half_mse(outputs, mb):
    target = mb["y"] if "y" in mb else rosenbrock_target(mb)
    return 0.5 * jnp.mean((outputs - target) ** 2)


def quadratic_problem(dtype=jnp.float32):
    """Least squares with feature scales spanning 1.5 decades (condition number ~1e3)."""
    rng = np.random.default_rng(0)
    scales = np.logspace(0, -1.5, D_IN)
    x = rng.normal(size=(K + 1, N, D_IN)) * scales
    w_star, b_star = rng.normal(size=(D_IN, D_OUT)), rng.normal(size=D_OUT)
    y = x @ w_star + b_star
    data = {"x": jnp.asarray(x, dtype), "y": jnp.asarray(y, dtype)}
    batch = jax.tree.map(lambda a: a[:K], data)
    ls_batch = jax.tree.map(lambda a: a[K:], data)
    params = {"w": jnp.zeros((D_IN, D_OUT), dtype), "b": jnp.zeros((D_OUT,), dtype)}
    return params, batch, ls_batch


def rosenbrock_problem():
    mb = {"a": jnp.ones((K,)), "c": jnp.full((K,), 100.0)}
    ls = {"a": jnp.ones((1,)), "c": jnp.full((1,), 100.0)}
    return {"xy": jnp.array([-1.2, 1.0])}, mb, ls


def optimizer_config(name, **overrides):
    """``experiments/base.py``'s optimizer section set for the small problems."""
    cfg = get_config().optimizer
    cfg.name = name
    cfg.schedule = "constant"
    cfg.warmup_steps = 0
    cfg.grad_clip = 0.0
    cfg.weight_decay = 0.0
    if name in FIRST_ORDER_LR:
        cfg.learning_rate = FIRST_ORDER_LR[name]
    if name in ("muon", "muon_optax"):
        cfg.muon.adam_learning_rate = FIRST_ORDER_LR[name]
    if name == "soap":
        cfg.soap.precondition_frequency = 3
    if name not in FIRST_ORDER_LR and "gn" in cfg:
        # The Gauss-Newton family: a constant inner learning rate of the same size.
        cfg.gn.inner_learning_rate = cfg.gn.inner_adam_learning_rate = GN_INNER_LR
        cfg.gn.inner_schedule = "constant"
        cfg.gn.inner_warmup_steps = 0
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def make_optimizer(name, apply_fn, total_steps=100, example=None, **overrides):
    cfg = optimizer_config(name, **overrides)
    if example is None:
        example = jax.tree.map(lambda a: a[0], EXAMPLE_BATCHES[apply_fn])
    return build(cfg, build_context(apply_fn, example, total_steps))


def build_context(apply_fn, example, total_steps=100):
    return BuildContext(
        total_steps=total_steps,
        micro_batches=K,
        apply_fn=apply_fn,
        loss_fn=half_mse,
        example_micro_batch=example,
        loss_kind="squared_error",
    )


EXAMPLE_BATCHES = {linear_apply: quadratic_problem()[1], rosenbrock_apply: rosenbrock_problem()[1]}


def loss_of(apply_fn, params, batch):
    per_mb = jax.vmap(lambda mb: half_mse(apply_fn(params, mb), mb))(batch)
    return jnp.mean(per_mb)


def make_step(opt, apply_fn, traces=None):
    def step(params, state, batch, ls_batch):
        if traces is not None:
            traces.append(1)
        grads = jax.grad(loss_of, argnums=1)(apply_fn, params, batch)
        updates, state = opt.tx.update(grads, state, params, batch=batch, ls_batch=ls_batch)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def ls_slice(opt, ls_batch):
    n = max(opt.ls_micro_batches, 1)
    return jax.tree.map(lambda a: jnp.concatenate([a] * n)[:n], ls_batch)


NAMES = known_optimizers()


@pytest.mark.parametrize("name", NAMES)
def test_decreases_badly_conditioned_quadratic(name):
    params, batch, ls = quadratic_problem()
    opt = make_optimizer(name, linear_apply)
    ls = ls_slice(opt, ls)
    step = make_step(opt, linear_apply)
    state = opt.tx.init(params)
    start = float(loss_of(linear_apply, params, batch))
    for _ in range(60):
        params, state = step(params, state, batch, ls)
    end = float(loss_of(linear_apply, params, batch))
    assert np.isfinite(end) and end < 0.5 * start, (start, end)


@pytest.mark.parametrize("name", NAMES)
def test_decreases_rosenbrock(name):
    params, batch, ls = rosenbrock_problem()
    opt = make_optimizer(name, rosenbrock_apply)
    ls = ls_slice(opt, ls)
    step = make_step(opt, rosenbrock_apply)
    state = opt.tx.init(params)
    start = float(loss_of(rosenbrock_apply, params, batch))
    for _ in range(60):
        params, state = step(params, state, batch, ls)
    end = float(loss_of(rosenbrock_apply, params, batch))
    assert np.isfinite(end) and end < 0.5 * start, (start, end)


@pytest.mark.parametrize("name", NAMES)
def test_second_step_does_not_recompile(name):
    params, batch, ls = quadratic_problem()
    opt = make_optimizer(name, linear_apply)
    ls = ls_slice(opt, ls)
    traces = []
    step = make_step(opt, linear_apply, traces)
    state = opt.tx.init(params)
    for _ in range(4):
        params, state = step(params, state, batch, ls)
    assert len(traces) == 1
    assert step._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_unknown_extra_kwargs_accepted(name):
    params, batch, ls = quadratic_problem()
    opt = make_optimizer(name, linear_apply)
    grads = jax.grad(loss_of, argnums=1)(linear_apply, params, batch)
    state = opt.tx.init(params)
    updates, _ = opt.tx.update(
        grads, state, params, batch=batch, ls_batch=ls_slice(opt, ls), not_a_known_arg=3
    )
    assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_params_stay_bfloat16(name):
    params, batch, ls = quadratic_problem(jnp.bfloat16)
    opt = make_optimizer(name, linear_apply, example=jax.tree.map(lambda a: a[0], batch))
    ls = ls_slice(opt, ls)
    step = make_step(opt, linear_apply)
    state = opt.tx.init(params)
    for _ in range(3):
        params, state = step(params, state, batch, ls)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.bfloat16
        assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32))))


@pytest.mark.multidevice
@pytest.mark.parametrize("name", NAMES)
def test_state_shards_like_params(name):
    mesh = make_mesh(data=1, fsdp=8)
    params, batch, ls = quadratic_problem()
    opt = make_optimizer(name, linear_apply)
    ls = ls_slice(opt, ls)
    p_shard = state_shardings(params, mesh)
    params = jax.device_put(params, p_shard)
    s_shard = state_shardings(jax.eval_shape(opt.tx.init, params), mesh)
    state = jax.jit(opt.tx.init, out_shardings=s_shard)(params)
    step = make_step(opt, linear_apply)
    step = jax.jit(step.__wrapped__, out_shardings=(p_shard, s_shard))
    for _ in range(3):
        params, state = step(params, state, batch, ls)
    spec_by_shape = {p.shape: p.sharding.spec for p in jax.tree.leaves(params)}
    assert any(spec != jax.sharding.PartitionSpec() for spec in spec_by_shape.values())
    checked = 0
    for leaf in jax.tree.leaves(state):
        if leaf.shape in spec_by_shape:
            assert isinstance(leaf.sharding, NamedSharding)
            assert leaf.sharding.spec == spec_by_shape[leaf.shape], leaf.shape
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", NAMES)
def test_inside_chain(name):
    params, batch, ls = quadratic_problem()
    opt = make_optimizer(name, linear_apply)
    ls = ls_slice(opt, ls)
    chained = optax.chain(opt.tx, optax.scale(0.5))
    grads = jax.grad(loss_of, argnums=1)(linear_apply, params, batch)
    state, chained_state = opt.tx.init(params), chained.init(params)
    for _ in range(3):
        u, state = opt.tx.update(grads, state, params, batch=batch, ls_batch=ls)
        uc, chained_state = chained.update(grads, chained_state, params, batch=batch, ls_batch=ls)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(uc), strict=True):
            np.testing.assert_allclose(0.5 * np.asarray(a), b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: optax.inject_hyperparams(soap, static_args=("max_precond_dim",))(
            learning_rate=0.02, precondition_frequency=2, weight_decay=0.0
        ),
        lambda: optax.inject_hyperparams(muon)(learning_rate=0.02, adam_learning_rate=0.02),
        lambda: optax.inject_hyperparams(muon_optax)(learning_rate=0.02, adam_learning_rate=0.02),
    ],
    ids=["soap", "muon", "muon_optax"],
)
def test_raw_factories_under_inject_hyperparams(factory):
    params, batch, _ = quadratic_problem()
    tx = factory()
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss_of, argnums=1)(linear_apply, params, batch)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    start = float(loss_of(linear_apply, params, batch))
    for _ in range(10):
        params, state = step(params, state)
    assert float(loss_of(linear_apply, params, batch)) < start
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    state.hyperparams["learning_rate"] = jnp.zeros_like(state.hyperparams["learning_rate"])
    if "adam_learning_rate" in state.hyperparams:
        state.hyperparams["adam_learning_rate"] = jnp.zeros_like(state.hyperparams["learning_rate"])
    frozen, _ = step(params, state)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_registry_reports_learning_rate_in_state():
    params, _, _ = quadratic_problem()
    for name in ("muon", "muon_optax", "soap"):
        opt = make_optimizer(name, linear_apply)
        state = opt.tx.init(params)
        assert "learning_rate" in state.hyperparams
        assert opt.hparams["name"] == name


@pytest.mark.parametrize(
    "name,inner", [(n, None) for n in NAMES] + [("gauss_newton", i) for i in ("muon", "kfac")]
)
def test_builder_reads_only_the_sections_its_identity_keeps(name, inner):
    """A run's identity leaves out the optimizer sections its method does not read
    (gnbench.train.identity.sections_read): with those sections deleted the method still builds
    and takes the same steps, so no unread setting can change a result."""
    from gnbench.train.identity import sections_read

    params, batch, ls_batch = quadratic_problem()
    results = []
    for prune in (False, True):
        cfg = optimizer_config(name)
        if inner is not None:
            cfg.gn.inner = inner
        unread = {k for k, v in cfg.items() if hasattr(v, "items")}
        unread -= sections_read(cfg.to_dict())
        if prune:
            assert unread, f"{name}: every section is read, nothing to prune"
            for key in unread:
                del cfg[key]
        opt = build(cfg, build_context(linear_apply, jax.tree.map(lambda a: a[0], batch)))
        step = make_step(opt, linear_apply)
        p, state = params, opt.tx.init(params)
        for _ in range(2):
            p, state = step(p, state, batch, ls_slice(opt, ls_batch))
        results.append(p)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_array_equal(a, b)
