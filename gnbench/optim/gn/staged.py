"""Layerwise GN's inner objective on a model given as a chain of stages: one shared forward.

A :class:`StagedModel` writes ``apply_fn(params, batch)`` as ``h_0 = inputs(batch)``,
``h_{c+1} = stage_c(params_c, h_c)``, outputs ``h_N``, with one stage per layerwise-GN block
(stage c reads only block c's parameters). :func:`staged_model_eval` then evaluates the
block-diagonal inner objective of :func:`gnbench.optim.gn.curvature.linearized_model_eval`
(same math, same result) at a lower cost:

1. one primal forward per micro-batch: one ``jax.vjp`` per stage, in its parameters and its
   input together, whose residuals give ``A_cᵀ`` and ``B_cᵀ`` (``A_c = ∂h_{c+1}/∂θ_c``,
   ``B_c = ∂h_{c+1}/∂h_c``; XLA drops the half of the VJP a call does not use) and, transposed
   back, ``A_c`` and ``B_c`` (no second forward; on the tiny model this compiles to 373 dots
   per inner step against 402 with a ``jax.linearize`` per map and 478 on the generic path);
2. block b's JVP is ``J_b Δ_b = B_{N-1} ⋯ B_{b+1} A_b Δ_b``: it starts at its own stage;
3. its VJP is the transpose in reverse order, ``J_bᵀ w = A_bᵀ B_{b+1}ᵀ ⋯ B_{N-1}ᵀ w``, and stops
   at stage b's parameters.

Cost model (per micro-batch): let ``F_c`` be stage c's forward, ``P_c`` its parameter JVP + VJP
and ``I_c`` its input JVP + VJP. Full GN pays about ``Σ_c (F_c + P_c)`` (its JVP and VJP carry
the input tangent along with the parameter one at little extra cost). The staged path pays the
same plus ``Σ_c c·I_c`` (stage c's input maps carry the tangent of every block before it, c of
them) and one output-space product per block. That sum is the floor of any exact block-diagonal
GN product: block b's tangent must cross every later stage, both ways. On the gnbench
transformer the embedding and head stages are cheap, and per layer ``I ≈ 2F``, ``P ≈ 5F``
(a parameter VJP ≈ 3F on CPU, measured by ``benchmarks/gn_step.py --breakdown``), so with L
layers the ratio to full GN is about ``1 + (L + 1)/2 · 2/6 = 1 + (L + 1)/6``: 1.8 for L = 4,
measured 1.8-2.0. The generic path (no stages) re-runs the forward once per block: 2.4-2.6x.

Example:
  >>> import jax.numpy as jnp
  >>> staged = StagedModel(
  ...     inputs=lambda x: x,
  ...     stages=(("a", lambda p, h: jnp.tanh(h @ p["a"])), ("b", lambda p, h: h @ p["b"])),
  ... )
  >>> params = {"a": jnp.eye(2), "b": jnp.ones((2, 1))}
  >>> staged.apply(params, jnp.ones((3, 2))).shape
  (3, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gnbench.optim.gn.curvature import LossFn, ModelEval, OutputRule, PyTree, gn_output_rule
from gnbench.optim.precision import pinned

Stage = Callable[[PyTree, Any], Any]


@dataclasses.dataclass(frozen=True)
class StagedModel:
    """A model ``apply_fn(params, batch)`` as ``inputs`` followed by a chain of stages.

    Attributes:
      inputs: ``inputs(batch) -> h_0``, the first stage's input (e.g. the input tokens).
      stages: ``(block label, stage)`` pairs in forward order, one per block of layerwise GN
        (the labels of its ``blocks``). ``stage(block_params, h) -> h'`` where ``block_params``
        is ``params`` with every leaf outside the stage's block set to ``None``, so a stage that
        reads another block's parameters fails instead of silently freezing them.
    """

    inputs: Callable[[PyTree], Any]
    stages: tuple[tuple[str, Stage], ...]

    def __post_init__(self):
        names = [name for name, _ in self.stages]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"StagedModel needs distinct stage labels, got {names}")

    def apply(self, params: PyTree, batch: PyTree, labels: PyTree | None = None) -> Any:
        """The model's outputs: every stage in turn (``labels``: block per leaf; default: the
        stage's label is the top-level key of its parameters, as for ``{"a": ..., "b": ...}``)."""
        leaves, treedef = jax.tree.flatten(params)
        groups = _groups(treedef, labels if labels is not None else _top_labels(params))
        h = self.inputs(batch)
        for name, stage in self.stages:
            idx = groups[name]
            h = stage(_only(treedef, len(leaves), idx, [leaves[i] for i in idx]), h)
        return h


def _top_labels(params: PyTree) -> PyTree:
    return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}


def _groups(treedef: Any, labels: PyTree) -> dict[str, list[int]]:
    flat = treedef.flatten_up_to(labels)
    return {name: [i for i, lab in enumerate(flat) if lab == name] for name in set(flat)}


def _only(treedef: Any, n: int, idx: Sequence[int], block: Sequence[Any]) -> PyTree:
    """``params`` holding ``block`` at the leaves ``idx`` and ``None`` everywhere else."""
    full: list[Any] = [None] * n
    for i, leaf in zip(idx, block, strict=True):
        full[i] = leaf
    return jax.tree.unflatten(treedef, full)


