r"""Muon for hidden matrices, AdamW for everything else: the field's reference (Jordan et al. 2024).

This is ``muon`` in the registry. It follows ``muon_update`` and the step of
``SingleDeviceMuonWithAuxAdam`` in https://github.com/KellerJordan/Muon (``muon.py``) exactly;
``muon_optax`` (:mod:`gnbench.optim.first_order.muon_optax`) is the ``optax.contrib.muon``
variant the GN paper's code uses, and differs from this one (bias-corrected Nesterov, routing,
clipping).

For each hidden 2-D weight with gradient :math:`G`, momentum :math:`M` (zero at the start) and
momentum decay :math:`\beta`, one step is

.. math::
  M &\leftarrow \beta M + (1-\beta) G \qquad \text{(torch's ``lerp_``; no bias correction)}\\
  \hat M &= (1-\beta) G + \beta M \ \text{(Nesterov)} \quad\text{or}\quad \hat M = M\\
  U &= \sqrt{\max(1, d_\text{out}/d_\text{in})}\;\mathrm{NS}_5(\hat M)\\
  W &\leftarrow W (1 - \eta\lambda) - \eta U,

where :math:`\mathrm{NS}_5` runs five steps of the quintic Newton-Schulz map
:math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top`,
:math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`, from :math:`X = \hat M/(\|\hat M\|_F + 10^{-7})`,
on the transpose when the matrix has more rows than columns (so :math:`A` is the small Gram
matrix; the map commutes with transposition). It approximates the polar factor :math:`UV^\top`
of :math:`\hat M = U\Sigma V^\top` with a few matmuls instead of an SVD; the tuned coefficients
leave the singular values in roughly [0.7, 1.2] rather than at 1, which does not hurt training.

Layout: the reference's width factor ``max(1, grad.size(-2) / grad.size(-1)) ** 0.5`` is written
for PyTorch's ``(out, in)`` weights. Flax kernels are ``(in, out)``, so here
:math:`d_\text{out}/d_\text{in}` = ``shape[1] / shape[0]``: the same factor for the same layer.
Equinox's ``nn.Linear`` weights are ``(out, in)``, as PyTorch's: the routing detects them and
gives them ``MuonDimensionNumbers((1,), (0,))``, so the factor is again the layer's.
Newton-Schulz needs no change (it commutes with transposition).

Decay: the reference's ``p.mul_(1 - lr*wd); p.add_(update, alpha=-lr)`` gives
:math:`W(1-\eta\lambda) - \eta U = W - \eta(U + \lambda W)`, which is exactly
``add_decayed_weights(wd)`` followed by ``scale_by_learning_rate(lr)`` (checked step for step
against a NumPy port of the reference in ``tests/optim/test_muon.py``).

Precision (set in :mod:`gnbench.optim.precision`): Newton-Schulz runs in bfloat16, as the
reference's ``zeropower_via_newtonschulz5`` does (``G.bfloat16()``), for float32 and bfloat16
parameters alike, so no device default changes it; float64 stays float64 (the step-for-step tests
against the NumPy port). The momentum is kept in the parameters' dtype promoted to at least
float32, and updates come back in the gradients' dtype.

Routing (:mod:`gnbench.optim.routing`, :func:`default_labels`): orthogonalization only makes
sense for matrices mapping hidden features to hidden features, so embeddings, positional tables,
the output head and vectors (biases, norm scales) use AdamW with their own learning rate and
weight decay, as the reference's ``MuonWithAuxAdam`` example does. Its ``adam_update`` is
bias-corrected Adam with ``eps`` outside the square root and the same decoupled decay, i.e.
``optax.adamw``. ``labels=`` or ``weight_dimension_numbers=`` override the default rule; print
``gnbench.optim.routing.format_routing(params)`` to see it.

Kernels of more than two axes (``nn.DenseGeneral``'s ``(d, heads, head_dim)``) are orthogonalized
as the ``(fan_in, fan_out)`` matrix their ``MuonDimensionNumbers`` give (reduction axes, then
output axes, flattened; further axes are batch axes, each slice its own matrix), with
``d_out/d_in = fan_out/fan_in`` in the width factor; a 2-D kernel with the default axes
``(0, 1)`` takes exactly the 2-D path above. (The reference flattens a 4-D torch conv weight
``(out, in, h, w)`` to ``(out, in*h*w)`` the same way.)

References:
  K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
  https://kellerjordan.github.io/posts/muon/ ; code: https://github.com/KellerJordan/Muon .
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

from gnbench.optim import pytrees, routing
from gnbench.optim.precision import newton_schulz_dtype
from gnbench.optim.registry import MUON_CHECKS, clip, muon_family_builder, register

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7  # The reference's ``X / (X.norm() + 1e-7)``.
ADAM_NAMES = ("embed", "head")


def _compute_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def orthogonalize(g: jax.Array, ns_steps: int = 5, eps: float = NS_EPS) -> jax.Array:
    """Quintic Newton-Schulz approximation of the polar factor ``U V^T`` of a matrix.

    The reference's ``zeropower_via_newtonschulz5``, computed in ``g``'s dtype promoted to at
    least float32 (the reference uses bfloat16) and returned in that dtype.

    Args:
      g: an ``(m, n)`` matrix.
      ns_steps: Newton-Schulz iterations.
      eps: added to the Frobenius norm before normalizing.

    Returns:
      An ``(m, n)`` matrix with the singular vectors of ``g`` and singular values near 1.

    Example:
      >>> x = orthogonalize(jnp.array([[3.0, 0.0], [0.0, 0.5]]))
      >>> bool(jnp.all(jnp.abs(jnp.diag(x) - 1) < 0.35))
      True
    """
    if g.ndim != 2:
        raise ValueError(f"orthogonalize needs a matrix, got shape {g.shape}")
    a, b, c = NS_COEFFS
    tall = g.shape[0] > g.shape[1]
    x = g.astype(newton_schulz_dtype(g.dtype))
    x = x.T if tall else x
    x = x / (jnp.linalg.norm(x) + eps)

    def step(_, x):
        s = x @ x.T
        return a * x + (b * s + c * s @ s) @ x

    # fori_loop, not range: under optax.inject_hyperparams ns_steps arrives as an array.
    x = jax.lax.fori_loop(0, ns_steps, step, x, unroll=True)
    return x.T if tall else x


def _matrix_axes(shape, dims) -> tuple[tuple[int, ...], MuonDimensionNumbers]:
    """``(batch axes, normalized dims)``; ``None`` means the 2-D default ``(0, 1)``."""
    dims = MuonDimensionNumbers((0,), (1,)) if dims is None else dims
    dims = routing.normalize_dims(dims, tuple(shape), "Muon dimension numbers")
    used = set(dims.reduction_axis) | set(dims.output_axis)
    return tuple(a for a in range(len(shape)) if a not in used), dims


def orthogonalize_kernel(
    g: jax.Array,
    dims: MuonDimensionNumbers | None = None,
    ns_steps: int = 5,
    eps: float = NS_EPS,
) -> jax.Array:
    """:func:`orthogonalize` of ``g`` viewed as the matrix ``dims`` give, reshaped back.

    The reduction axes are flattened into rows and the output axes into columns (in that
    order); any other axes are batch axes and each slice is orthogonalized on its own. A 2-D
    ``g`` with ``dims`` ``None`` or ``(0, 1)`` is exactly :func:`orthogonalize`.

    Example:
      >>> w = jnp.arange(24.0).reshape(4, 2, 3)           # DenseGeneral (d, heads, head_dim)
      >>> x = orthogonalize_kernel(w, MuonDimensionNumbers((0,), (1, 2)))
      >>> bool(jnp.allclose(x.reshape(4, 6), orthogonalize(w.reshape(4, 6))))
      True
    """
    batch, dims = _matrix_axes(g.shape, dims)
    if not batch and dims == ((0,), (1,)):
        return orthogonalize(g, ns_steps, eps)
    perm = batch + dims.reduction_axis + dims.output_axis
    fan_in = math.prod(g.shape[a] for a in dims.reduction_axis)
    fan_out = math.prod(g.shape[a] for a in dims.output_axis)
    x = jnp.transpose(g, perm).reshape(-1, fan_in, fan_out)
    x = jax.vmap(lambda m: orthogonalize(m, ns_steps, eps))(x)
    x = x.reshape([g.shape[a] for a in perm])
    return jnp.transpose(x, [perm.index(a) for a in range(g.ndim)])


def _dims_tree(weight_dimension_numbers, updates):
    if weight_dimension_numbers is None:
        return jax.tree.map(lambda _: None, updates)
    return pytrees.call_or_tree(weight_dimension_numbers, updates)


class MuonReferenceState(NamedTuple):
    """State of :func:`scale_by_muon_reference`: the momentum buffer of each matrix."""

    momentum: optax.Updates


def scale_by_muon_reference(
    beta: float = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    eps: float = NS_EPS,
    weight_dimension_numbers: Any = None,
) -> optax.GradientTransformation:
    """Momentum and Newton-Schulz of the reference ``muon_update`` (without the width factor).

    ``m <- beta*m + (1-beta)*g``; the direction is ``NS((1-beta)*g + beta*m)`` with Nesterov,
    else ``NS(m)``. No bias correction (unlike ``optax.contrib.scale_by_muon``). Every leaf must
    be a matrix, or come with its ``MuonDimensionNumbers`` (:func:`orthogonalize_kernel`); chain
    :func:`scale_by_width` after it for the reference's full update.

    Args:
      beta: momentum decay (the reference's ``momentum``).
      ns_steps: Newton-Schulz iterations.
      nesterov: Nesterov look-ahead.
      eps: added to the Frobenius norm before Newton-Schulz.
      weight_dimension_numbers: ``None`` (every leaf a 2-D ``(in, out)`` matrix), or a pytree
        of ``MuonDimensionNumbers`` shaped like the updates, or ``updates -> such a pytree``.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`MuonReferenceState`.

    Example:
      >>> tx = scale_by_muon_reference()
      >>> g = jnp.array([[2.0, 0.0], [0.0, 1.0]])
      >>> u, _ = tx.update(g, tx.init(g))
      >>> u.shape
      (2, 2)
    """

    def init_fn(params):
        return MuonReferenceState(
            jax.tree.map(lambda p: jnp.zeros(p.shape, _compute_dtype(p.dtype)), params)
        )

    def update_fn(updates, state, params=None):
        del params
        momentum = jax.tree.map(
            lambda g, m: beta * m + (1 - beta) * g.astype(m.dtype), updates, state.momentum
        )
        if nesterov:
            directions = jax.tree.map(
                lambda g, m: (1 - beta) * g.astype(m.dtype) + beta * m, updates, momentum
            )
        else:
            directions = momentum
        out = jax.tree.map(
            lambda g, d, dn: orthogonalize_kernel(d, dn, ns_steps, eps).astype(g.dtype),
            updates,
            directions,
            _dims_tree(weight_dimension_numbers, updates),
        )
        return out, MuonReferenceState(momentum)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_width(weight_dimension_numbers: Any = None) -> optax.GradientTransformation:
    """Multiplies an ``(in, out)`` update by ``sqrt(max(1, out / in))`` (the reference's factor).

    With ``weight_dimension_numbers`` (as :func:`scale_by_muon_reference` takes them) ``in`` and
    ``out`` are the products of the reduction and output axes.

    Example:
      >>> u, _ = scale_by_width().update(jnp.ones((2, 8)), None)
      >>> float(u[0, 0])
      2.0
    """

    def scale(u, dims):
        _, dims = _matrix_axes(u.shape, dims)
        fan_in = math.prod(u.shape[a] for a in dims.reduction_axis)
        fan_out = math.prod(u.shape[a] for a in dims.output_axis)
        return u * max(1.0, fan_out / fan_in) ** 0.5

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(scale, updates, _dims_tree(weight_dimension_numbers, updates)), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def default_labels(params: Any) -> Any:
    """``"adam"`` for embeddings, positional tables, the head and vectors; ``"muon"`` for hidden
    matrices and kernels (the rule of :mod:`gnbench.optim.routing`; on the gnbench transformer:
    ``embed``, ``head`` and every 1-D leaf to adam, every other matrix to muon).

    Args:
      params: a parameter pytree (e.g. the gnbench Transformer's, a linen or nnx model's).

    Returns:
      A pytree like ``params`` with ``"muon"`` or ``"adam"`` leaves.

    Example:
      >>> default_labels({"embed": {"embedding": jnp.zeros((4, 2))},
      ...                 "block_0": {"up": {"kernel": jnp.zeros((2, 3))}}})
      {'block_0': {'up': {'kernel': 'muon'}}, 'embed': {'embedding': 'adam'}}
    """
    return routing.muon_labels(params)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.0,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    labels: Any = None,
    weight_dimension_numbers: Any = None,
) -> optax.GradientTransformation:
    """The reference Muon on parameters routed to ``"muon"``, AdamW on those routed to ``"adam"``.

    Args:
      learning_rate: Muon learning rate (float or schedule).
      adam_learning_rate: AdamW learning rate; ``None`` means ``learning_rate``.
      momentum: Muon momentum decay.
      nesterov: Nesterov look-ahead for the Muon momentum (the AdamW part is plain AdamW).
      ns_steps: Newton-Schulz iterations.
      weight_decay: decoupled decay of Muon matrices (multiplied by ``learning_rate``).
      adam_b1: AdamW first-moment decay.
      adam_b2: AdamW second-moment decay.
      adam_eps: AdamW epsilon (Newton-Schulz uses the reference's 1e-7).
      adam_weight_decay: AdamW decoupled weight decay.
      labels: ``"muon"``/``"adam"`` per leaf: a pytree, or ``params -> pytree``; ``None`` means
        the default rule (:func:`default_labels`). A >2-D leaf sent to muon is orthogonalized
        as the matrix the default rule's axes give.
      weight_dimension_numbers: instead of ``labels``, optax.contrib.muon's convention: a pytree
        (or ``params -> pytree``) of ``MuonDimensionNumbers`` (muon, with those axes) or
        ``None`` (adam). Under ``optax.inject_hyperparams`` list ``labels`` and
        ``weight_dimension_numbers`` in ``static_args``.

    Returns:
      An ``optax.GradientTransformation`` (``optax.partition`` of the two parts, routed by
      :func:`gnbench.optim.routing.routes` on the tree it is given).

    Example:
      >>> params = {"embed": {"embedding": jnp.ones((8, 4))},
      ...           "block_0": {"up": {"kernel": jnp.ones((4, 4))}}}
      >>> tx = muon(0.02, adam_learning_rate=1e-3)
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["block_0"]["up"]["kernel"].shape
      (4, 4)
    """
    pytrees.require_numbers(
        "muon",
        momentum=momentum,
        weight_decay=weight_decay,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_weight_decay=adam_weight_decay,
    )
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    adam_part = optax.adamw(
        adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=adam_weight_decay
    )

    def build(tree):
        """The partition for this tree's routing (decided on the tree, so on a masked subtree
        inside layerwise GN too; see gnbench.optim.routing's limits)."""
        table = routing.routes(tree, labels, weight_dimension_numbers)
        dims = routing.dims_lookup(table)
        muon_part = optax.chain(
            scale_by_muon_reference(
                beta=momentum, ns_steps=ns_steps, nesterov=nesterov, weight_dimension_numbers=dims
            ),
            scale_by_width(dims),
            # p - lr*(u + wd*p) == the reference's p*(1 - lr*wd) - lr*u.
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
        )
        groups = routing.label_tree(tree, table, lambda r: r.group)
        routing.warn_if_no_muon(table, tree, "muon")
        return optax.partition({"muon": muon_part, "adam": adam_part}, pytrees.constant(groups))

    return pytrees.built_per_tree(build, "muon")


def _reference_muon(cfg, ctx, learning_rate, adam_learning_rate) -> optax.GradientTransformation:
    """The field's reference Muon (this module's :func:`muon`) after one global-norm clip."""
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


register("muon", reads=("muon",), check=MUON_CHECKS)(muon_family_builder("muon", _reference_muon))


__all__ = [
    "MuonReferenceState",
    "default_labels",
    "muon",
    "orthogonalize",
    "orthogonalize_kernel",
    "scale_by_muon_reference",
    "scale_by_width",
]
