"""Outside methods (gnbench/optim/outside.py): entries resolve from a module or a file, an optax
factory runs as optax runs it, the examples' builders are declared and checked, and every bad
entry fails in one line naming the entry and the fix."""

import textwrap
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import base
from gnbench.optim import BuildContext, Optimizer, build
from gnbench.optim.outside import OutsideMethodError, resolve
from gnbench.optim.registry import check_optimizers, sections_read
from gnbench.sweep.spec import REPO_ROOT
from gnbench.train.identity import result_config
from gnbench.train.validation import ConfigError, validate_config

LION = str(REPO_ROOT / "examples" / "my_optimizers" / "lion.py")
LINE_SEARCH = str(REPO_ROOT / "examples" / "my_optimizers" / "line_search_sgd.py")
CTX = BuildContext(total_steps=10, micro_batches=2)


def _optimizer_cfg(name, **sections):
    cfg = base.get_config().optimizer
    cfg.name = name
    cfg.schedule, cfg.warmup_steps, cfg.grad_clip = "constant", 0, None
    with cfg.unlocked():
        for key, values in sections.items():
            cfg[key] = values
    return cfg


def _params_and_grads(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w": jax.random.normal(k1, (3, 4)), "b": jnp.zeros(4)}
    grads = [
        jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.fold_in(k2, i), p.shape), params)
        for i in range(3)
    ]
    return params, grads


def _run(tx, params, grads, **extra):
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(g, state, params, **extra)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7), x, y)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """``write(source) -> module name``: a module of a fresh package on ``sys.path``."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source):
        name = f"outside_pkg_{uuid.uuid4().hex[:8]}"
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "opt.py").write_text(textwrap.dedent(source))
        return f"{name}.opt"

    return write


BUILDER = """
    import optax
    from gnbench.optim import Optimizer, outside_method
    from gnbench.optim.checks import Checks

    @outside_method(reads=("toy",), check=Checks(positive_floats=("toy.lr",)))
    def build(cfg, ctx):
        return Optimizer(tx=optax.sgd(cfg.toy.lr), hparams=dict(lr=cfg.toy.lr))
"""


def test_a_module_entry_resolves_once_with_what_it_declares(package):
    entry = package(BUILDER) + ":build"
    method = resolve(entry)
    assert resolve(entry) is method  # Cached by the entry string.
    assert method.sections({"toy": {"lr": 0.1}}) == {"toy"}
    cfg = _optimizer_cfg(entry, toy={"lr": 0.5})
    assert sections_read(cfg.to_dict()) == {"toy"}
    with pytest.raises(ValueError, match=r"optimizer\.toy\.lr=-1 must be a finite number > 0"):
        check_optimizers({**cfg.to_dict(), "toy": {"lr": -1}})
    opt = build(cfg, CTX)
    # A plain GradientTransformation gets the extra-args support the trainer's call needs.
    params, grads = _params_and_grads()
    got = _run(opt.tx, params, grads, batch=None, ls_batch=None)
    _assert_same(got, _run(optax.sgd(0.5), params, grads))


def test_a_file_entry_resolves_the_example_and_equals_optax_lion():
    entry = f"{LION}:lion"
    lion = {"b1": 0.8, "b2": 0.95, "weight_decay": 0.1}
    cfg = _optimizer_cfg(entry, lion=lion)
    cfg.learning_rate = 1e-3
    assert sections_read(cfg.to_dict()) == {"lion"}
    opt = build(cfg, CTX)
    assert opt.reads_grads and opt.hparams["b1"] == 0.8
    params, grads = _params_and_grads(1)
    got = _run(opt.tx, params, grads, batch=None, ls_batch=None)
    _assert_same(got, _run(optax.lion(1e-3, **lion), params, grads))
    # The run's identity keeps Lion's section; AdamW's identity drops it.
    full = base.get_config()
    with full.unlocked():
        full.optimizer = cfg
    keys = result_config(full.to_dict())
    assert keys["optimizer.lion.b1"] == 0.8
    full.optimizer.name = "adamw"
    assert not any(k.startswith("optimizer.lion") for k in result_config(full.to_dict()))


def test_the_example_checks_its_own_keys_through_the_trainers_validation():
    cfg = base.get_config()
    with cfg.unlocked():
        cfg.optimizer.lion = {"b1": 1.5, "b2": 0.99, "weight_decay": 0.0}
    cfg.optimizer.name = f"{LION}:lion"
    with pytest.raises(ConfigError, match=r"optimizer\.lion\.b1=1\.5 must be in \[0, 1\)"):
        validate_config(cfg)
    cfg.optimizer.lion.b1 = 0.9
    validate_config(cfg)


@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine"])
def test_an_optax_factory_updates_as_optax_does_under_the_configs_schedule(schedule):
    cfg = _optimizer_cfg("optax:lion")
    cfg.learning_rate, cfg.schedule, cfg.warmup_steps = 3e-3, schedule, 2
    opt = build(cfg, CTX)
    assert resolve("optax:lion").sections({}) == set() and resolve("optax:lion").check is None
    assert opt.hparams == dict(name="optax:lion", learning_rate=3e-3, grad_clip=None)
    lr = 3e-3
    if schedule == "warmup_cosine":  # AdamW's schedule (registry.outer_schedule), from the config.
        lr = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 2, 10, end_value=3e-4)
    params, grads = _params_and_grads(2)
    got = _run(opt.tx, params, grads, batch=None, ls_batch=None)
    _assert_same(got, _run(optax.lion(lr), params, grads))
    logged = opt.tx.init(params).hyperparams["learning_rate"]  # What the trainer logs.
    assert float(logged) == pytest.approx(3e-3 if schedule == "constant" else 0.0)


def test_an_optax_factory_clips_first_as_adamw_does():
    cfg = _optimizer_cfg("optax:sgd")
    cfg.learning_rate, cfg.grad_clip = 0.1, 1.0
    params, grads = _params_and_grads(3)
    got = _run(build(cfg, CTX).tx, params, grads, batch=None)
    want = _run(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1)), params, grads)
    _assert_same(got, want)


def test_the_data_reading_example_takes_the_largest_armijo_step_on_the_batch():
    """L(θ) = mean over the K micro-batches of ‖θ − x‖²/2: the gradient is θ − mean(x), and
    the Armijo condition with c = 0.5 holds exactly for steps up to 1 (the exact minimizer)."""
    cfg = _optimizer_cfg(
        f"{LINE_SEARCH}:build", line_search={"shrink": 0.5, "tries": 4, "armijo": 0.5}
    )
    cfg.learning_rate = 4.0
    apply_fn = lambda p, x: p - x  # noqa: E731
    loss_fn = lambda z, x: 0.5 * jnp.sum(z**2) / x.shape[0]  # noqa: E731
    ctx = BuildContext(total_steps=10, micro_batches=2, apply_fn=apply_fn, loss_fn=loss_fn)
    opt = build(cfg, ctx)
    assert not opt.reads_grads and sections_read(cfg.to_dict()) == {"line_search"}
    batch = jnp.array([[[1.0, 2.0]], [[3.0, 4.0]]])  # K=2 micro-batches of one point.
    theta = jnp.zeros(2)
    state = opt.tx.init(theta)
    updates, state = opt.tx.update(None, state, theta, batch=batch, ls_batch=None)
    # Steps tried 4, 2, 1, 0.5: 1 is the largest passing; it lands on the minimizer mean(x).
    np.testing.assert_allclose(theta + updates, [2.0, 3.0], rtol=1e-6)
    assert float(state.metrics["alpha"]) == 0.25 and float(state.metrics["alpha_min"]) == 0.125
    assert float(state.metrics["true_loss"]) == pytest.approx(0.5 * (1 + 4 + 9 + 16) / 2)


def _bad_builder(body):
    return f"""
    import optax
    from gnbench.optim import Optimizer, outside_method

    @outside_method(reads=())
    {body}
