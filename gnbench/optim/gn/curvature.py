"""Gauss-Newton curvature by composition: ``Jᵀ H_z J v`` without ever forming a matrix.

Notation (as in docs/METHOD.md): θ parameters, ``f(θ) = apply_fn(θ, batch)`` the model outputs z,
``L(z) = loss_fn(z, batch)`` a scalar loss, ``J = ∂f/∂θ`` at θ_t, ``g_z = ∇_z L(f_t)`` and
``H_z = ∇²_z L(f_t)``. The Gauss-Newton matrix is ``G = Jᵀ H_z J``; for softmax cross-entropy
``H_z`` is positive semi-definite, so ``G`` is too, even where the true Hessian is not.

A GN-vector product is three linear maps applied in turn:

1. ``u = J v``: a Jacobian-vector product of the model (forward mode);
2. ``H_z u``: a Hessian-vector product of the loss in *output* space, the JVP of ``∇_z L``;
3. ``Jᵀ (H_z u)``: the transpose of step 1 (``jax.linear_transpose`` of the linearized model,
   which is reverse mode on the residuals ``jax.linearize`` stored).

This is the kfac-jax/Schraudolph construction: it costs about one forward, one JVP and one VJP
of the model, and memory of one backward pass. The same linearization gives everything the GN
inner solvers need: the gradient of the GN quadratic model

    q(Δ) = L(f_t) + g_zᵀ J Δ + ½ Δᵀ Jᵀ H_z J Δ + λ/2 ‖Δ‖²,   ∇q(Δ) = Jᵀ (g_z + H_z J Δ) + λ Δ,

its value, and the loss at θ_t, from one ``jax.linearize``. :func:`linearized_model_eval` also
evaluates *block-diagonal* models (layerwise GN): each block of parameters is linearized alone,
all others frozen at θ_t.

Precision: every function here runs under ``precision.pinned("curvature")``
(:mod:`gnbench.optim.precision`), so the linearization, its JVP/VJP and the output-space products
use the pinned matmul precision (float32 ``HIGHEST`` by default) whatever the caller set.

Reference: Schraudolph, "Fast curvature matrix-vector products for second-order gradient
descent", Neural Computation 2002; Abreu, Vyas, Kakade, Morwani, "The Potential of Second-Order
Optimization for LLMs: A Study with Full Gauss-Newton", arXiv 2510.09378.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from gnbench.optim.precision import pinned

PyTree = Any
ApplyFn = Callable[[PyTree, PyTree], PyTree]
LossFn = Callable[[PyTree, PyTree], jax.Array]


class OutputRule(Protocol):
    """What an inner objective needs in output space, at ``z = f_t`` and ``u = J Δ``.

    Returns ``(value, cotangent, loss_t)``: the objective's value without damping, the output-space
    cotangent ``w`` whose pull-back ``Jᵀ w`` is the objective's gradient, and ``L(f_t)``.
    """

    def __call__(
        self, loss_fn: LossFn, outputs: PyTree, u: PyTree, batch: PyTree
    ) -> tuple[jax.Array, PyTree, jax.Array]: ...


class ModelEval(NamedTuple):
    """Value and gradient of a linearized inner objective at Δ, plus the true loss at θ_t."""

    value: jax.Array
    grad: PyTree
    loss: jax.Array


@pinned("curvature")
def loss_hvp(
    loss_fn: LossFn, outputs: PyTree, batch: PyTree, u: PyTree
) -> tuple[jax.Array, PyTree, jax.Array, PyTree]:
    """Loss, output gradient and output-space Hessian-vector product in one JVP.

    Args:
      loss_fn: ``loss_fn(outputs, batch) -> scalar``.
      outputs: the point z at which the loss is expanded.
      batch: data passed through to ``loss_fn``.
      u: output-space tangent (same structure as ``outputs``).

    Returns:
      ``(L(z), ∇_z L, ⟨∇_z L, u⟩, ∇²_z L u)``.

    Example:
      >>> z, u = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])
      >>> loss, g, gu, hu = loss_hvp(lambda z, _: jnp.sum(z**3), z, None, u)
      >>> hu
      Array([6., 0.], dtype=float32)
    """
    value_and_grad = lambda z: jax.value_and_grad(loss_fn)(z, batch)  # noqa: E731
    (loss, grad), (grad_dot_u, hvp) = jax.jvp(value_and_grad, (outputs,), (u,))
    return loss, grad, grad_dot_u, hvp


@pinned("curvature")
def gn_vector_product(
    apply_fn: ApplyFn, loss_fn: LossFn, params: PyTree, batch: PyTree, v: PyTree
) -> PyTree:
    """The Gauss-Newton-vector product ``Jᵀ H_z J v`` at ``params``.

    Args:
      apply_fn: ``apply_fn(params, batch) -> outputs``.
      loss_fn: ``loss_fn(outputs, batch) -> scalar``.
      params: the point θ_t.
      batch: the data defining f and L.
      v: a tangent with the structure of ``params``.

    Returns:
      ``G v`` with the structure of ``params``.

    Example:
      >>> apply_fn = lambda w, x: x @ w
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean(z**2)
      >>> x = jnp.eye(2)
      >>> gn_vector_product(apply_fn, loss_fn, jnp.ones(2), x, jnp.array([1.0, 0.0]))
      Array([0.5, 0. ], dtype=float32)
    """
    outputs, jvp_fn = jax.linearize(lambda p: apply_fn(p, batch), params)
    _, _, _, hvp = loss_hvp(loss_fn, outputs, batch, jvp_fn(v))
    (gv,) = jax.linear_transpose(jvp_fn, params)(hvp)
    return gv


@pinned("curvature")
def gn_output_rule(
    loss_fn: LossFn, outputs: PyTree, u: PyTree, batch: PyTree
) -> tuple[jax.Array, PyTree, jax.Array]:
    """GN quadratic model in output space: ``L + g·u + ½ u·H u`` and cotangent ``g + H u``."""
    loss, grad, grad_dot_u, hvp = loss_hvp(loss_fn, outputs, batch, u)
    value = loss + grad_dot_u + 0.5 * optax.tree_utils.tree_vdot(u, hvp)
    return value, jax.tree.map(jnp.add, grad, hvp), loss


def _groups(treedef: Any, block_labels: PyTree | None) -> list[list[int]]:
    """Leaf indices of each block (sorted by label); one block of all leaves if no labels."""
    if block_labels is None:
        return [list(range(treedef.num_leaves))]
    labels = treedef.flatten_up_to(block_labels)
    return [[i for i, lab in enumerate(labels) if lab == name] for name in sorted(set(labels))]


@pinned("curvature")
def linearized_model_eval(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    params_t: PyTree,
    batch: PyTree,
    delta: PyTree,
    *,
    damping: float = 0.0,
    rule: OutputRule = gn_output_rule,
    block_labels: PyTree | None = None,
) -> ModelEval:
    """Value and gradient in Δ of an inner objective built on the model linearized at θ_t.

    With ``rule=gn_output_rule`` the objective is the GN model ``q(Δ)`` of the module docstring.
    With ``block_labels`` (a pytree of strings shaped like ``params_t``) each block b is
    linearized in its own parameters only (``J_b``), giving the block-diagonal objective
    ``L(f_t) + Σ_b [q_b(Δ_b) − L(f_t)] + λ/2 ‖Δ‖²`` whose gradient in block b is
    ``J_bᵀ w_b + λ Δ_b``. One block is the full objective (the same computation).

    Cost per block: one ``jax.linearize`` (a forward pass; XLA merges only a small part of the
    repeated forwards), then one JVP and one transpose, each only through the layers after that
    block's parameters. One block costs a forward, a JVP and a VJP of the whole model.

    Args:
      apply_fn: ``apply_fn(params, batch) -> outputs``.
      loss_fn: ``loss_fn(outputs, batch) -> scalar``.
      params_t: the linearization point θ_t.
      batch: one micro-batch.
      delta: Δ = θ − θ_t, structured like ``params_t``.
      damping: λ ≥ 0 of the proximal term λ/2 ‖Δ‖², which pulls the solution toward θ_t.
      rule: the output-space objective (:func:`gn_output_rule` or the prox-linear one).
      block_labels: optional block label per leaf; ``None`` means one block.

    Returns:
      :class:`ModelEval` with the value (damping included), the gradient (structured like
      ``params_t``) and ``L(f(θ_t))`` on ``batch``.

    Example:
      >>> apply_fn = lambda w, x: x @ w
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2)
      >>> ev = linearized_model_eval(apply_fn, loss_fn, jnp.zeros(2), jnp.eye(2), jnp.ones(2))
      >>> float(ev.value), ev.grad
      (0.0, Array([0., 0.], dtype=float32))
    """
    leaves_t, treedef = jax.tree.flatten(params_t)
    leaves_d = treedef.flatten_up_to(delta)
    grads: list[Any] = [None] * len(leaves_t)
    model_gain = jnp.zeros(())
    loss_t = None
    for idx in _groups(treedef, block_labels):

        def model(block: Sequence[jax.Array], idx=idx) -> PyTree:
            full = list(leaves_t)
            for i, leaf in zip(idx, block, strict=True):
                full[i] = leaf
            return apply_fn(jax.tree.unflatten(treedef, full), batch)

        block_t = [leaves_t[i] for i in idx]
        outputs, jvp_fn = jax.linearize(model, block_t)
        u = jvp_fn([leaves_d[i] for i in idx])
        value, cotangent, loss_t = rule(loss_fn, outputs, u, batch)
        (block_grad,) = jax.linear_transpose(jvp_fn, block_t)(cotangent)
        for i, g in zip(idx, block_grad, strict=True):
            grads[i] = g + damping * leaves_d[i]
        model_gain = model_gain + (value - loss_t)
    value = loss_t + model_gain + 0.5 * damping * optax.tree_utils.tree_norm(delta, squared=True)
    return ModelEval(value, jax.tree.unflatten(treedef, grads), loss_t)
