"""Layerwise (block-diagonal) Gauss-Newton: each block of parameters solves its own GN model.

The parameters are split into blocks b (by default one per top-level parameter group, below
linen's ``{"params": ...}``, on dicts and nnx ``State`` alike; for the gnbench transformer: the
embedding, each transformer block with the final norm joining the last one, and the head:
n_layers + 2 blocks; :func:`format_blocks` lists them).
Block b linearizes the model in its own parameters only, all others frozen at θ_t (``J_b``), and
minimizes its own model over the same K micro-batches with its own inner optimizer state:

    q_b(Δ_b) = L(f_t) + g_zᵀ J_b Δ_b + ½ Δ_bᵀ J_bᵀ H_z J_b Δ_b + λ/2 ‖Δ_b‖²

(or the prox-linear ``L(f_t + J_b Δ_b) + λ/2 ‖Δ_b‖²``). The block solutions are joined into one
direction d, followed by one line search. Summed over blocks this is GN with the block-diagonal
curvature ``diag_b(J_bᵀ H_z J_b)``: cross-block curvature is ignored. With one block it is full GN
(the same code path).

Cost: one ``lax.scan`` over the K micro-batches. Generic path (any ``apply_fn``): at each, a
Python loop over the (static) blocks linearizes the model in that block's parameters and pays
one JVP and one VJP through the layers *after* those parameters (symbolic zeros skip the layers
before), plus one output-space product; each block's linearization also re-runs the primal
forward (XLA's CSE merges only a small part of these repeats): about ``n_blocks`` forwards plus
``(n_blocks + 1)/2`` JVP+VJPs, 2.4-2.6x a full GN inner step on the tiny and small gnbench
models. Staged path (``staged=``, a :class:`gnbench.optim.gn.staged.StagedModel`: the trainer
passes the gnbench transformer's stages): one forward per micro-batch shared by all blocks, each
block's JVP starting at its stage and its VJP stopping there
(:func:`gnbench.optim.gn.staged.staged_model_eval`, same math); about 2.0x a full GN inner step
and half the generic path's temporary memory. What remains is the blocks' own tangents through
the later layers, ``Σ_c (c) (JVP_c + VJP_c)`` of the input maps (``benchmarks/gn_step.py
--breakdown``). It is a method to compare against, not a shortcut.

Written by hand for gnbench: no maintained package provides it.

Reference: Abreu, Vyas, Kakade, Morwani, "The Potential of Second-Order Optimization for LLMs: A
Study with Full Gauss-Newton", arXiv 2510.09378 (ICLR 2026).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp  # noqa: F401  (the docstring examples)
import optax

from gnbench.optim.gn.curvature import ApplyFn, LossFn, PyTree, gn_output_rule
from gnbench.optim.gn.gauss_newton import gauss_newton_core
from gnbench.optim.gn.prox_linear import prox_linear_output_rule
from gnbench.optim.gn.staged import StagedModel, staged_model_eval
from gnbench.optim.pytrees import call_or_tree, path_names, top_level_depth

_RULES = {"gn": gn_output_rule, "prox_linear": prox_linear_output_rule}


FINAL_NORMS = ("final_norm", "ln_f", "norm_f", "final_layer_norm", "final_layernorm")
_NUMBERED_BLOCK = re.compile(r"(block|layer|layers|h)_(\d+)")


def transformer_blocks(params: PyTree) -> PyTree:
    """Block label per leaf: one block per top-level entry, a final norm joining the last block.

    The top level is :func:`gnbench.optim.routing.top_level_depth`'s: below linen's
    ``{"params": ...}`` collection and below single-entry wrappers (an nnx model whose layers
    sit in one ``nnx.List`` gives ``layers/0``, ``layers/1``, ...), never inside one layer. Works
    on any pytree (dicts, linen variables, nnx ``State``: the labels have the structure of
    ``params``). For the gnbench transformer (``embed``, ``block_0`` ... ``block_{n-1}``,
    ``final_norm``, ``head``) this gives the paper's n_layers + 2 blocks: ``final_norm`` (or
    ``ln_f``, ``norm_f``, ...) joins the highest-numbered ``block_<i>``/``layer(s)_<i>``/``h_<i>``
    (case-insensitive). Any other top-level entry is its own block. See :func:`format_blocks`.

    Args:
      params: a parameter pytree.

    Returns:
      A pytree shaped like ``params`` with a string label at every leaf.

    Example:
      >>> labels = transformer_blocks({"embed": 1, "block_0": {"w": 2}, "final_norm": 3, "head": 4})
      >>> labels["final_norm"], labels["block_0"]["w"]
      ('block_0', 'block_0')
      >>> transformer_blocks({"params": {"Dense_0": {"kernel": 1}, "Dense_1": {"kernel": 2}}})
      {'params': {'Dense_0': {'kernel': 'Dense_0'}, 'Dense_1': {'kernel': 'Dense_1'}}}
    """
    names = [path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    depth = top_level_depth(names)
    entries = {n[depth] for n in names if len(n) > depth}
    numbered = [
        (int(m.group(2)), e) for e in entries if (m := _NUMBERED_BLOCK.fullmatch(e.lower()))
    ]
    last_block = max(numbered)[1] if numbered else None

    def label(path, _):
        n = path_names(path)
        prefix = [k for i, k in enumerate(n[:depth]) if not (i == 0 and k == "params")]
        entry = n[min(depth, len(n) - 1)]
        if entry.lower() in FINAL_NORMS and last_block is not None:
            entry = last_block
        return "/".join([*prefix, entry])

    return jax.tree_util.tree_map_with_path(label, params)


def block_table(
    params: PyTree, blocks: Callable[[PyTree], PyTree] | None = None
) -> list[tuple[str, list[str], int]]:
    """Rows ``(block, leaf paths, parameter count)``, sorted by block (as layerwise GN's).

    Args:
      params: a parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
      blocks: the ``blocks`` given to :func:`layerwise_gauss_newton`; ``None`` means
        :func:`transformer_blocks`.
    """
    labels = call_or_tree(blocks or transformer_blocks, params)
    rows: dict[str, tuple[list[str], int]] = {}
    flat = jax.tree_util.tree_leaves_with_path(params)
    for (path, x), lab in zip(flat, jax.tree.structure(params).flatten_up_to(labels), strict=True):
        leaves, count = rows.get(lab, ([], 0))
        rows[lab] = ([*leaves, "/".join(path_names(path))], count + math.prod(x.shape))
    return [(lab, *rows[lab]) for lab in sorted(rows)]


def format_blocks(params: PyTree, blocks: Callable[[PyTree], PyTree] | None = None) -> str:
    """The blocks layerwise GN would use, one line each: name, parameter count, leaves.

    Example:
      >>> print(format_blocks({"params": {"a": {"kernel": jnp.zeros((2, 3))},
      ...                                 "b": {"kernel": jnp.zeros(3)}}}))
      2 blocks
      a  6  params/a/kernel
      b  3  params/b/kernel
    """
    rows = block_table(params, blocks)
    width = max(len(r[0]) for r in rows)
    lines = [f"{lab:<{width}}  {count}  {', '.join(leaves)}" for lab, leaves, count in rows]
    return "\n".join([f"{len(rows)} blocks", *lines])


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
    staged: StagedModel | None = None,
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
      staged: ``apply_fn`` as a chain of stages, one per block
        (:class:`gnbench.optim.gn.staged.StagedModel`): the inner steps then share one forward
        per micro-batch (:func:`gnbench.optim.gn.staged.staged_model_eval`, the same result at a
        lower cost); ``None``: the generic path. The line search calls ``apply_fn`` either way.

    Returns:
      A transform with ``update(grads, state, params, *, batch, ls_batch=None)`` (``grads``
      ignored) and a :class:`gnbench.optim.gn.gauss_newton.GaussNewtonState` whose inner state is an
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
    extra = {}
    if staged is not None:
        if not isinstance(staged, StagedModel):
            raise ValueError(f"staged must be a StagedModel or None, got {type(staged).__name__}")
        extra["model_eval"] = lambda _apply_fn, *args, **kwargs: staged_model_eval(
            staged, *args, **kwargs
        )
    return gauss_newton_core(
        apply_fn,
        loss_fn,
        rule=_RULES[objective],
        inner=inner,
        inner_steps=inner_steps,
        damping=damping,
        line_search=line_search,
        warm_start=warm_start,
        blocks=blocks,
        **extra,
    )