def check_stages(staged: StagedModel, block_labels: PyTree, treedef: Any) -> dict[str, list[int]]:
    """The leaf indices of each stage's block; an error if stages and blocks differ."""
    groups = _groups(treedef, block_labels)
    names = [name for name, _ in staged.stages]
    if set(names) != set(groups):
        raise ValueError(
            f"StagedModel stages {names} do not match the layerwise blocks {sorted(groups)}; "
            "give one stage per block (or no StagedModel, for the generic path)"
        )
    return groups


@dataclasses.dataclass(frozen=True)
class StageMaps:
    """A stage's four linear maps at its primal point, from one ``jax.vjp``.

    ``vjp_fn`` is ``jax.vjp``'s (a ``jax.tree_util.Partial``: it can cross ``jax.jit``).
    """

    vjp_fn: Callable[[Any], tuple[Any, ...]]
    out: jax.ShapeDtypeStruct

    def param_vjp(self, w: Any) -> Any:
        """``A_cᵀ w`` (XLA drops the unused input half of ``vjp_fn``)."""
        return self.vjp_fn(w)[0]

    def input_vjp(self, w: Any) -> Any:
        """``B_cᵀ w``."""
        return self.vjp_fn(w)[1]

    def param_jvp(self, d: Any) -> Any:
        """``A_c d``, the transpose of :meth:`param_vjp`."""
        return jax.linear_transpose(self.param_vjp, self.out)(d)[0]

    def input_jvp(self, t: Any) -> Any:
        """``B_c t``, the transpose of :meth:`input_vjp`."""
        return jax.linear_transpose(self.input_vjp, self.out)(t)[0]


def linearize_stages(
    staged: StagedModel, params_t: PyTree, batch: PyTree, groups: dict[str, list[int]]
) -> tuple[Any, list[StageMaps]]:
    """One forward: the outputs and every stage's :class:`StageMaps` (one ``jax.vjp`` each,
    in the stage's parameters and its input together; the first stage's input, the tokens,
    has no block before it, so its maps have no input half). ``groups``: :func:`check_stages`."""
    leaves_t, treedef = jax.tree.flatten(params_t)
    n = len(leaves_t)
    h = staged.inputs(batch)
    maps = []
    for c, (name, stage) in enumerate(staged.stages):
        idx = groups[name]
        block_t = [leaves_t[i] for i in idx]
        run = lambda blk, x, idx=idx, s=stage: s(_only(treedef, n, idx, blk), x)  # noqa: E731
        if c == 0:
            out, vjp_fn = jax.vjp(lambda blk, x=h, r=run: r(blk, x), block_t)
        else:
            out, vjp_fn = jax.vjp(run, block_t, h)
        maps.append(StageMaps(vjp_fn, jax.ShapeDtypeStruct(out.shape, out.dtype)))
        h = out
    return h, maps


@pinned("curvature")
def staged_model_eval(
    staged: StagedModel,
    loss_fn: LossFn,
    params_t: PyTree,
    batch: PyTree,
    delta: PyTree,
    *,
    damping: float = 0.0,
    rule: OutputRule = gn_output_rule,
    block_labels: PyTree,
) -> ModelEval:
    """:func:`~gnbench.optim.gn.curvature.linearized_model_eval` with ``block_labels``, on a
    :class:`StagedModel`: one forward shared by all blocks, each block's JVP starting at its
    stage and its VJP stopping there. Same arguments (``staged`` for ``apply_fn``), same result.

    Example:
      >>> import jax.numpy as jnp
      >>> staged = StagedModel(lambda x: x, (("a", lambda p, h: h @ p["a"]),
      ...                                    ("b", lambda p, h: h @ p["b"])))
      >>> params = {"a": jnp.eye(2), "b": jnp.ones(2)}
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2)
      >>> ev = staged_model_eval(staged, loss_fn, params, jnp.eye(2), params,
      ...                        block_labels={"a": "a", "b": "b"})
      >>> ev.grad["b"]  # J_bᵀ H_z J_b Δ_b: h = x a = I, u = h Δ_b = 1, H_z = I/2
      Array([0.5, 0.5], dtype=float32)
    """
    leaves_t, treedef = jax.tree.flatten(params_t)
    leaves_d = treedef.flatten_up_to(delta)
    groups = check_stages(staged, block_labels, treedef)
    n = len(leaves_t)

    # 1. One forward: A_c and B_c of every stage, with their transposes.
    outputs, maps = linearize_stages(staged, params_t, batch, groups)

    # 2./3. Per block: JVP from its stage to the outputs, output rule, VJP back to its stage.
    grads: list[Any] = [None] * n
    gains: dict[str, jax.Array] = {}
    loss_t = None
    last = len(staged.stages) - 1
    for b, (name, _) in enumerate(staged.stages):
        idx = groups[name]
        u = maps[b].param_jvp([leaves_d[i] for i in idx])
        for c in range(b + 1, last + 1):
            u = maps[c].input_jvp(u)
        value, w, loss_t = rule(loss_fn, outputs, u, batch)
        for c in range(last, b, -1):
            w = maps[c].input_vjp(w)
        for i, g in zip(idx, maps[b].param_vjp(w), strict=True):
            grads[i] = g + damping * leaves_d[i]
        gains[name] = value - loss_t
    model_gain = jnp.zeros(())
    for name in sorted(gains):  # linearized_model_eval's order: the same rounding
        model_gain = model_gain + gains[name]
    value = loss_t + model_gain + 0.5 * damping * optax.tree_utils.tree_norm(delta, squared=True)
    return ModelEval(value, jax.tree.unflatten(treedef, grads), loss_t)
