"""``model.dtype=bfloat16`` changes the compute dtype only: after a training step every floating
leaf of the parameters and of every optimizer's state is still float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.base import get_config
from gnbench.model import get_model_config
from gnbench.model.sharding import make_mesh
from gnbench.optim import known_optimizers
from gnbench.train.method_step import MethodStep


def floating_dtypes(tree):
    """``{path: dtype}`` of the floating leaves of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {
        jax.tree_util.keystr(p): x.dtype for p, x in leaves if jnp.issubdtype(x.dtype, jnp.floating)
    }


@pytest.mark.parametrize("name", known_optimizers())
def test_bf16_compute_keeps_params_and_optimizer_state_float32(name):
    cfg = get_config().optimizer
    cfg.name = name
    cfg.schedule = "constant"  # warmup_cosine starts at 0: the first step would not move.
    model_cfg = get_model_config("tiny", dtype="bfloat16", n_layers=1, d_model=32, d_ff=64)
    mesh = make_mesh(1, 1, jax.devices()[:1])
    ms, opt, state = MethodStep.create(
        cfg, model_cfg, mesh, micro_batch=2, seq_len=8, total_steps=10, k=2
    )
    lowered = ms.lower(2, opt)
    assert "bf16" in lowered.as_text()  # The step does compute in bfloat16.
    rng = np.random.default_rng(0)
    batches = [
        jnp.asarray(rng.integers(0, model_cfg.vocab_size, (2, 2, 9), dtype=np.int32))
        for _ in range(1 + (opt.fresh_ls_micro_batches > 0))
    ]
    before = jax.tree.map(np.asarray, state.params)
    step = lowered.compile()
    for _ in range(2):  # SOAP's first update only sets its bases.
        state, metrics = step(state, *batches)
        assert np.isfinite(float(metrics["loss"]))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), state.params, before))
    assert max(moved) > 0, "the step left the parameters unchanged"
    params, opt_state = floating_dtypes(state.params), floating_dtypes(state.opt_state)
    assert params and opt_state
    assert set(params.values()) == {jnp.dtype(jnp.float32)}, params
    assert {k: v for k, v in opt_state.items() if v != jnp.float32} == {}
