"""GN-prox-linear: the exact loss on the linearized model, solved like full Gauss-Newton.

Each outer step fixes θ_t and minimizes, over Δ = θ − θ_t,

    p(Δ) = L(f_t + J Δ) + λ/2 ‖Δ‖²,     ∇p(Δ) = Jᵀ ∇_z L(f_t + J Δ) + λ Δ,

(notation of :mod:`gnbench.optim.gn.curvature`). The model is linearized, the loss is not: for
cross-entropy ``p`` is convex, and its second-order expansion at Δ = 0 is the GN model, so the two
differ only in the higher-order terms of the loss (the paper finds them almost identical). A step
costs the same as a GN inner step (one linearization, one JVP, one VJP) with the output-space
Hessian-vector product replaced by a loss gradient at the shifted outputs. The damping λ pulls
the solution toward θ_t (the published code had its sign wrong; gnbench tests it).

Everything else (warm start, the ``lax.scan`` over micro-batches, the line search, the state and
its metrics) is the loop of :func:`gnbench.optim.gn.gauss_newton.gauss_newton`, shared, with the
metrics ``gn_model_before`` / ``gn_model_after`` holding ``p`` instead of ``q``.

Written by hand for gnbench: no maintained package provides it.

Reference: Abreu, Vyas, Kakade, Morwani, "The Potential of Second-Order Optimization for LLMs: A
Study with Full Gauss-Newton", arXiv 2510.09378 (ICLR 2026); the prox-linear method: Drusvyatskiy
and Paquette, "Efficiency of minimizing compositions of convex functions and smooth maps", Math.
Programming 2019.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from gnbench.optim.gn.curvature import ApplyFn, LossFn, PyTree
from gnbench.optim.gn.gauss_newton import InnerRefresh, gauss_newton_core


def prox_linear_output_rule(
    loss_fn: LossFn, outputs: PyTree, u: PyTree, batch: PyTree
) -> tuple[jax.Array, PyTree, jax.Array]:
    """Prox-linear objective in output space: ``L(z + u)`` and cotangent ``∇L(z + u)``.

    Example:
      >>> loss_fn = lambda z, _: 0.5 * jnp.sum(z**2)
      >>> value, w, loss_t = prox_linear_output_rule(loss_fn, jnp.ones(2), jnp.ones(2), None)
      >>> float(value), w, float(loss_t)
      (4.0, Array([2., 2.], dtype=float32), 1.0)
    """
    shifted = jax.tree.map(jnp.add, outputs, u)
    value, cotangent = jax.value_and_grad(loss_fn)(shifted, batch)
    return value, cotangent, loss_fn(outputs, batch)


def gn_prox_linear(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    inner: optax.GradientTransformation,
    inner_steps: int,
    damping: float = 0.0,
    line_search: Sequence[float] | None = None,
    warm_start: bool = True,
    inner_refresh: InnerRefresh | None = None,
) -> optax.GradientTransformationExtraArgs:
    """GN-prox-linear: K inner steps on ``L(f_t + JΔ) + λ/2‖Δ‖²``, then an optional line search.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> outputs`` (static).
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss`` (static).
      inner: the inner optimizer (may use the extra keyword argument ``inner_step``).
      inner_steps: K, the micro-batches per outer step (leading axis of ``batch``).
      damping: λ ≥ 0 of the proximal term.
      line_search: step sizes α to try on ``ls_batch``; ``None`` or empty: α = 1.
      warm_start: start from the previous inner solution and inner state (True) or from θ_t
        with a fresh inner state (False).
      inner_refresh: as :func:`gnbench.optim.gn.gauss_newton.gauss_newton`'s.

    Returns:
      A transform with ``update(grads, state, params, *, batch, ls_batch=None)`` (``grads``
      ignored) and a :class:`gnbench.optim.gn.gauss_newton.GaussNewtonState`.

    Example:
      >>> apply_fn = lambda w, x: x @ w
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2)
      >>> tx = gn_prox_linear(apply_fn, loss_fn, inner=optax.sgd(1.0), inner_steps=8)
      >>> w = jnp.zeros(2)
      >>> batch = jnp.broadcast_to(jnp.eye(2), (8, 2, 2))
      >>> updates, _ = tx.update(None, tx.init(w), w, batch=batch)
      >>> [round(float(u), 3) for u in updates]  # 1 - 2**-8: eight halvings
      [0.996, 0.996]
    """
    return gauss_newton_core(
        apply_fn,
        loss_fn,
        rule=prox_linear_output_rule,
        inner=inner,
        inner_steps=inner_steps,
        damping=damping,
        line_search=line_search,
        warm_start=warm_start,
        blocks=None,
        inner_refresh=inner_refresh,
    )
