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
from typing import TYPE_CHECKING, Any

import optax

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

    Compute is not declared here: the trainer measures the FLOPs of the compiled step
    (:mod:`gnbench.train.flops`).
    """

    tx: optax.GradientTransformationExtraArgs
    hparams: dict[str, Any]
    ls_micro_batches: int = 0
    ls_reuses_batch: bool = False
    reads_grads: bool = True

    @property
    def fresh_ls_micro_batches(self) -> int:
        """Micro-batches of new data the line search reads per iteration."""
        return 0 if self.ls_reuses_batch else self.ls_micro_batches


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
    :func:`gnbench.optim.gauss_newton.with_inner_schedule`) a number lives in the optimizer
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


def _opt(cfg: Any, key: str, default: Any) -> Any:
    """``cfg[key]``, or ``default`` for a config written without that key (a hand-made one)."""
    return cfg[key] if key in cfg else default


def outer_schedule(
    cfg: ml_collections.ConfigDict, peak: float, ctx: BuildContext
) -> optax.ScalarOrSchedule:
    """The outer optimizers' schedule of ``peak`` from ``cfg.schedule`` and its fields."""
    return schedule(
        peak,
        ctx.total_steps,
        cfg.warmup_steps,
        cfg.schedule,
        end=_opt(cfg, "schedule_end", 0.1),
        start=_opt(cfg, "warmup_start", 0.0),
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


# Further optimizers register below (issue 3: muon, muon_optax, soap; issue 4: the Gauss-Newton
# family).


def _muon_family(name: str, make_tx: Callable[..., optax.GradientTransformation]) -> Builder:
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
        )

    return build_muon


def _reference_muon(cfg, ctx, learning_rate, adam_learning_rate) -> optax.GradientTransformation:
    """The field's reference Muon (:mod:`gnbench.optim.muon`) after one global-norm clip."""
    from gnbench.optim.muon import muon

    m = cfg.muon
    return optax.chain(
        clip(cfg.grad_clip),
        muon(
            learning_rate,
            adam_learning_rate=adam_learning_rate,
            momentum=m.momentum,
            nesterov=m.nesterov,
            ns_steps=m.ns_steps,
            weight_decay=cfg.weight_decay,
            adam_b1=cfg.b1,
            adam_b2=cfg.b2,
            adam_eps=cfg.eps,
            adam_weight_decay=m.adam_weight_decay,
            labels=ctx.param_labels,
        ),
    )


def _optax_muon(cfg, ctx, learning_rate, adam_learning_rate) -> optax.GradientTransformation:
    """``optax.contrib.muon`` routed as the GN paper's code (:mod:`gnbench.optim.muon_optax`).

    ``grad_clip`` clips each group (embed/head; the rest) by its own norm, as the paper's two
    chains do. The paper's setting: ``weight_decay=0`` (Muon matrices undecayed),
    ``muon.adam_weight_decay`` = its decay, ``muon.adam_learning_rate`` = ``learning_rate``.
    """
    from gnbench.optim.muon_optax import muon_optax

    m = cfg.muon
    return muon_optax(
        learning_rate,
        adam_learning_rate=adam_learning_rate,
        momentum=m.momentum,
        nesterov=m.nesterov,
        ns_steps=m.ns_steps,
        weight_decay=cfg.weight_decay,
        adam_b1=cfg.b1,
        adam_b2=cfg.b2,
        eps=cfg.eps,
        adam_weight_decay=m.adam_weight_decay,
        grad_clip=cfg.grad_clip,
        labels=ctx.param_labels,
    )


register("muon")(_muon_family("muon", _reference_muon))
register("muon_optax")(_muon_family("muon_optax", _optax_muon))


