"""Optimizer registry: ``name -> builder(config, context) -> Optimizer``.

The trainer never branches on the optimizer: it asks the registry for an :class:`Optimizer`
and always calls ``tx.update(grads, state, params, batch=..., ls_batch=...)``. First-order
methods ignore the extra keyword arguments. Each builder wraps its transform in
``optax.inject_hyperparams`` where it can, so the learning rate in use shows in the logs.

A method registers with what it reads and a check of its own keys (:func:`register`,
:mod:`gnbench.optim.checks`); the trainer's run identity and config validation ask the registry
(:func:`sections_read`, :func:`check_optimizers`) and name no method. Every default lives in
experiments/base.py: builders read each key they use from the config they are given.

A name with a colon is an outside method, ``pkg.module:attr`` or ``path/to/file.py:attr``
(:mod:`gnbench.optim.outside`): resolved where it lives, never registered, it answers the
same questions (:func:`method`), so it goes through the same identity, validation and trainer.

Example:
  >>> import gnbench.optim  # registers every built-in method
  >>> from experiments.base import get_config
  >>> opt = build(get_config().optimizer, BuildContext(total_steps=100, micro_batches=4))
  >>> opt.ls_micro_batches, sorted(sections_read({"name": "soap"}))
  (0, ['soap'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optax

from gnbench.optim.checks import Checks

if TYPE_CHECKING:  # Annotations only: a builder reads its config by attribute access, so any
    import ml_collections  # such object works and `import gnbench.optim` needs no ml_collections.

Builder = Callable[["ml_collections.ConfigDict", "BuildContext"], "Optimizer"]


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder may need besides its own config.

    Attributes:
      total_steps: outer iterations of the run (schedules are built from it).
      micro_batches: K, the micro-batches in one iteration (GN runs K inner steps).
      apply_fn: ``apply_fn(params, micro_batch) -> outputs`` (needed by the GN family).
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss`` (needed by the GN family).
      param_labels: optional callable ``params -> pytree of "muon"/"adam"`` routing parameters
        for Muon (also as GN's inner optimizer); ``None`` means the gnbench transformer's
        default routing.
      example_micro_batch: one micro-batch (arrays or ``jax.ShapeDtypeStruct``), for methods that
        trace the model at ``init`` (K-FAC finds its layers so).
      staged_model: ``apply_fn`` as a chain of stages, one per layerwise-GN block
        (:class:`gnbench.optim.gn.staged.StagedModel`): layerwise GN then shares one forward
        per micro-batch; ``None`` (an arbitrary ``apply_fn``): the generic path.
      loss_kind: which loss ``loss_fn`` is, for the methods that sample from the model's
        predictive distribution (``diag_gn``, ``kfac``): ``softmax_cross_entropy`` (mean over
        every position, the trainer's) or ``squared_error`` (``0.5 * mean((z - y)**2)``).
    """

    total_steps: int
    micro_batches: int
    apply_fn: Callable[..., Any] | None = None
    loss_fn: Callable[..., Any] | None = None
    param_labels: Callable[[Any], Any] | None = None
    example_micro_batch: Any = None
    loss_kind: str = "softmax_cross_entropy"
    staged_model: Any = None


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A built optimizer and what the trainer must know to feed and count it.

    Attributes:
      tx: the Optax transform; ``update(grads, state, params, batch=..., ls_batch=...)``.
      hparams: hyperparameters to log (flat dict of numbers/strings).
      ls_micro_batches: micro-batches the line search evaluates each iteration, passed as
        ``ls_batch`` (0 for methods without a line search).
      ls_reuses_batch: the line search evaluates the inner solve's own micro-batches (``batch``)
        instead of ``ls_micro_batches`` fresh ones, so it reads no extra tokens.
      reads_grads: whether ``tx.update`` uses its gradient argument. If not (the GN family), the
        trainer passes ``None`` and logs the state's ``true_loss`` metric as the loss.
      describe: ``params -> str``, the line the trainer prints at start-up about how the method
        treats these parameters (Muon's routing, K-FAC's blocks), or ``None``.

    Compute is not declared here: the trainer measures the FLOPs of the compiled step
    (:mod:`gnbench.train.flops`).
    """

    tx: optax.GradientTransformationExtraArgs
    hparams: dict[str, Any]
    ls_micro_batches: int = 0
    ls_reuses_batch: bool = False
    reads_grads: bool = True
    describe: Callable[[Any], str] | None = None

    @property
    def fresh_ls_micro_batches(self) -> int:
        """Micro-batches of new data the line search reads per iteration."""
        return 0 if self.ls_reuses_batch else self.ls_micro_batches


# What a method reads: its optimizer sections, fixed or as a function of its config (the GN
# family reads ``muon`` or ``kfac`` when its inner optimizer is one).
Reads = tuple[str, ...] | Callable[[Any], "set[str] | tuple[str, ...]"]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: its builder and the facts the trainer needs about it.

    Attributes:
      build: ``builder(optimizer_config, BuildContext) -> Optimizer``.
      reads: the ``optimizer.<section>`` sub-sections it reads (every key directly under
        ``optimizer`` is shared by all methods); a run's identity leaves the others out.
      check: a check of its own keys (:class:`gnbench.optim.checks.Checks`, or any callable
        raising ``ValueError`` with one line naming the key), run before anything is built.
    """

    build: Builder
    reads: Reads = ()
    check: Callable[[Any], None] | None = None

    def sections(self, optimizer: Any) -> set[str]:
        """The sub-sections this method reads under ``optimizer``."""
        return set(self.reads(optimizer) if callable(self.reads) else self.reads)


