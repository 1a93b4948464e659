"""What the accelerator check builds on: the base config without ml_collections, a time budget,
and one method's compiled training step, from gnbench.optim + gnbench.model + gnbench.train's
jax-only modules (state, step, flops), so it runs where only jax, flax, optax and numpy exist.

Example:
  >>> cfg = optimizer_config("soap", {"schedule": "constant"})
  >>> cfg.soap.precondition_frequency
  10
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnbench import optim
from gnbench.model import ModelConfig
from gnbench.model.sharding import batch_sharding
from gnbench.optim import loops
from gnbench.train.flops import xla_flops
from gnbench.train.state import TrainState, create_state, lm_fns
from gnbench.train.step import make_train_step

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("adamw", "muon", "soap", "gauss_newton", "layerwise_gn", "gn_prox_linear")
# Short runs from a warm start: constant schedules at the peak, the reference Muon's lr.
OVERRIDES: dict[str, Any] = {"schedule": "constant", "gn.inner_schedule": "constant"}
METHOD_OVERRIDES: dict[str, dict[str, Any]] = {"muon": {"learning_rate": 0.02}}


class Section(dict):
    """A config section: a dict with attribute access (what the registry reads), standing in
    for ``ml_collections.ConfigDict`` while ``experiments/base.py`` runs."""

    def __init__(self, initial: dict | None = None, **kwargs):
        super().__init__(initial or {}, **kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no field {key!r}; fields: {sorted(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __deepcopy__(self, memo):
        return Section({k: copy.deepcopy(v, memo) for k, v in self.items()})


def base_config() -> Section:
    """``experiments/base.py``'s ``get_config()`` with :class:`Section` as ``ConfigDict``."""
    stub = types.ModuleType("ml_collections")
    stub.ConfigDict = Section
    saved = sys.modules.get("ml_collections")
    sys.modules["ml_collections"] = stub
    try:
        spec = importlib.util.spec_from_file_location(
            "_accelerator_base_config", ROOT / "experiments" / "base.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    except AttributeError as e:
        raise RuntimeError(
            f"experiments/base.py needs more of ml_collections than dicts: {e}"
        ) from e
    finally:
        if saved is None:
            del sys.modules["ml_collections"]
        else:
            sys.modules["ml_collections"] = saved


def optimizer_config(name: str, overrides: dict[str, Any] | None = None) -> Section:
    """The base ``optimizer`` section for ``name`` with dotted ``overrides`` applied."""
    cfg = copy.deepcopy(base_config().optimizer)
    cfg.name = name
    for key, value in {**(overrides or {}), **METHOD_OVERRIDES.get(name, {})}.items():
        node, *path = [cfg, *key.split(".")]
        for part in path[:-1]:
            node = node[part]
        if path[-1] not in node:
            raise KeyError(f"optimizer config has no field {key!r}")
        node[path[-1]] = value
    return cfg


class BudgetExceeded(RuntimeError):
    """Raised by :meth:`Budget.check`; ``budget`` marks it as a skip, not a failure."""

    budget = True


class Budget:
    """Wall-clock guard: work that would not finish before ``limit_s`` is skipped with a note."""

    def __init__(self, limit_s: float):
        self.limit_s, self.start, self.notes = limit_s, time.monotonic(), []

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, what: str, estimate_s: float = 0.0) -> None:
        """Raises :class:`BudgetExceeded` (and notes it) if ``what`` would overrun the budget."""
        if self.elapsed() + estimate_s > self.limit_s:
            note = (
                f"skipped {what}: {self.elapsed():.0f} s spent, ~{estimate_s:.0f} s more needed, "
                f"budget {self.limit_s:.0f} s"
            )
            self.notes.append(note)
            raise BudgetExceeded(note)


def is_oom(error: Exception) -> bool:
    """Whether an exception is XLA running out of device memory."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@dataclasses.dataclass
class Step:
    """One method's compiled training step (loops unrolled, so XLA counts all its FLOPs)."""

    name: str
    opt: optim.Optimizer
    compiled: Any
    shardings: TrainState
    micro_batch: int
    k: int
    seq_len: int
    flops: float | None
    memory: dict[str, int] | None
    compile_s: float

    @property
    def n_batches(self) -> int:
        """Step batches per call: the K micro-batches, plus K fresh ones for a line search."""
        return 1 + (self.opt.fresh_ls_micro_batches > 0)

    def init_state(self, host_params: Any) -> TrainState:
        """A fresh state at ``host_params`` (NumPy arrays, so the device copy is new: the step
        donates its state)."""

        def init(p):
            return TrainState(jnp.zeros((), jnp.int32), p, self.opt.tx.init(p))

        return jax.jit(init, out_shardings=self.shardings)(host_params)


def _memory(compiled: Any) -> dict[str, int] | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (backends without it)
        return None
    if m is None:
        return None
    fields = ("argument", "output", "temp", "alias", "generated_code")
    return {f: int(getattr(m, f"{f}_size_in_bytes", 0)) for f in fields}


def build_step(
    name: str,
    model_cfg: ModelConfig,
    mesh: jax.sharding.Mesh,
    *,
    micro_batch: int,
    seq_len: int,
    k: int,
    total_steps: int,
) -> tuple[Step, TrainState]:
    """Compiles ``name``'s training step for ``k`` micro-batches of ``micro_batch`` sequences.

    Returns the step and an initialized state (its own params at seed 0).
    """
    apply_fn, loss_fn = lm_fns(model_cfg)
    ctx = optim.BuildContext(
        total_steps=total_steps, micro_batches=k, apply_fn=apply_fn, loss_fn=loss_fn
    )
    opt = optim.build(optimizer_config(name, OVERRIDES), ctx)
    state, shardings = create_state(model_cfg, opt.tx, mesh, seed=0)
    bsh = batch_sharding(mesh, batch_axis=1, ndim=3)
    fresh = opt.fresh_ls_micro_batches > 0
    fn = make_train_step(
        apply_fn,
        loss_fn,
        opt.tx,
        shardings,
        bsh,
        fresh,
        ls_reuses_batch=opt.ls_reuses_batch,
        reads_grads=opt.reads_grads,
    )
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    batch = jax.ShapeDtypeStruct((k, micro_batch, seq_len + 1), np.int32, sharding=bsh)
    start = time.perf_counter()
    with loops.unrolled():
        compiled = fn.lower(abstract, *[batch] * (1 + fresh)).compile()
    step = Step(
        name,
        opt,
        compiled,
        shardings,
        micro_batch,
        k,
        seq_len,
        xla_flops(compiled),
        _memory(compiled),
        time.perf_counter() - start,
    )
    return step, state


__all__ = [
    "METHODS",
    "ROOT",
    "Budget",
    "BudgetExceeded",
    "Section",
    "Step",
    "base_config",
    "build_step",
    "is_oom",
    "optimizer_config",
]
