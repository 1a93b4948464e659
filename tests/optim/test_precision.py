"""The pinned matmul precision (gnbench.optim.precision) reaches every sensitive matmul.

Each check traces the function inside ``jax.default_matmul_precision("bfloat16")`` (what a caller
or a TPU default would impose) and reads the ``precision`` of every ``dot_general`` in the jaxpr,
nested jaxprs included; unpinned code traced the same way gets ``DEFAULT``, so the checks are not
vacuous. ``eigh``/``qr`` carry no precision parameter (see the module docstring).

Tests marked "needs the soap.py/muon.py edit" pass once those modules read gnbench.optim.precision.
"""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnbench.optim import precision
from gnbench.optim.first_order.muon import orthogonalize, scale_by_muon_reference
from gnbench.optim.first_order.soap import scale_by_soap
from gnbench.optim.gn.curvature import gn_vector_product, linearized_model_eval, loss_hvp
from tests.optim.muon_numpy import zeropower_via_newtonschulz5

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
HIGH = (jax.lax.Precision.HIGH, jax.lax.Precision.HIGH)
DEFAULT = (jax.lax.Precision.DEFAULT, jax.lax.Precision.DEFAULT)
ROOT = Path(__file__).resolve().parents[2]


def mlp_apply(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def cross_entropy(logits, x):
    del x
    return -jnp.mean(jax.nn.log_softmax(logits)[:, 0])


def mlp_problem():
    keys = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(keys[0], (3, 5)), "w2": jax.random.normal(keys[1], (5, 4))}
    x = jax.random.normal(keys[2], (6, 3))
    v = jax.tree.map(lambda p: jnp.ones_like(p), params)
    return params, x, v


def precisions_under_bf16(fn, *args):
    """Precisions of ``fn``'s matmuls traced under a bfloat16 default. A fresh wrapper each
    time: JAX caches a traced function by identity, so a changed setting needs a new trace."""
    with jax.default_matmul_precision("bfloat16"):
        jaxpr = jax.make_jaxpr(lambda *a: fn(*a))(*args)
    found = precision.dot_generals(jaxpr)
    assert found, "no dot_general traced: the check would be vacuous"
    return {p for p, _ in found}


CURVATURE_CASES = {
    "gn_vector_product": lambda p, x, v: gn_vector_product(mlp_apply, cross_entropy, p, x, v),
    "linearized_model_eval": lambda p, x, v: linearized_model_eval(
        mlp_apply, cross_entropy, p, x, v, damping=0.1
    ),
    "linearized_model_eval_blocks": lambda p, x, v: linearized_model_eval(
        mlp_apply, cross_entropy, p, x, v, block_labels={"w1": "a", "w2": "b"}
    ),
    "loss_hvp_matmul_loss": lambda p, x, v: loss_hvp(
        lambda z, w: jnp.sum((z @ w) ** 2), x, p["w1"], x
    ),
    "jit_of_gn_vector_product": jax.jit(
        lambda p, x, v: gn_vector_product(mlp_apply, cross_entropy, p, x, v)
    ),
}


def test_unpinned_model_gets_the_callers_precision():
    params, x, _ = mlp_problem()
    assert precisions_under_bf16(mlp_apply, params, x) == {DEFAULT}


@pytest.mark.parametrize("name", list(CURVATURE_CASES))
def test_curvature_products_are_pinned_to_highest(name):
    assert precisions_under_bf16(CURVATURE_CASES[name], *mlp_problem()) == {HIGHEST}


def test_curvature_follows_the_one_setting(monkeypatch):
    monkeypatch.setattr(precision, "CURVATURE", "tensorfloat32")
    assert precisions_under_bf16(CURVATURE_CASES["gn_vector_product"], *mlp_problem()) == {HIGH}
    # optax.tree_utils.tree_vdot/tree_norm fix HIGHEST themselves; every model matmul is HIGH.
    found = precisions_under_bf16(CURVATURE_CASES["linearized_model_eval"], *mlp_problem())
    assert HIGH in found and found <= {HIGH, HIGHEST}


def test_pinned_precision_reaches_the_compiled_program():
    """What XLA receives: every StableHLO dot_general of a jitted GN-vector product is HIGHEST."""
    params, x, v = mlp_problem()
    with jax.default_matmul_precision("bfloat16"):
        text = jax.jit(CURVATURE_CASES["gn_vector_product"]).lower(params, x, v).as_text()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    assert dots
    assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), dots


