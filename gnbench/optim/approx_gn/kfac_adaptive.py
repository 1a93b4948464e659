"""K-FAC as its authors run it: adaptive damping and the quadratic model's step and momentum.

Martens and Grosse's K-FAC (and kfac-jax's ``kfac_jax.Optimizer`` with
``use_adaptive_learning_rate``, ``use_adaptive_momentum`` and ``use_adaptive_damping``) takes no
learning rate. Each step, with g the gradient (plus ``weight_decay · θ``, kfac-jax's ``l2_reg``),
F̃ K-FAC's block-diagonal curvature and λ the current damping:

    Δ = −(F̃ + λ I)⁻¹ g                       the preconditioned direction
    δ = α Δ + μ v                             v: the previous step
    (α, μ) = argmin  ½ [α μ] (M + λ U) [α μ]ᵀ + [gᵀΔ  gᵀv] [α μ]ᵀ

where ``M_ij = u_iᵀ G u_j`` uses the *exact* Gauss-Newton matrix G on the step's batch (every
micro-batch; Jacobian-vector products and the loss's output Hessian, no Kronecker
approximation), ``U_ij = u_iᵀ u_j`` and ``u = (Δ, v)``; on the first step μ = 0. Every
``damping_adaptation_interval`` steps (T) the damping follows the Levenberg-Marquardt rule on the
reduction ratio ρ = (L(θ + δ) − L(θ)) / q(δ), ``q`` the undamped quadratic model's change on the
same batch: ρ > ¾ → λ ω, ρ < ¼ → λ / ω, with ω = ``damping_adaptation_decay``ᵀ, clipped to
[``min_damping``, ``max_damping``] (kfac-jax's defaults: decay 0.9, T = 5, thresholds ¼ and ¾).

kfac-jax's own optimizer runs outside ``jax.jit`` with its own training loop; this module writes
the same rule as an Optax transform (by hand: no maintained package offers it as one) on top of
kfac-jax's curvature estimator (:mod:`gnbench.optim.approx_gn.kfac`): the factors are refreshed
every step on the first micro-batch at θ, and each step inverts the damped blocks afresh for the
current λ (factored Tikhonov damping unless ``exact_inverses``). Its state is plain containers.
Differences from kfac-jax's optimizer: no norm constraint, no gradient clipping, ρ only on the
steps that adapt λ.

Example:
  >>> import jax, jax.numpy as jnp
  >>> apply_fn = lambda p, x: x @ p["w"] + p["b"]                   # logits (N, V)
  >>> loss_fn = lambda z, x: jnp.mean(jax.nn.logsumexp(z, -1) - z[..., 0])
  >>> params = {"w": 0.1 * jnp.ones((3, 4)), "b": jnp.zeros(4)}
  >>> x = jnp.ones((2, 5, 3))                                      # K=2 micro-batches
  >>> tx = kfac_adaptive(apply_fn, loss_fn, x[0])
  >>> state = tx.init(params)
  >>> g = jax.grad(lambda p: loss_fn(apply_fn(p, x[0]), x[0]))(params)
  >>> updates, state = tx.update(g, state, params, batch=x)
  >>> sorted(state.metrics)
  ['alpha', 'damping', 'mu', 'rho']

Reference: Martens and Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", ICML 2015, sections 6.4-7; kfac-jax's ``Optimizer``
(github.com/google-deepmind/kfac-jax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree_utils as otu

from gnbench.optim import pytrees
from gnbench.optim.approx_gn.kfac import (
    ESTIMATION_MODES,
    KfacState,
    _kfac_parts,
    _leading_dim,
    layer_summary,
    layer_table,
    require_model,
)
from gnbench.optim.checks import Checks
from gnbench.optim.gn.curvature import loss_hvp
from gnbench.optim.registry import BuildContext, Optimizer, register

PyTree = Any
LOWER, UPPER = 0.25, 0.75  # kfac-jax's damping_lower_threshold / damping_upper_threshold


class AdaptiveKfacState(NamedTuple):
    """The K-FAC factors, the previous step ``v``, the damping λ and the last step's numbers."""

    kfac: KfacState
    velocity: PyTree
    damping: jax.Array
    count: jax.Array
    metrics: dict[str, jax.Array]


