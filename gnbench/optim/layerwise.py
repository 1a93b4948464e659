"""Layerwise (block-diagonal) Gauss-Newton: each block of parameters solves its own GN model.

The parameters are split into blocks b (by default one per top-level parameter group; for the
gnbench transformer: the embedding, each transformer block with the final norm joining the last
one, and the head: n_layers + 2 blocks).
Block b linearizes the model in its own parameters only, all others frozen at θ_t (``J_b``), and
minimizes its own model over the same K micro-batches with its own inner optimizer state:

    q_b(Δ_b) = L(f_t) + g_zᵀ J_b Δ_b + ½ Δ_bᵀ J_bᵀ H_z J_b Δ_b + λ/2 ‖Δ_b‖²

(or the prox-linear ``L(f_t + J_b Δ_b) + λ/2 ‖Δ_b‖²``). The block solutions are joined into one
direction d, followed by one line search. Summed over blocks this is GN with the block-diagonal
curvature ``diag_b(J_bᵀ H_z J_b)``: cross-block curvature is ignored. With one block it is full GN
(the same code path).

Cost: one ``lax.scan`` over the K micro-batches; at each, a Python loop over the (static) blocks
linearizes the model in that block's parameters and pays one JVP and one VJP through the layers
*after* those parameters (symbolic zeros skip the layers before), plus one output-space product.
Each block's linearization also re-runs the primal forward: the HLO shows XLA's
common-subexpression elimination merging only a small part of these repeats. Sharing one
forward would need the model's layer structure (a truncated forward per block); it is left out
so that ``apply_fn`` stays an arbitrary function. So a layerwise inner step costs about
``n_blocks`` forwards plus ``(n_blocks + 1)/2`` JVP+VJPs of the whole model; measured on the
tiny gnbench model (6 blocks), about 3x a full GN inner step (``benchmarks/gn_step.py``). It is
a method to compare against, not a shortcut; memory grows the same way.

Written by hand for gnbench: no maintained package provides it.

Reference: Abreu, Vyas, Kakade, Morwani, "The Potential of Second-Order Optimization for LLMs: A
Study with Full Gauss-Newton", arXiv 2510.09378 (ICLR 2026).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import jax
import optax

from gnbench.optim.curvature import ApplyFn, LossFn, PyTree, gn_output_rule
from gnbench.optim.gauss_newton import _gn_family
from gnbench.optim.prox_linear import prox_linear_output_rule

_RULES = {"gn": gn_output_rule, "prox_linear": prox_linear_output_rule}


def transformer_blocks(params: Mapping[str, PyTree]) -> PyTree:
    """Block label per leaf: one block per top-level entry, the final norm joining the last block.

    For the gnbench transformer (top-level keys ``embed``, ``block_0`` ... ``block_{n-1}``,
    ``final_norm``, ``head``) this gives the paper's n_layers + 2 blocks: ``final_norm`` gets the
    label ``block_{n-1}``. Any other top-level key (another model's layers) is its own block, so
    the default also means "layerwise" for other Flax models.

    Args:
      params: a mapping of top-level parameter groups.

    Returns:
      A pytree shaped like ``params`` with a string label at every leaf.

    Example:
      >>> labels = transformer_blocks({"embed": 1, "block_0": {"w": 2}, "final_norm": 3, "head": 4})
      >>> labels["final_norm"], labels["block_0"]["w"]
      ('block_0', 'block_0')
    """
    n_layers = sum(1 for k in params if k.startswith("block_") and k[len("block_") :].isdigit())

    def label(key: str) -> str:
        if key == "final_norm" and n_layers > 0:
            return f"block_{n_layers - 1}"
        return key

    return {k: jax.tree.map(lambda _, k=k: label(k), v) for k, v in params.items()}


def layerwise_gauss_newton(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    blocks: Callable[[PyTree], PyTree] = transformer_blocks,
    inner: optax.GradientTransformation,
    inner_steps: int,
    damping: float = 0.0,
    line_search: Sequence[float] | None = None,
    warm_start: bool = True,
    objective: Literal["gn", "prox_linear"] = "gn",
) -> optax.GradientTransformationExtraArgs:
    """Block-diagonal GN (or prox-linear): one subproblem per block, one joined line search.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> outputs`` (static).
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss`` (static).
      blocks: ``params -> pytree of str``, the block label of every leaf.
      inner: the inner optimizer; each block gets its own copy of its state.
      inner_steps: K, the micro-batches per outer step (leading axis of ``batch``).
      damping: λ ≥ 0 of the proximal term in every block.
      line_search: step sizes α tried on ``ls_batch`` for the joined direction; ``None``: α = 1.
      warm_start: start from the previous inner solutions and states (True) or from θ_t (False).
      objective: ``"gn"`` (the quadratic GN model) or ``"prox_linear"``.

    Returns:
      A transform with ``update(grads, state, params, *, batch, ls_batch=None)`` (``grads``
      ignored) and a :class:`gnbench.optim.gauss_newton.GaussNewtonState` whose inner state is an
      ``optax.multi_transform`` state with one entry per block; ``gn_model_*`` metrics hold the
      block-diagonal model ``L(f_t) + Σ_b [q_b(Δ_b) − L(f_t)]``.

    Example:
      >>> apply_fn = lambda w, x: x @ (w["a"] + w["b"])
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2)
      >>> tx = layerwise_gauss_newton(apply_fn, loss_fn, blocks=lambda p: {"a": "a", "b": "b"},
      ...                             inner=optax.sgd(1.0), inner_steps=4)
      >>> w = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
      >>> batch = jnp.broadcast_to(jnp.eye(2), (4, 2, 2))
      >>> updates, _ = tx.update(None, tx.init(w), w, batch=batch)
      >>> updates["a"].round(4)
      Array([0.9375, 0.9375], dtype=float32)
    """
    if objective not in _RULES:
        raise ValueError(f"objective must be one of {sorted(_RULES)}, got {objective!r}")
    return _gn_family(
        apply_fn,
        loss_fn,
        rule=_RULES[objective],
        inner=inner,
        inner_steps=inner_steps,
        damping=damping,
        line_search=line_search,
        warm_start=warm_start,
        blocks=blocks,
    )
