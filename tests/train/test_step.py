"""What the jitted train step hands the optimizer: gradients or none, line-search data."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnbench.model import get_model_config
from gnbench.model.sharding import batch_sharding, make_mesh
from gnbench.train.state import create_state, lm_fns
from gnbench.train.step import make_train_step


class SpyState(NamedTuple):
    metrics: dict[str, jax.Array]


def spy() -> optax.GradientTransformationExtraArgs:
    """A no-op optimizer reporting what ``update`` received, as ``metrics`` the step logs."""

    def init(params):
        del params
        zero = jnp.zeros((), jnp.float32)
        return SpyState(dict(got_grads=zero, ls_is_batch=zero, ls_first=zero, true_loss=zero))

    def update(updates, state, params=None, *, batch=None, ls_batch=None, **_):
        got = 0.0 if updates is None else 1.0
        same = jnp.all(ls_batch == batch).astype(jnp.float32)
        metrics = dict(
            got_grads=jnp.float32(got),
            ls_is_batch=same,
            ls_first=ls_batch[0, 0, 0].astype(jnp.float32),
            true_loss=jnp.float32(7.0),
        )
        return jax.tree.map(jnp.zeros_like, params), SpyState(metrics)

    return optax.GradientTransformationExtraArgs(init, update)


@pytest.mark.parametrize(
    "fresh, reuse, reads_grads", [(True, False, True), (False, True, False), (True, False, False)]
)
def test_step_passes_gradients_and_line_search_data_as_declared(fresh, reuse, reads_grads):
    model_cfg = get_model_config("tiny")
    apply_fn, loss_fn = lm_fns(model_cfg)
    mesh = make_mesh(1, 1, jax.devices()[:1])
    state, shardings = create_state(model_cfg, spy(), mesh, seed=0)
    bs = batch_sharding(mesh, batch_axis=1, ndim=3)
    step = make_train_step(apply_fn, loss_fn, spy(), shardings, bs, fresh, reuse, reads_grads)
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.integers(1, 256, (2, 4, 9), dtype=np.int32)) for _ in range(2)]
    batches[1] = batches[1].at[0, 0, 0].set(0)  # Tell the fresh batch apart.
    _, metrics = step(state, *batches[: 1 + fresh])
    assert float(metrics["got_grads"]) == float(reads_grads)
    assert float(metrics["ls_is_batch"]) == float(reuse)
    assert float(metrics["ls_first"]) == (0.0 if fresh else float(batches[0][0, 0, 0]))
    if reads_grads:  # The trainer's own loss: near ln(256) at initialization.
        assert float(metrics["loss"]) == pytest.approx(np.log(256), abs=0.3)
    else:  # No gradient pass: the loss is the optimizer's true_loss.
        assert float(metrics["loss"]) == 7.0
