"""Measured compute: XLA's FLOPs of the compiled step against closed forms and against itself."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from experiments import base
from gnbench import optim
from gnbench.model import get_model_config, init_params
from gnbench.model.sharding import make_mesh
from gnbench.optim import loops
from gnbench.train.flops import (
    formula_fwd_bwd_flops,
    forward_flops,
    fwd_bwd_flops,
    measure_cost,
    step_flops,
    xla_flops,
)
from gnbench.train.method_step import MethodStep
from gnbench.train.state import lm_fns

B, T = 8, 64


def optimizer_config(name: str, **gn) -> ml_collections.ConfigDict:
    cfg = base.get_config().optimizer
    cfg.name = name
    for key, value in gn.items():
        cfg.gn[key] = value
    return cfg


def lowering(model: str, opt_cfg: ml_collections.ConfigDict):
    """``(lower_at(k), apply_fn, loss_fn, abstract params)`` of the trainer's step on 1 device."""
    model_cfg = get_model_config(model)
    mesh = make_mesh(1, 1, jax.devices()[:1])
    ms, _, _ = MethodStep.create(
        opt_cfg, model_cfg, mesh, micro_batch=B, seq_len=T, total_steps=10, k=1
    )
    params = jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0)))
    return ms.lower, ms.apply_fn, ms.loss_fn, params


def micro_batch():
    return jax.ShapeDtypeStruct((B, T + 1), np.int32)


def test_xla_counts_a_loop_body_once_so_steps_are_measured_unrolled():
    lower_at, *_ = lowering("tiny", optimizer_config("adamw"))
    rolled = xla_flops(lower_at(4).compile())
    assert step_flops(lower_at, 4) > 3 * rolled  # What unrolling is for.


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamw", "gauss_newton"])
def test_step_flops_extrapolated_from_k1_k2_equal_an_unrolled_compile(name):
    lower_at, *_ = lowering("tiny", optimizer_config(name, line_search=2))
    with loops.unrolled():
        direct = xla_flops(lower_at(4).compile())
    assert step_flops(lower_at, 4) == pytest.approx(direct, rel=2e-3)


def test_adamw_flops_per_token_match_6n_plus_attention():
    k = 4
    lower_at, apply_fn, loss_fn, params = lowering("tiny", optimizer_config("adamw"))
    formula = formula_fwd_bwd_flops(get_model_config("tiny"), micro_batch=B, seq_len=T)
    per_token = step_flops(lower_at, k) / (k * B * T)
    assert per_token == pytest.approx(formula / (B * T), rel=0.15)
    unit = fwd_bwd_flops(apply_fn, loss_fn, params, micro_batch())
    assert unit == pytest.approx(formula, rel=0.15)
    # The forward is a third of forward+backward (the backward does two matmuls per matmul).
    fwd = forward_flops(apply_fn, loss_fn, params, micro_batch())
    assert fwd / unit == pytest.approx(1 / 3, rel=0.1)


def test_gn_inner_step_costs_forward_plus_jvp_plus_vjp():
    model_cfg = get_model_config("tiny")
    apply_fn, loss_fn = lm_fns(model_cfg)
    params = jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0)))
    mb = micro_batch()

    def model(p, x):
        return apply_fn(p, x)

    def jvp(p, v, x):  # Primal forward and the tangent pass in the parameters.
        return jax.jvp(lambda q: model(q, x), (p,), (v,))

    jvp_flops = xla_flops(jax.jit(jvp).lower(params, params, mb).compile())
    fwd = forward_flops(apply_fn, loss_fn, params, mb)
    vjp = fwd_bwd_flops(apply_fn, loss_fn, params, mb)  # Forward + backward (the VJP).
    reference = jvp_flops + vjp - fwd  # Forward once, then JVP, then VJP.

    tx = optim.gauss_newton(apply_fn, loss_fn, inner=optax.sgd(1e-3), inner_steps=1)
    state = jax.eval_shape(tx.init, params)
    batch = jax.ShapeDtypeStruct((1, B, T + 1), np.int32)
    with loops.unrolled():
        update = jax.jit(lambda s, p, x: tx.update(None, s, p, batch=x))
        inner = xla_flops(update.lower(state, params, batch).compile())
    assert inner == pytest.approx(reference, rel=0.15)


@pytest.mark.slow
def test_line_search_on_inner_data_reads_no_extra_tokens_and_costs_the_same():
    fresh_at, *_ = lowering("tiny", optimizer_config("gauss_newton", line_search=3))
    reuse_at, *_ = lowering(
        "tiny", optimizer_config("gauss_newton", line_search=3, line_search_data="inner")
    )
    assert len(fresh_at(2).args_info[0]) == 3 and len(reuse_at(2).args_info[0]) == 2
    assert step_flops(reuse_at, 2) == pytest.approx(step_flops(fresh_at, 2), rel=1e-3)


def test_without_a_cost_analysis_the_formula_stands_in_and_the_log_says_so(capsys):
    class NoCost:  # A backend whose compiled programs report no cost analysis.
        def compile(self):
            return self

        def cost_analysis(self):
            return None

    cost = measure_cost(lambda k: NoCost(), 4, lambda: None, devices=1, formula=10.0)
    assert cost == dict(step_flops=40.0, fwd_bwd_flops=10.0, source="formula")
    assert "no cost analysis" in capsys.readouterr().out