"""


# (case, entry with {module}/{file}, module source or None, file source or None, phrases).
BAD = [
    (
        "module-not-found",
        "no_such_pkg_xyz.opt:build",
        None,
        None,
        ["module 'no_such_pkg_xyz.opt' not found", "PYTHONPATH"],
    ),
    (
        "file-not-found",
        "{tmp}/nope.py:build",
        None,
        None,
        ["file {tmp}/nope.py not found", "path/to/file.py:NAME"],
    ),
    (
        "file-fails-to-import",
        "{file}:build",
        None,
        "1 / 0\n",
        ["failed to import: ZeroDivisionError", "fix the file"],
    ),
    (
        "attr-missing",
        "{module}:biuld",
        BUILDER,
        None,
        ["has no attribute 'biuld' (did you mean 'build'?)", ":NAME"],
    ),
    ("not-callable", "{module}:X", "X = 3\n", None, ["X is a int, not callable", "outside_method"]),
    (
        "wrong-signature",
        "{module}:build",
        _bad_builder("def build(cfg):\n        pass"),
        None,
        ["cannot be called as build(cfg, ctx)", "(cfg, ctx) -> Optimizer"],
    ),
    (
        "neither-contract",
        "{module}:f",
        "def f(a, b, c):\n    pass\n",
        None,
        ["f(a, b, c) is neither contract", "outside_method"],
    ),
    (
        "builder-raises",
        "{module}:build",
        _bad_builder("def build(cfg, ctx):\n        return cfg.nope.lr"),
        None,
        ["its builder raised AttributeError", "fix the builder"],
    ),
    (
        "builder-returns-tx",
        "{module}:build",
        _bad_builder("def build(cfg, ctx):\n        return optax.sgd(0.1)"),
        None,
        ["returned GradientTransformation", "Optimizer(tx=tx"],
    ),
    (
        "builder-returns-none",
        "{module}:build",
        _bad_builder("def build(cfg, ctx):\n        pass"),
        None,
        ["returned NoneType, not an Optimizer"],
    ),
    (
        "factory-returns-junk",
        "{module}:f",
        "def f(learning_rate):\n    return 3\n",
        None,
        ["factory returned int, not an optax.GradientTransformation"],
    ),
    (
        "factory-raises",
        "{module}:f",
        "def f(learning_rate):\n    raise KeyError('b1')\n",
        None,
        ["factory raised KeyError", "learning_rate=0.003"],
    ),
    ("no-attr-part", "optax:", None, None, ["module:NAME or path/to/file.py:NAME"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_each_bad_entry_fails_in_one_line_naming_the_entry_and_the_fix(case, package, tmp_path):
    _, entry, module_source, file_source, phrases = case
    fill = dict(tmp=tmp_path)
    if module_source is not None:
        fill["module"] = package(module_source)
    if file_source is not None:
        (tmp_path / "mine.py").write_text(file_source)
        fill["file"] = str(tmp_path / "mine.py")
    entry = entry.format(**fill)
    cfg = _optimizer_cfg(entry)
    with pytest.raises(OutsideMethodError) as err:
        build(cfg, CTX)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"optimizer {entry!r}: "), message
    for phrase in phrases:
        assert phrase.format(**fill) in message, message
    if not case[0].startswith(("builder", "factory")):  # Resolving fails before any build.
        full = base.get_config()
        full.optimizer.name = entry
        with pytest.raises(ConfigError, match="^optimizer "):
            validate_config(full)
    assert isinstance(err.value, ValueError) and Optimizer  # The trainer catches ValueErrors.