@register("soap")
def _soap(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
    from gnbench.optim.soap import soap

    s = cfg.soap
    lr = outer_schedule(cfg, cfg.learning_rate, ctx)
    shampoo_beta = None if s.shampoo_beta < 0 else s.shampoo_beta

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            soap(
                learning_rate,
                b1=cfg.b1,
                b2=cfg.b2,
                shampoo_beta=shampoo_beta,
                eps=cfg.eps,
                weight_decay=cfg.weight_decay,
                precondition_frequency=s.precondition_frequency,
                max_precond_dim=s.max_precond_dim,
                merge_dims=s.merge_dims,
                precondition_1d=s.precondition_1d,
                normalize_grads=s.normalize_grads,
                correct_bias=s.correct_bias,
            ),
        )

    return Optimizer(
        tx=optax.with_extra_args_support(make(lr)),
        hparams=dict(
            name="soap",
            learning_rate=cfg.learning_rate,
            b1=cfg.b1,
            b2=cfg.b2,
            shampoo_beta=cfg.b2 if shampoo_beta is None else shampoo_beta,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            precondition_frequency=s.precondition_frequency,
            max_precond_dim=s.max_precond_dim,
            merge_dims=s.merge_dims,
            precondition_1d=s.precondition_1d,
            normalize_grads=s.normalize_grads,
        ),
    )


# --- The Gauss-Newton family (issue 4) ---------------------------------------------------------

# Inner schedules (docs/paper_departures.md maps them to the paper's --lr_sched values).
GN_SCHEDULES = (
    "global_cosine",
    "cosine_with_global_schedule",
    "constant_with_inner_cosine",
    "constant",
    "cosine_per_outer",
)


# The keys that make the paper's configuration (experiments/base.py documents each) and the
# values that keep gnbench's earlier behaviour, for configs written without them.
GN_DEFAULTS = dict(
    inner_grad_clip=0.0,
    schedule_end=0.1,
    warmup_start=0.0,
    outer_warmup_steps=0,
    cycle_warmup_steps=0,
    boundary_off_by_one=False,
    restart_schedule=False,
    schedule_outer_steps=0,
)


def _gn(g: Any, key: str) -> Any:
    return _opt(g, key, GN_DEFAULTS[key])


def _float(x):
    """``x`` as the default float (float64 under ``jax_enable_x64``): schedules keep its dtype."""
    import jax
    import jax.numpy as jnp

    return jnp.asarray(x, jax.dtypes.canonicalize_dtype(jnp.float64))


def _per_outer_schedule(g, peak: float, t: int, k: int) -> Callable[[Any], Any]:
    """The paper's ``cosine_with_global_schedule`` / ``constant_with_inner_cosine``: outer step
    ``s`` runs a warm-up cosine over its K inner steps from the envelope's value ``p_s`` to the
    end value; the envelope is a warm-up cosine (resp. a warm-up constant) over the T outer steps.
    With ``boundary_off_by_one`` (``cosine_with_global_schedule`` only) outer step ``s`` gets
    ``p_{s+1}`` and the last outer step runs at the end value, as the paper's boundaries do."""
    import jax.numpy as jnp

    start, end = _gn(g, "warmup_start"), peak * _gn(g, "schedule_end")
    w_out, w_in = _gn(g, "outer_warmup_steps"), _gn(g, "cycle_warmup_steps")
    cosine_envelope = g.inner_schedule == "cosine_with_global_schedule"
    shifted = cosine_envelope and _gn(g, "boundary_off_by_one") and t >= 2
    if not 0 <= w_in < k or (cosine_envelope and not 0 <= w_out < t):
        raise ValueError(
            f"gn.cycle_warmup_steps={w_in} must be in [0, K={k}) and gn.outer_warmup_steps="
            f"{w_out} in [0, T={t}) for inner_schedule={g.inner_schedule!r}"
        )
    if cosine_envelope:
        envelope = optax.warmup_cosine_decay_schedule(start * peak, peak, w_out, t, end)
    else:
        envelope = optax.linear_schedule(start * peak, peak, w_out) if w_out else lambda s: peak

    def lr(step):
        j = jnp.minimum(step // k, t - 2 if shifted else t - 1)
        p = _float(envelope(_float(j + 1 if shifted else j)))
        i = _float(step - j * k)
        alpha = jnp.where(p == 0, 0.0, end / jnp.where(p == 0, 1.0, p))
        c = jnp.clip(i - w_in, 0, k - w_in) / (k - w_in)
        decayed = p * ((1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * c)) + alpha)
        if not w_in:
            return decayed
        return jnp.where(i < w_in, p * (start + (1 - start) * i / w_in), decayed)

    return lr