_METHODS: dict[str, Method] = {}


def register(
    name: str, *, reads: Reads = (), check: Callable[[Any], None] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` with what it reads and checks.

    Adding a method is its module, its test and this one line: the trainer, the run identity and
    the config validation ask the registry and name no method.

    Example:
      >>> from gnbench.optim.checks import Checks
      >>> @register("toy_sgd", reads=("toy",), check=Checks(positive_floats=("toy.lr",)))
      ... def _toy(cfg, ctx):
      ...     return Optimizer(tx=optax.with_extra_args_support(optax.sgd(cfg.toy.lr)), hparams={})
      >>> method("toy_sgd").sections({}), unregister("toy_sgd")
      ({'toy'}, None)
    """

    def wrap(builder: Builder) -> Builder:
        if name in _METHODS:
            raise ValueError(f"optimizer {name!r} is registered twice")
        _METHODS[name] = Method(builder, reads, check)
        return builder

    return wrap


def unregister(name: str) -> None:
    """Removes ``name`` from the registry (tests that register a toy method clean up)."""
    _METHODS.pop(name, None)


def known_optimizers() -> list[str]:
    """Names accepted by :func:`build`, sorted."""
    return sorted(_METHODS)


def method(name: str) -> Method:
    """The registered :class:`Method` called ``name``, or the outside method an entry
    (``pkg.module:attr``, ``path/to/file.py:attr``) names (:mod:`gnbench.optim.outside`).

    Raises:
      ValueError: unknown name (the message lists the known ones), or an entry that names no
        usable method (:class:`gnbench.optim.outside.OutsideMethodError`).
    """
    if isinstance(name, str) and ":" in name:
        from gnbench.optim.outside import resolve

        return resolve(name)
    if name not in _METHODS:
        raise ValueError(
            f"unknown optimizer {name!r}; known optimizers: {', '.join(known_optimizers())}; "
            "or an outside method: module:NAME or path/to/file.py:NAME"
        )
    return _METHODS[name]


def sections_read(optimizer: Any) -> set[str] | None:
    """The ``optimizer`` sub-sections the method named by ``optimizer["name"]`` reads (an outside
    method's: what its :func:`gnbench.optim.outside.outside_method` declared), or ``None`` for a
    name the registry does not know or an entry that cannot be resolved here (the caller keeps
    every section)."""
    name = optimizer.get("name") if hasattr(optimizer, "get") else None
    try:
        return method(name).sections(optimizer)
    except (ValueError, TypeError):
        return None


def check_optimizers(optimizer: Any) -> None:
    """Runs every registered method's check of its own keys on ``optimizer`` (the config's
    ``optimizer`` section), the named method's first (an outside method's included), each
    distinct check once: a bad value fails before anything is built even in a section the run's
    method does not read (a typo there is as likely a missing ``optimizer.name``).

    Raises:
      ValueError: the first bad value, in one line naming the key.
    """
    name = optimizer.get("name") if hasattr(optimizer, "get") else None
    named = method(name) if isinstance(name, str) and ":" in name else _METHODS.get(name)
    ordered = ([named] if named is not None else []) + list(_METHODS.values())
    seen: list[Callable[[Any], None]] = []
    for m in ordered:
        if m.check is not None and not any(m.check is c for c in seen):
            seen.append(m.check)
            m.check(optimizer)


def build(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
    """Builds the optimizer named by ``cfg.name`` (a registered name or an outside entry).

    Raises:
      ValueError: unknown name (the message lists the known ones); an outside method that
        cannot be resolved or built (:class:`gnbench.optim.outside.OutsideMethodError`).
    """
    return method(cfg.name).build(cfg, ctx)


def schedule(
    peak: float,
    total_steps: int,
    warmup_steps: int,
    kind: str,
    *,
    end: float = 0.1,
    start: float = 0.0,
) -> optax.ScalarOrSchedule:
    """Learning-rate schedule by name: ``warmup_cosine``, ``warmup_constant`` or ``constant``.

    ``warmup_cosine``: linear warm-up from ``start * peak`` to ``peak`` over ``warmup_steps``,
    then a cosine to ``end * peak`` at ``total_steps`` (defaults: from 0, to 10% of peak).
    ``warmup_constant``: the same warm-up, then ``peak`` (the paper's ``constant_with_warmup``).
    ``constant`` (and ``warmup_constant`` without warm-up) returns the number itself, not a
    function: under ``optax.inject_hyperparams`` (and
    :func:`gnbench.optim.gn.gauss_newton.with_inner_schedule`) a number lives in the optimizer
    state, so runs that differ only in a constant learning rate compile to the same program and
    share the persistent compilation cache.
    """
    if kind == "constant" or (kind == "warmup_constant" and warmup_steps == 0):
        return float(peak)
    if kind == "warmup_constant":
        return optax.linear_schedule(start * peak, peak, warmup_steps)
    if kind == "warmup_cosine":
        warmup = min(warmup_steps, max(total_steps - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            init_value=start * peak,
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=end * peak,
        )
    raise ValueError(
        f"unknown schedule {kind!r}; valid: 'warmup_cosine', 'warmup_constant', 'constant'"
    )


def outer_schedule(
    cfg: ml_collections.ConfigDict, peak: float, ctx: BuildContext
) -> optax.ScalarOrSchedule:
    """The outer optimizers' schedule of ``peak`` from ``cfg.schedule`` and its fields."""
    return schedule(
        peak,
        ctx.total_steps,
        cfg.warmup_steps,
        cfg.schedule,
        end=cfg.schedule_end,
        start=cfg.warmup_start,
    )


def clip(max_norm: float | None) -> optax.GradientTransformation:
    """Global-norm clipping; ``None`` or ``0`` means off (never "clip to zero")."""
    if max_norm is None or max_norm == 0:
        return optax.identity()
    if max_norm < 0:
        raise ValueError(f"grad_clip must be >= 0 or None, got {max_norm}")
    return optax.clip_by_global_norm(max_norm)


@register("adamw")
def _adamw(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
    lr = outer_schedule(cfg, cfg.learning_rate, ctx)

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            optax.adamw(
                learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
            ),
        )

    return Optimizer(
        tx=optax.with_extra_args_support(make(lr)),
        hparams=dict(
            name="adamw",
            learning_rate=cfg.learning_rate,
            b1=cfg.b1,
            b2=cfg.b2,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
        ),
    )


# The keys of optimizer.muon both Muons read (muon_family_builder maps them to the transforms).
MUON_CHECKS = Checks(
    positive_ints=("muon.ns_steps",),
    positive_floats=("muon.adam_learning_rate",),
    nonnegative_floats=("muon.adam_weight_decay",),
    decays=("muon.momentum",),
)


def muon_family_builder(name: str, make_tx: Callable[..., optax.GradientTransformation]) -> Builder:
    """A registry builder for a Muon: ``make_tx(cfg, ctx, lr, adam_lr)`` builds the transform
    (clipping included); the schedules, ``inject_hyperparams`` and logged hparams are shared."""

    def build_muon(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
        m = cfg.muon
        lr = outer_schedule(cfg, cfg.learning_rate, ctx)
        adam_lr = outer_schedule(cfg, m.adam_learning_rate, ctx)

        @optax.inject_hyperparams
        def make(learning_rate, adam_learning_rate):
            return make_tx(cfg, ctx, learning_rate, adam_learning_rate)

        return Optimizer(
            tx=optax.with_extra_args_support(make(lr, adam_lr)),
            hparams=dict(
                name=name,
                learning_rate=cfg.learning_rate,
                adam_learning_rate=m.adam_learning_rate,
                momentum=m.momentum,
                nesterov=m.nesterov,
                ns_steps=m.ns_steps,
                weight_decay=cfg.weight_decay,
                adam_weight_decay=m.adam_weight_decay,
                b1=cfg.b1,
                b2=cfg.b2,
                grad_clip=cfg.grad_clip,
            ),
            describe=lambda params: routing_line(name, params),
        )

    return build_muon


def routing_line(which: str, params: Any) -> str:
    """The start-up line of a method that runs a Muon (``which``): how many parameters Muon
    orthogonalizes and how many go to Adam (:mod:`gnbench.optim.routing`)."""
    from gnbench.optim.routing import routing_summary

    return f"gnbench: {which} routing (gnbench.optim.routing): {routing_summary(params)}"


# Every other method's builder sits next to its transform and registers when its module is
# imported, which gnbench/optim/__init__.py does: first_order/ (muon, muon_optax, soap),
# approx_gn/ (diag_gn, kfac) and gn/builders.py (the GN family).
