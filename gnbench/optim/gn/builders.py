"""Registry builders of the Gauss-Newton family (gauss_newton, gn_prox_linear, layerwise_gn,
layerwise_prox_linear): the inner optimizer and its schedule from ``optimizer.gn``.

The transforms live in gauss_newton.py, prox_linear.py and layerwise.py; this module turns a
config into them (experiments/base.py documents every key, docs/paper_departures.md maps the
paper's flags to them).

Example:
  >>> from experiments.base import get_config
  >>> from gnbench.optim import BuildContext
  >>> g = get_config().optimizer.gn
  >>> float(_gn_inner_schedule(g, BuildContext(total_steps=10, micro_batches=4))(0))
  0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gnbench.optim.checks import Checks, get
from gnbench.optim.registry import (
    BuildContext,
    Builder,
    Optimizer,
    clip,
    method,
    register,
    routing_line,
    schedule,
)

# Inner schedules (docs/paper_departures.md maps them to the paper's --lr_sched values).
GN_SCHEDULES = (
    "global_cosine",
    "cosine_with_global_schedule",
    "constant_with_inner_cosine",
    "constant",
    "cosine_per_outer",
)


# The paper's keys beyond the inner optimizer's own (experiments/base.py documents each and holds
# every default; docs/paper_departures.md maps them to the paper's flags), logged as hparams.
PAPER_KEYS = (
    "inner_grad_clip",
    "schedule_end",
    "warmup_start",
    "outer_warmup_steps",
    "cycle_warmup_steps",
    "boundary_off_by_one",
    "restart_schedule",
    "schedule_outer_steps",
    "inner_kfac_refresh",
)
# gn.inner='kfac': when the K-FAC factors of G at θ_t are estimated (experiments/base.py).
KFAC_REFRESH = ("outer", "inner")
# Inner optimizers: each is a registered method whose own section (muon, kfac) GN then reads.
GN_INNER = ("adamw", "muon", "muon_optax", "kfac")
LINE_SEARCH_DATA = ("fresh", "inner")


def reads(optimizer: Any) -> set[str]:
    """``gn``, plus the sections its inner optimizer reads (``muon``, ``kfac``).

    Example:
      >>> sorted(reads({"gn": {"inner": "muon_optax"}}))
      ['gn', 'muon']
    """
    inner = (optimizer.get("gn") or {}).get("inner")
    return {"gn"} | (method(inner).sections(optimizer) if inner in GN_INNER else set())


def _check_inner(optimizer: Any) -> None:
    """The inner optimizer's own checks (its section's keys), as a run of it would get."""
    inner = get(optimizer, "gn.inner")
    check = method(inner).check if inner in GN_INNER else None
    if check is not None:
        check(optimizer)


CHECKS = Checks(
    choices={
        "gn.inner": (GN_INNER, "GN inner optimizer"),
        "gn.inner_schedule": (GN_SCHEDULES, "GN inner schedule"),
        "gn.line_search_data": (LINE_SEARCH_DATA, "line-search data"),
        "gn.inner_kfac_refresh": (KFAC_REFRESH, "K-FAC refresh"),
    },
    nonnegative_ints=(
        "gn.inner_warmup_steps",
        "gn.line_search",
        "gn.outer_warmup_steps",
        "gn.cycle_warmup_steps",
        "gn.schedule_outer_steps",
    ),
    positive_floats=("gn.inner_learning_rate", "gn.inner_adam_learning_rate"),
    nonnegative_floats=(
        "gn.inner_weight_decay",
        "gn.damping",
        "gn.inner_grad_clip",
        "gn.warmup_start",
        "gn.schedule_end",
    ),
    decays=("gn.inner_b1", "gn.inner_b2"),
    extra=(_check_inner,),
)


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

    start, end = g.warmup_start, peak * g.schedule_end
    w_out, w_in = g.outer_warmup_steps, g.cycle_warmup_steps
    cosine_envelope = g.inner_schedule == "cosine_with_global_schedule"
    shifted = cosine_envelope and g.boundary_off_by_one and t >= 2
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


def _gn_inner_schedule(g: Any, ctx: BuildContext) -> optax.ScalarOrSchedule:
    """Inner learning rate as a function of the global inner step (across outer steps).

    T is ``gn.schedule_outer_steps`` (0: the run's outer steps). ``gn.restart_schedule`` indexes
    the schedule by the inner step within the outer step instead (the paper's cold start).
    """
    import jax.numpy as jnp

    k, peak, warmup = ctx.micro_batches, g.inner_learning_rate, g.inner_warmup_steps
    t = g.schedule_outer_steps or ctx.total_steps
    start, end = g.warmup_start, g.schedule_end
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
    if not g.restart_schedule:
        return sched
    return lambda step: sched(jnp.asarray(step) % k)


def _gn_inner(cfg: Any, ctx: BuildContext) -> tuple[optax.GradientTransformation, Any]:
    """The inner optimizer at unit learning rate, clipped, scaled by the inner schedule, and the
    hook that refreshes its state once per outer step (``None`` but for K-FAC refreshed per
    outer step).

    ``gn.inner_grad_clip`` clips the inner gradient before the optimizer (the paper's
    ``--inner_clip_gradient``): by its global norm for ``adamw`` and ``muon``, per partition
    (embed/head; the rest) for ``muon_optax`` as the paper's two chains do.
    """
    from gnbench.optim.gn.gauss_newton import with_inner_schedule

    g = cfg.gn
    max_norm = g.inner_grad_clip
    clipped = lambda tx: optax.chain(clip(max_norm), tx) if max_norm else tx  # noqa: E731
    refresh = None
    if g.inner == "adamw":
        base = clipped(
            optax.adamw(
                1.0, b1=g.inner_b1, b2=g.inner_b2, eps=cfg.eps, weight_decay=g.inner_weight_decay
            )
        )
    elif g.inner == "muon":  # The field's reference Muon (gnbench.optim.first_order.muon).
        from gnbench.optim.first_order.muon import muon

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
        from gnbench.optim.first_order.muon_optax import muon_optax

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
        # curvature at θ_t, estimated once per outer step on its first micro-batch ('outer') or
        # on every inner micro-batch ('inner'); optimizer.kfac's damping, momentum, EMA and
        # estimator; the inner lr, schedule, clip and decay of optimizer.gn.
        from gnbench.optim.approx_gn.kfac import kfac_from_config, kfac_refreshed_by_caller

        when = g.inner_kfac_refresh
        if when not in KFAC_REFRESH:
            raise ValueError(
                f"unknown gn.inner_kfac_refresh {when!r}; valid: {', '.join(KFAC_REFRESH)}"
            )
        args = (cfg.kfac, ctx, 1.0, g.inner_weight_decay, "gn.inner='kfac'")
        if when == "outer":
            tx, refresh = kfac_from_config(*args, make=kfac_refreshed_by_caller)
        else:
            tx = kfac_from_config(*args)
        base = clipped(tx)
    else:
        raise ValueError(
            f"unknown gn.inner {g.inner!r}; valid: 'adamw', 'muon', 'muon_optax', 'kfac'"
        )
    return with_inner_schedule(base, _gn_inner_schedule(g, ctx)), refresh


def _gn_builder(name: str, method: str, objective: str) -> Builder:
    def build_gn(cfg: Any, ctx: BuildContext) -> Optimizer:
        from gnbench.optim.gn.gauss_newton import gauss_newton, line_search_alphas
        from gnbench.optim.gn.layerwise import layerwise_gauss_newton
        from gnbench.optim.gn.prox_linear import gn_prox_linear

        if ctx.apply_fn is None or ctx.loss_fn is None:
            raise ValueError(f"optimizer {name!r} needs BuildContext.apply_fn and loss_fn")
        g, k = cfg.gn, ctx.micro_batches
        inner, refresh = _gn_inner(cfg, ctx)
        kwargs = dict(
            inner=inner,
            inner_steps=k,
            damping=g.damping,
            line_search=line_search_alphas(g.line_search),
            warm_start=g.warm_start,
        )
        if method == "layerwise" and g.inner == "kfac":
            raise ValueError(f"{name}: gn.inner='kfac' is for full GN (one curvature, all layers)")
        if method == "layerwise":
            tx = layerwise_gauss_newton(
                ctx.apply_fn, ctx.loss_fn, objective=objective, staged=ctx.staged_model, **kwargs
            )
        elif objective == "prox_linear":
            tx = gn_prox_linear(ctx.apply_fn, ctx.loss_fn, inner_refresh=refresh, **kwargs)
        else:
            tx = gauss_newton(ctx.apply_fn, ctx.loss_fn, inner_refresh=refresh, **kwargs)
        if g.line_search_data not in LINE_SEARCH_DATA:
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
                **{key: g[key] for key in PAPER_KEYS},
            ),
            ls_micro_batches=k if g.line_search else 0,
            ls_reuses_batch=bool(g.line_search) and g.line_search_data == "inner",
            reads_grads=False,
            describe=_inner_description(name, g.inner, ctx),
        )

    return build_gn


def _inner_description(name: str, inner: str, ctx: BuildContext) -> Callable[[Any], str] | None:
    """The start-up line of a GN method whose inner optimizer routes or blocks parameters."""
    if inner in ("muon", "muon_optax"):
        return lambda params: routing_line(f"{name} inner {inner}", params)
    if inner == "kfac":
        from gnbench.optim.approx_gn.kfac import layer_summary, layer_table

        return lambda params: layer_summary(
            layer_table(ctx.apply_fn, params, ctx.example_micro_batch)
        )
    return None


for _name, _method, _objective in (
    ("gauss_newton", "full", "gn"),
    ("gn_prox_linear", "full", "prox_linear"),
    ("layerwise_gn", "layerwise", "gn"),
    ("layerwise_prox_linear", "layerwise", "prox_linear"),
):
    register(_name, reads=reads, check=CHECKS)(_gn_builder(_name, _method, _objective))