def ggn_quadratic(
    apply_fn: Callable, loss_fn: Callable, params: PyTree, batch: PyTree, vectors: tuple
) -> tuple[jax.Array, jax.Array]:
    """``(L(θ), M)`` on ``batch``: the loss and ``M_ij = u_iᵀ G u_j`` for ``u = vectors``.

    Both are means over the micro-batches (the leading axis of ``batch``), as the trainer's loss
    is; G is the exact Gauss-Newton matrix ``Jᵀ ∇²_z L J`` of each micro-batch.
    """

    def one(micro_batch):
        outputs, jvp = jax.linearize(lambda p: apply_fn(p, micro_batch), params)
        us = [jvp(v) for v in vectors]
        hus = [loss_hvp(loss_fn, outputs, micro_batch, u)[3] for u in us]
        loss = loss_fn(outputs, micro_batch)
        m = jnp.stack([jnp.stack([otu.tree_vdot(u, hu) for hu in hus]) for u in us])
        return loss, m

    losses, ms = jax.lax.map(one, batch)
    return jnp.mean(losses), jnp.mean(ms, axis=0)


def solve_coefficients(m: jax.Array, b: jax.Array, first: jax.Array) -> jax.Array:
    """``[α, μ] = −m⁻¹ b`` (μ = 0 and ``α = −b₀ / m₀₀`` when ``first``); non-finite → 0."""
    one = jnp.stack([-b[0] / m[0, 0], jnp.zeros((), b.dtype)])
    two = -jnp.linalg.solve(m, b)
    coef = jnp.where(first, one, two)
    return jnp.where(jnp.isfinite(coef), coef, 0.0)


def new_damping(
    damping: jax.Array, rho: jax.Array, omega: float, min_damping: float, max_damping: float
) -> jax.Array:
    """Levenberg-Marquardt: ρ > ¾ → λ ω; ρ < ¼ (or not finite) → λ / ω; clipped."""
    rho = jnp.nan_to_num(rho, nan=-100.0)
    damping = jnp.where(
        rho > UPPER, damping * omega, jnp.where(rho < LOWER, damping / omega, damping)
    )
    return jnp.clip(damping, min_damping, max_damping)


