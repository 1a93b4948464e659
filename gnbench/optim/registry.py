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
      param_labels: optional callable ``params -> pytree of "muon"/"adam"`` routing parameters
        for Muon (also as GN's inner optimizer); ``None`` means the gnbench transformer's
        default routing.
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


def schedule(peak: float, total_steps: int, warmup_steps: int, kind: str) -> optax.ScalarOrSchedule:
    """Learning-rate schedule by name: ``warmup_cosine`` (to 10% of peak) or ``constant``.

    ``constant`` returns the number itself, not a function: under ``optax.inject_hyperparams``
    (and :func:`gnbench.optim.gauss_newton.with_inner_schedule`) a number lives in the optimizer
    state, so runs that differ only in a constant learning rate compile to the same program and
    share the persistent compilation cache.
    """
    if kind == "constant":
        return float(peak)
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
        lr = schedule(cfg.learning_rate, ctx.total_steps, cfg.warmup_steps, cfg.schedule)
        adam_lr = schedule(m.adam_learning_rate, ctx.total_steps, cfg.warmup_steps, cfg.schedule)

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
    lr = schedule(cfg.learning_rate, ctx.total_steps, cfg.warmup_steps, cfg.schedule)
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


def _gn_inner_schedule(g: ml_collections.ConfigDict, ctx: BuildContext) -> optax.Schedule:
    """Inner learning rate as a function of the global inner step (across outer steps)."""
    import jax.numpy as jnp

    k, peak, warmup = ctx.micro_batches, g.inner_learning_rate, g.inner_warmup_steps
    if g.inner_schedule == "global_cosine":
        return schedule(peak, ctx.total_steps * k, warmup, "warmup_cosine")
    if g.inner_schedule == "constant":
        return schedule(peak, ctx.total_steps * k, warmup, "constant")
    if g.inner_schedule == "cosine_per_outer":
        within = optax.cosine_decay_schedule(1.0, decay_steps=k, alpha=0.1)

        def per_outer(step):
            ramp = jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
            return peak * ramp * within(step % k)

        return per_outer
    raise ValueError(
        f"unknown inner_schedule {g.inner_schedule!r}; valid: 'global_cosine', "
        "'cosine_per_outer', 'constant'"
    )


def _gn_inner(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> optax.GradientTransformation:
    """The inner optimizer at unit learning rate, scaled by the inner schedule."""
    from gnbench.optim.gauss_newton import with_inner_schedule

    g = cfg.gn
    if g.inner == "adamw":
        base = optax.adamw(
            1.0, b1=g.inner_b1, b2=g.inner_b2, eps=cfg.eps, weight_decay=g.inner_weight_decay
        )
    elif g.inner == "muon":  # The field's reference Muon (gnbench.optim.muon).
        from gnbench.optim.muon import muon

        base = muon(
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
    elif g.inner == "muon_optax":
        # optax.contrib.muon as the paper's llama_train_gn.py build_optimizer(optimizer_type=
        # 'muon') calls it: adam_weight_decay=wd, Muon matrices undecayed. Unclipped, like the
        # adamw inner (the paper clips each group at --inner_clip_gradient).
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
            grad_clip=None,
            labels=ctx.param_labels,
        )
    else:
        raise ValueError(f"unknown gn.inner {g.inner!r}; valid: 'adamw', 'muon', 'muon_optax'")
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