def soap_update(grads):
    """One SOAP update: its ``lax.cond`` traces the first call (eigh), the regular step and the
    basis refresh (QR)."""
    tx = scale_by_soap(precondition_frequency=1)
    return tx.update(grads, tx.init(grads))


def soap_grads():
    rng = np.random.default_rng(0)
    return {"a": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32), "b": jnp.ones((2, 3, 4))}


def test_soap_update_is_pinned_to_highest():
    assert precisions_under_bf16(soap_update, soap_grads()) == {HIGHEST}


def test_soap_follows_the_one_setting(monkeypatch):
    """Needs the soap.py edit: SOAP's matmuls take their precision from precision.SOAP."""
    monkeypatch.setattr(precision, "SOAP", "tensorfloat32")
    assert precisions_under_bf16(soap_update, soap_grads()) == {HIGH}


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_newton_schulz_runs_in_the_reference_dtype(shape):
    """Needs the muon.py edit: float32 input, bfloat16 matmuls (KellerJordan/Muon's cast)."""
    g = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    with jax.default_matmul_precision("float32"):
        found = precision.dot_generals(jax.make_jaxpr(orthogonalize)(g))
    assert found
    assert {dtypes for _, dtypes in found} == {(jnp.dtype(jnp.bfloat16),) * 2}
    # Still the reference's map, up to bfloat16 rounding (measured: 4-9% relative error, cosine
    # > 0.996 against the float64 port on 6x10 to 512x128 matrices).
    want = zeropower_via_newtonschulz5(np.asarray(g, np.float64), steps=5)
    got = np.asarray(orthogonalize(g), np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.15
    assert np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.99


def test_newton_schulz_keeps_float64_and_the_momentum_stays_float32():
    with jax.enable_x64(True):
        g = jnp.asarray(np.random.default_rng(2).normal(size=(5, 7)))
        found = precision.dot_generals(jax.make_jaxpr(orthogonalize)(g))
        assert {dtypes for _, dtypes in found} == {(jnp.dtype(jnp.float64),) * 2}
    params = {"w": jnp.zeros((5, 7), jnp.bfloat16)}
    state = scale_by_muon_reference().init(params)
    assert state.momentum["w"].dtype == jnp.float32


@pytest.mark.parametrize(
    "dtype, want",
    [(jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.bfloat16), (jnp.float16, jnp.bfloat16)],
)
def test_newton_schulz_dtype(dtype, want):
    assert precision.newton_schulz_dtype(dtype) == jnp.dtype(want)
    with jax.enable_x64(True):
        assert precision.newton_schulz_dtype(jnp.float64) == jnp.dtype(jnp.float64)


def test_bad_settings_name_the_valid_choices(monkeypatch):
    with pytest.raises(ValueError, match="unknown precision part 'muon'; valid: soap, curvature"):
        precision.pinned("muon")
    monkeypatch.setattr(precision, "CURVATURE", "fp32")
    with pytest.raises(ValueError, match=r"precision.CURVATURE='fp32'; valid: default, .*highest"):
        precision.setting("curvature")
    with pytest.raises(ValueError, match="floating dtype, got int32"):
        precision.newton_schulz_dtype(jnp.int32)


def test_pinning_keeps_results():
    """Pinning changes how matmuls are computed, never what: equal to the unpinned product."""
    params, x, v = mlp_problem()
    pinned = CURVATURE_CASES["gn_vector_product"](params, x, v)
    with jax.default_matmul_precision("highest"):
        outputs, jvp_fn = jax.linearize(lambda p: mlp_apply(p, x), params)
        _, hvp = jax.jvp(lambda z: jax.grad(cross_entropy)(z, x), (outputs,), (jvp_fn(v),))
        (want,) = jax.linear_transpose(jvp_fn, params)(hvp)
    for k in params:
        np.testing.assert_allclose(pinned[k], want[k], rtol=1e-6, atol=1e-7)
    assert optax.tree_utils.tree_norm(pinned) > 0


def test_docs_list_every_setting_with_its_value():
    doc = (ROOT / "docs" / "precision.md").read_text()
    for name in ("SOAP", "CURVATURE", "NEWTON_SCHULZ_DTYPE"):
        value = getattr(precision, name)
        assert re.search(rf"`{name}`.*`{value}`", doc), (name, value)
    assert "gnbench/optim/precision.py" in doc