def kfac_adaptive(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    example_micro_batch: PyTree,
    initial_damping: float = 1.0,
    min_damping: float = 1e-8,
    max_damping: float = 1e8,
    damping_adaptation_interval: int = 5,
    damping_adaptation_decay: float = 0.9,
    weight_decay: float = 0.0,
    curvature_ema: float = 0.95,
    estimation_mode: str = "fisher_gradients",
    exact_inverses: bool = False,
    positions: Callable[[PyTree], int] = _leading_dim,
    seed: int = 0,
    loss_kind: str = "softmax_cross_entropy",
) -> optax.GradientTransformationExtraArgs:
    """K-FAC with adaptive damping and the quadratic model's learning rate and momentum.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> logits``.
      loss_fn: ``loss_fn(outputs, micro_batch) -> mean loss`` (the loss G and ρ are of).
      example_micro_batch: one micro-batch, to trace the model's layers at ``init``.
      initial_damping: λ at the first step (kfac-jax's examples use 1.0 to 1e-3).
      min_damping, max_damping: the range λ is clipped to.
      damping_adaptation_interval: T, steps between two damping updates (counted in steps).
      damping_adaptation_decay: the per-step factor; λ moves by its T-th power.
      weight_decay: L2 regularisation ``½ wd ‖θ‖²`` in the gradient and the quadratic model.
      curvature_ema, estimation_mode, exact_inverses, positions, seed, loss_kind: as
        :func:`gnbench.optim.approx_gn.kfac.scale_by_kfac`.

    Returns:
      A transform whose ``update(grads, state, params, *, batch)`` returns the step δ (apply it
      with ``optax.apply_updates``); ``state.metrics`` holds ρ (of the last adaptation step),
      α, μ and λ.
    """
    pytrees.require_numbers(
        "kfac_adaptive",
        initial_damping=initial_damping,
        min_damping=min_damping,
        max_damping=max_damping,
        damping_adaptation_decay=damping_adaptation_decay,
        weight_decay=weight_decay,
    )
    if not 0 < min_damping <= initial_damping <= max_damping:
        raise ValueError(
            "kfac_adaptive: need 0 < min_damping <= initial_damping <= max_damping, got "
            f"{min_damping}, {initial_damping}, {max_damping}"
        )
    if not 0 < damping_adaptation_decay < 1:
        raise ValueError(
            f"kfac_adaptive: damping_adaptation_decay must be in (0, 1), got "
            f"{damping_adaptation_decay}"
        )
    interval = int(damping_adaptation_interval)
    if interval != damping_adaptation_interval or interval < 1:
        raise ValueError(
            "kfac_adaptive: damping_adaptation_interval must be an integer >= 1, got "
            f"{damping_adaptation_interval}"
        )
    omega = damping_adaptation_decay**interval
    # Built afresh at every init and update (construction is cheap; kfac-jax traces the model
    # when it is first used): its estimator then fits the containers of the call (nnx inits
    # on nnx.State, a plain loop on dicts), as kfac's builder gets from inject_hyperparams.
    make_parts = lambda: _kfac_parts(  # noqa: E731
        apply_fn,
        example_micro_batch,
        initial_damping,
        curvature_ema,
        estimation_mode,
        exact_inverses,
        positions,
        seed,
        loss_kind,
        1,
        external_refresh=True,
    )

    def init_fn(params):
        kfac_state = make_parts().tx.init(params)
        params = pytrees.pure(params)
        # The 2x2 model is solved in >= 32 bits.
        dtype = jnp.promote_types(jnp.result_type(*jax.tree.leaves(params)), jnp.float32)
        zero = jnp.zeros((), dtype)
        return AdaptiveKfacState(
            kfac=kfac_state,
            velocity=otu.tree_zeros_like(params),
            damping=jnp.asarray(initial_damping, dtype),
            count=jnp.zeros((), jnp.int32),
            metrics={"rho": zero, "alpha": zero, "mu": zero, "damping": zero + initial_damping},
        )

    def update_fn(grads, state, params=None, *, batch=None, **extra):
        del extra
        if params is None or batch is None or grads is None:
            raise ValueError(
                "kfac_adaptive needs gradients, params and batch=: update(grads, state, params, "
                "batch=)"
            )
        params = pytrees.pure(params)
        if weight_decay:
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
        parts = make_parts()
        kfac_state = parts.refresh(state.kfac, params, batch)
        damping = state.damping
        delta = otu.tree_scale(-1.0, parts.precondition(kfac_state, grads, damping, params))
        # The previous step in the gradients' containers (nnx inits on other ones).
        v = jax.tree.unflatten(jax.tree.structure(delta), jax.tree.leaves(state.velocity))
        vectors = (delta, v)
        loss, m = ggn_quadratic(apply_fn, loss_fn, params, batch, vectors)
        wide = lambda x: jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32))  # noqa: E731
        dot = lambda a, c: wide(otu.tree_vdot(a, c))  # noqa: E731
        u = jnp.stack([jnp.stack([dot(a, c) for c in vectors]) for a in vectors])
        m = wide(m) + weight_decay * u  # the L2 term's curvature is part of the model
        b = jnp.stack([dot(grads, c) for c in vectors])
        coef = solve_coefficients(m + damping * u, b, state.count == 0)
        step = jax.tree.map(lambda d, w: (coef[0] * d + coef[1] * w).astype(d.dtype), delta, v)
        quad_change = 0.5 * coef @ m @ coef + b @ coef
        loss = wide(loss)

        def adapt(_):
            moved = jax.tree.map(jnp.add, params, step)
            new_loss = jnp.mean(jax.lax.map(lambda mb: loss_fn(apply_fn(moved, mb), mb), batch))
            if weight_decay:
                new_loss = new_loss + 0.5 * weight_decay * (
                    otu.tree_vdot(moved, moved) - otu.tree_vdot(params, params)
                )
            rho = (wide(new_loss) - loss) / quad_change
            new = new_damping(damping, rho, omega, min_damping, max_damping)
            return new.astype(damping.dtype), rho.astype(damping.dtype)

        adapting = (state.count + 1) % interval == 0
        damping_next, rho = jax.lax.cond(
            adapting, adapt, lambda _: (damping, state.metrics["rho"]), None
        )
        metrics = {"rho": rho, "alpha": coef[0], "mu": coef[1], "damping": damping}
        metrics = {k: jnp.asarray(x, damping.dtype) for k, x in metrics.items()}
        kfac_state = kfac_state._replace(count=kfac_state.count + 1)
        velocity = jax.tree.unflatten(jax.tree.structure(state.velocity), jax.tree.leaves(step))
        new_state = AdaptiveKfacState(kfac_state, velocity, damping_next, state.count + 1, metrics)
        return step, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register(
    "kfac_adaptive",
    reads=("kfac", "kfac_adaptive"),
    check=Checks(
        choices={"kfac.estimation_mode": (ESTIMATION_MODES, "K-FAC estimation mode")},
        positive_floats=(
            "kfac_adaptive.initial_damping",
            "kfac_adaptive.min_damping",
            "kfac_adaptive.max_damping",
        ),
        decays=("kfac.curvature_ema", "kfac_adaptive.damping_adaptation_decay"),
    ),
)
def _build(cfg: Any, ctx: BuildContext) -> Optimizer:
    """Registry builder: ``optimizer.kfac_adaptive`` (damping rule) and ``optimizer.kfac``'s
    estimator settings (its ``damping``, ``momentum`` and ``inverse_update_period`` are the fixed
    variant's, unused here); ``kfac_adaptive.l2_reg`` as L2 (not ``weight_decay``: 0.1 as an L2
    term shrank the warm-started model, loss 2.23 -> 3.8 in 13 steps with rho ~ 1).
    No learning rate, schedule or clip: the
    quadratic model sets the step."""
    who = "optimizer 'kfac_adaptive'"
    require_model(ctx, who)
    if ctx.loss_fn is None:
        raise ValueError(f"{who} needs BuildContext.loss_fn (its quadratic model and ρ)")
    a = cfg.kfac_adaptive
    tx = kfac_adaptive(
        ctx.apply_fn,
        ctx.loss_fn,
        ctx.example_micro_batch,
        initial_damping=a.initial_damping,
        min_damping=a.min_damping,
        max_damping=a.max_damping,
        damping_adaptation_interval=a.damping_adaptation_interval,
        damping_adaptation_decay=a.damping_adaptation_decay,
        weight_decay=a.l2_reg,
        curvature_ema=cfg.kfac.curvature_ema,
        estimation_mode=cfg.kfac.estimation_mode,
        exact_inverses=cfg.kfac.exact_inverses,
        loss_kind=ctx.loss_kind,
    )
    return Optimizer(
        tx=tx,
        hparams=dict(
            name="kfac_adaptive",
            **a.to_dict(),
            curvature_ema=cfg.kfac.curvature_ema,
            estimation_mode=cfg.kfac.estimation_mode,
            exact_inverses=cfg.kfac.exact_inverses,
        ),
        describe=lambda params: layer_summary(
            layer_table(ctx.apply_fn, params, ctx.example_micro_batch)
        ),
    )


__all__ = [
    "AdaptiveKfacState",
    "ggn_quadratic",
    "kfac_adaptive",
    "new_damping",
    "solve_coefficients",
]