def _gn_inner_schedule(g: ml_collections.ConfigDict, ctx: BuildContext) -> optax.ScalarOrSchedule:
    """Inner learning rate as a function of the global inner step (across outer steps).

    T is ``gn.schedule_outer_steps`` (0: the run's outer steps). ``gn.restart_schedule`` indexes
    the schedule by the inner step within the outer step instead (the paper's cold start).
    """
    import jax.numpy as jnp

    k, peak, warmup = ctx.micro_batches, g.inner_learning_rate, g.inner_warmup_steps
    t = _gn(g, "schedule_outer_steps") or ctx.total_steps
    start, end = _gn(g, "warmup_start"), _gn(g, "schedule_end")
    kind = g.inner_schedule
    if kind == "constant":
        return schedule(peak, t * k, warmup, "constant")
    if kind == "global_cosine":
        cosine = schedule(peak, t * k, warmup, "warmup_cosine", end=end, start=start)
        sched = lambda step: cosine(_float(step))  # noqa: E731
    elif kind == "cosine_per_outer":  # gnbench's own: global warm-up ramp x cosine per outer step
        within = optax.cosine_decay_schedule(1.0, decay_steps=k, alpha=end)

        def sched(step):
            ramp = start + (1 - start) * jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
            return peak * ramp * within(step % k)

    elif kind in GN_SCHEDULES:
        sched = _per_outer_schedule(g, peak, t, k)
    else:
        raise ValueError(f"unknown inner_schedule {kind!r}; valid: {', '.join(GN_SCHEDULES)}")
    if not _gn(g, "restart_schedule"):
        return sched
    return lambda step: sched(jnp.asarray(step) % k)


