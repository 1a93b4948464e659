"""One method's training step at any K: what the trainer runs, and what its FLOPs are measured on.

The trainer compiles the step at the run's K; :mod:`gnbench.train.flops` lowers the same step at
K = 1 and 2 (the optimizer rebuilt for that K) to count its FLOPs. Both go through
:class:`MethodStep`, so the step that is measured is the step that runs. Benchmarks and tests
use it to build a method's step without a data pipeline.

Example:
  >>> from experiments import base                                    # doctest: +SKIP
  >>> ms = MethodStep.create(base.get_config().optimizer, get_model_config("tiny"),
  ...                        make_mesh(), micro_batch=8, seq_len=64, total_steps=10)
  >>> cost = ms.measure_cost(k=4)                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from gnbench import optim
from gnbench.model import ModelConfig
from gnbench.model.sharding import batch_sharding
from gnbench.train.checkpoint import abstract_like
from gnbench.train.flops import formula_fwd_bwd_flops, fwd_bwd_flops, measure_cost
from gnbench.train.state import TrainState, create_state, lm_fns, lm_staged
from gnbench.train.step import make_train_step


@dataclasses.dataclass
class MethodStep:
    """A method's optimizer, state and step, for a model on a mesh.

    Attributes:
      optimizer_cfg: the ``optimizer`` section of a config.
      model_cfg: the model.
      mesh: the device mesh.
      micro_batch, seq_len: b sequences of T tokens per micro-batch.
      total_steps: outer iterations of the run (schedules).
      apply_fn, loss_fn: the LM's functions (:func:`gnbench.train.state.lm_fns`).
      shardings: shardings of the train state.
      abstract_state: its shapes, dtypes and shardings.
      staged_model: ``apply_fn`` as stages (:func:`gnbench.train.state.lm_staged`, set by
        :meth:`create`), for layerwise GN's shared forward; ``None``: the generic path.
    """

    optimizer_cfg: ml_collections.ConfigDict
    model_cfg: ModelConfig
    mesh: Mesh
    micro_batch: int
    seq_len: int
    total_steps: int
    apply_fn: Callable
    loss_fn: Callable
    shardings: TrainState | None = None
    abstract_state: TrainState | None = None
    staged_model: Any = None

    @classmethod
    def create(
        cls,
        optimizer_cfg: ml_collections.ConfigDict,
        model_cfg: ModelConfig,
        mesh: Mesh,
        *,
        micro_batch: int,
        seq_len: int,
        total_steps: int,
        k: int,
        seed: int = 0,
    ) -> tuple[MethodStep, optim.Optimizer, TrainState]:
        """``(method step, optimizer at K=k, initialized sharded state)``."""
        apply_fn, loss_fn = lm_fns(model_cfg)
        ms = cls(
            optimizer_cfg, model_cfg, mesh, micro_batch, seq_len, total_steps, apply_fn, loss_fn
        )
        ms.staged_model = lm_staged(model_cfg)
        opt = ms.optimizer(k)
        state, ms.shardings = create_state(model_cfg, opt.tx, mesh, seed)
        ms.abstract_state = abstract_like(state, ms.shardings)
        return ms, opt, state

    @property
    def batch_sharding(self) -> jax.sharding.NamedSharding:
        """Sharding of a ``K x b x (T+1)`` step batch (sequences over the data axes)."""
        return batch_sharding(self.mesh, batch_axis=1, ndim=3)

    def optimizer(self, k: int) -> optim.Optimizer:
        """The registry's optimizer built for ``k`` micro-batches per iteration."""
        ctx = optim.BuildContext(
            total_steps=self.total_steps,
            micro_batches=k,
            apply_fn=self.apply_fn,
            loss_fn=self.loss_fn,
            staged_model=self.staged_model,
            example_micro_batch=jax.ShapeDtypeStruct(
                (self.micro_batch, self.seq_len + 1), np.int32
            ),
        )
        built = optim.build(self.optimizer_cfg, ctx)
        if built.ls_micro_batches not in (0, k):
            raise ValueError(
                f"line search wants {built.ls_micro_batches} micro-batches; "
                f"the trainer supplies 0 or K={k}"
            )
        return built

    def batch(self, k: int) -> jax.ShapeDtypeStruct:
        """Shape of a step batch of ``k`` micro-batches."""
        shape = (k, self.micro_batch, self.seq_len + 1)
        return jax.ShapeDtypeStruct(shape, np.int32, sharding=self.batch_sharding)

    def lower(self, k: int, opt: optim.Optimizer | None = None) -> jax.stages.Lowered:
        """The jitted step (:func:`gnbench.train.step.make_train_step`) lowered at ``k``."""
        opt = self.optimizer(k) if opt is None else opt
        fresh = opt.fresh_ls_micro_batches > 0
        fn = make_train_step(
            self.apply_fn,
            self.loss_fn,
            opt.tx,
            self.shardings,
            self.batch_sharding,
            fresh,
            ls_reuses_batch=opt.ls_reuses_batch,
            reads_grads=opt.reads_grads,
        )
        return fn.lower(self.abstract_state, *[self.batch(k)] * (1 + fresh))

    def fwd_bwd_flops(self) -> float | None:
        """XLA's FLOPs of one forward+backward over one micro-batch (one grad-equivalent)."""
        mb = jax.ShapeDtypeStruct(
            (self.micro_batch, self.seq_len + 1),
            np.int32,
            sharding=batch_sharding(self.mesh, batch_axis=0, ndim=2),
        )
        params = self.abstract_state.params
        return fwd_bwd_flops(self.apply_fn, self.loss_fn, params, mb)

    def measure_cost(self, k: int, opt: optim.Optimizer | None = None) -> dict[str, Any]:
        """:func:`gnbench.train.flops.measure_cost` of this step at ``k`` micro-batches."""
        return measure_cost(
            lambda kk: self.lower(kk, opt if kk == k else None),
            k,
            self.fwd_bwd_flops,
            devices=self.mesh.size,
            formula=formula_fwd_bwd_flops(
                self.model_cfg, micro_batch=self.micro_batch, seq_len=self.seq_len
            ),
        )


__all__ = ["MethodStep"]
