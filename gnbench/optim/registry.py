"""Optimizer registry: ``name -> builder(config, context) -> Optimizer``.

The trainer never branches on the optimizer: it asks the registry for an :class:`Optimizer`
and always calls ``tx.update(grads, state, params, batch=..., ls_batch=...)``. First-order
methods ignore the extra keyword arguments. Each builder wraps its transform in
``optax.inject_hyperparams`` where it can, so the learning rate in use shows in the logs.

Example:
  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-3, warmup_steps=10,
  ...     schedule="warmup_cosine", b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0))
  >>> opt = build(cfg, BuildContext(total_steps=100, micro_batches=4))
  >>> opt.ls_micro_batches
  0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import optax

Builder = Callable[[ml_collections.ConfigDict, "BuildContext"], "Optimizer"]


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder may need besides its own config.

    Attributes:
      total_steps: outer iterations of the run (schedules are built from it).
      micro_batches: K, the micro-batches in one iteration (GN runs K inner steps).
      apply_fn: ``apply_fn(params, micro_batch) -> outputs`` (needed by the GN family).
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss`` (needed by the GN family).
      param_labels: optional callable ``params -> pytree of str`` routing parameters (Muon, layerwise
        GN); ``None`` means the gnbench transformer's default routing.
    """

    total_steps: int
    micro_batches: int
    apply_fn: Callable[..., Any] | None = None
    loss_fn: Callable[..., Any] | None = None
    param_labels: Callable[[Any], Any] | None = None


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A built optimizer and what the trainer must know to feed and count it.

    Attributes:
      tx: the Optax transform; ``update(grads, state, params, batch=..., ls_batch=...)``.
      hparams: hyperparameters to log (flat dict of numbers/strings).
      ls_micro_batches: extra micro-batches the trainer passes as ``ls_batch`` each iteration
        (0 for methods without a line search).
      grad_equivalents: compute of one iteration in forward+backward equivalents of one
        micro-batch (first-order: K; GN: K inner steps times their measured cost ratio plus the
        line search's forward passes).
    """

    tx: optax.GradientTransformationExtraArgs
    hparams: dict[str, Any]
    ls_micro_batches: int = 0
    grad_equivalents: float = 0.0


_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``."""

    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"optimizer {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return wrap


def known_optimizers() -> list[str]:
    """Names accepted by :func:`build`, sorted."""
    return sorted(_BUILDERS)


def build(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
    """Builds the optimizer named by ``cfg.name``.

    Raises:
      ValueError: unknown name (the message lists the known ones).
    """
    if cfg.name not in _BUILDERS:
        raise ValueError(
            f"unknown optimizer {cfg.name!r}; known optimizers: {', '.join(known_optimizers())}"
        )
    return _BUILDERS[cfg.name](cfg, ctx)


def schedule(
    peak: float, total_steps: int, warmup_steps: int, kind: str
) -> optax.Schedule:
    """Learning-rate schedule by name: ``warmup_cosine`` (to 10% of peak) or ``constant``."""
    if kind == "constant":
        return optax.constant_schedule(peak)
    if kind == "warmup_cosine":
        warmup = min(warmup_steps, max(total_steps - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=0.1 * peak,
        )
    raise ValueError(f"unknown schedule {kind!r}; valid: 'warmup_cosine', 'constant'")


def clip(max_norm: float | None) -> optax.GradientTransformation:
    """Global-norm clipping; ``None`` or ``0`` means off (never "clip to zero")."""
    if max_norm is None or max_norm == 0:
        return optax.identity()
    if max_norm < 0:
        raise ValueError(f"grad_clip must be >= 0 or None, got {max_norm}")
    return optax.clip_by_global_norm(max_norm)


@register("adamw")
def _adamw(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
    lr = schedule(cfg.learning_rate, ctx.total_steps, cfg.warmup_steps, cfg.schedule)

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay),
        )

    return Optimizer(
        tx=optax.with_extra_args_support(make(lr)),
        hparams=dict(name="adamw", learning_rate=cfg.learning_rate, b1=cfg.b1, b2=cfg.b2,
                     weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip),
        grad_equivalents=float(ctx.micro_batches),
    )


# Further optimizers register below (issue 3: muon, soap; issue 4: the Gauss-Newton family).