def _gn_inner(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> optax.GradientTransformation:
    """The inner optimizer at unit learning rate, clipped, scaled by the inner schedule.

    ``gn.inner_grad_clip`` clips the inner gradient before the optimizer (the paper's
    ``--inner_clip_gradient``): by its global norm for ``adamw`` and ``muon``, per partition
    (embed/head; the rest) for ``muon_optax`` as the paper's two chains do.
    """
    from gnbench.optim.gauss_newton import with_inner_schedule

    g = cfg.gn
    max_norm = _gn(g, "inner_grad_clip")
    clipped = lambda tx: optax.chain(clip(max_norm), tx) if max_norm else tx  # noqa: E731
    if g.inner == "adamw":
        base = clipped(
            optax.adamw(
                1.0, b1=g.inner_b1, b2=g.inner_b2, eps=cfg.eps, weight_decay=g.inner_weight_decay
            )
        )
    elif g.inner == "muon":  # The field's reference Muon (gnbench.optim.muon).
        from gnbench.optim.muon import muon

        base = clipped(
            muon(
                1.0,
                adam_learning_rate=g.inner_adam_learning_rate / g.inner_learning_rate,
                momentum=cfg.muon.momentum,
                nesterov=cfg.muon.nesterov,
                ns_steps=cfg.muon.ns_steps,
                weight_decay=g.inner_weight_decay,
                adam_b1=g.inner_b1,
                adam_b2=g.inner_b2,
                adam_eps=cfg.eps,
                adam_weight_decay=g.inner_weight_decay,
                labels=ctx.param_labels,
            )
        )
    elif g.inner == "muon_optax":
        # optax.contrib.muon as the paper's llama_train_gn.py build_optimizer(optimizer_type=
        # 'muon') calls it: adam_weight_decay=wd, Muon matrices undecayed, each group clipped.
        from gnbench.optim.muon_optax import muon_optax

        base = muon_optax(
            1.0,
            adam_learning_rate=g.inner_adam_learning_rate / g.inner_learning_rate,
            momentum=cfg.muon.momentum,
            nesterov=cfg.muon.nesterov,
            ns_steps=cfg.muon.ns_steps,
            weight_decay=0.0,
            adam_b1=g.inner_b1,
            adam_b2=g.inner_b2,
            eps=cfg.eps,
            adam_weight_decay=g.inner_weight_decay,
            grad_clip=max_norm or None,
            labels=ctx.param_labels,
        )
    elif g.inner == "kfac":
        # K-FAC-preconditioned inner solver (the ladder's control): factors of the GN model's
        # curvature at θ_t, one micro-batch per inner step; optimizer.kfac's damping, momentum,
        # EMA and estimator; the inner lr, schedule, clip and decay of optimizer.gn.
        from gnbench.optim.kfac import kfac

        if ctx.apply_fn is None or ctx.example_micro_batch is None:
            raise ValueError("gn.inner='kfac' needs BuildContext.apply_fn and example_micro_batch")
        f = cfg.kfac
        base = clipped(
            kfac(
                ctx.apply_fn,
                1.0,
                ctx.example_micro_batch,
                damping=f.damping,
                momentum=f.momentum,
                weight_decay=g.inner_weight_decay,
                curvature_ema=f.curvature_ema,
                estimation_mode=f.estimation_mode,
                exact_inverses=f.exact_inverses,
                loss_kind=ctx.loss_kind,
            )
        )
    else:
        raise ValueError(
            f"unknown gn.inner {g.inner!r}; valid: 'adamw', 'muon', 'muon_optax', 'kfac'"
        )
    return with_inner_schedule(base, _gn_inner_schedule(g, ctx))


def _gn_builder(name: str, method: str, objective: str) -> Builder:
    def build_gn(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
        from gnbench.optim.gauss_newton import gauss_newton, line_search_alphas
        from gnbench.optim.layerwise import layerwise_gauss_newton
        from gnbench.optim.prox_linear import gn_prox_linear

        if ctx.apply_fn is None or ctx.loss_fn is None:
            raise ValueError(f"optimizer {name!r} needs BuildContext.apply_fn and loss_fn")
        g, k = cfg.gn, ctx.micro_batches
        kwargs = dict(
            inner=_gn_inner(cfg, ctx),
            inner_steps=k,
            damping=g.damping,
            line_search=line_search_alphas(g.line_search),
            warm_start=g.warm_start,
        )
        if method == "layerwise" and g.inner == "kfac":
            raise ValueError(f"{name}: gn.inner='kfac' is for full GN (one curvature, all layers)")
        if method == "layerwise":
            tx = layerwise_gauss_newton(ctx.apply_fn, ctx.loss_fn, objective=objective, **kwargs)
        elif objective == "prox_linear":
            tx = gn_prox_linear(ctx.apply_fn, ctx.loss_fn, **kwargs)
        else:
            tx = gauss_newton(ctx.apply_fn, ctx.loss_fn, **kwargs)
        if g.line_search_data not in ("fresh", "inner"):
            raise ValueError(f"gn.line_search_data={g.line_search_data!r}; valid: 'fresh', 'inner'")
        return Optimizer(
            tx=tx,
            hparams=dict(
                name=name,
                inner=g.inner,
                inner_learning_rate=g.inner_learning_rate,
                inner_schedule=g.inner_schedule,
                inner_warmup_steps=g.inner_warmup_steps,
                inner_b1=g.inner_b1,
                inner_b2=g.inner_b2,
                inner_steps=k,
                damping=g.damping,
                line_search=g.line_search,
                warm_start=g.warm_start,
                line_search_data=g.line_search_data,
                **{key: _gn(g, key) for key in GN_DEFAULTS},
            ),
            ls_micro_batches=k if g.line_search else 0,
            ls_reuses_batch=bool(g.line_search) and g.line_search_data == "inner",
            reads_grads=False,
        )

    return build_gn


register("gauss_newton")(_gn_builder("gauss_newton", "full", "gn"))
register("gn_prox_linear")(_gn_builder("gn_prox_linear", "full", "prox_linear"))
register("layerwise_gn")(_gn_builder("layerwise_gn", "layerwise", "gn"))
register("layerwise_prox_linear")(_gn_builder("layerwise_prox_linear", "layerwise", "prox_linear"))

# The approximation ladder's rungs keep their builders next to their transforms; importing the
# modules registers them (they import kfac-jax only when a K-FAC optimizer is built).
from gnbench.optim import diag_gn as _diag_gn  # noqa: E402, F401
from gnbench.optim import kfac as _kfac  # noqa: E402, F401
