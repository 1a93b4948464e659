r"""Muon for hidden matrices, AdamW for everything else: the field's reference (Jordan et al. 2024).

This is ``muon`` in the registry. It follows ``muon_update`` and the step of
``SingleDeviceMuonWithAuxAdam`` in https://github.com/KellerJordan/Muon (``muon.py``) exactly;
``muon_optax`` (:mod:`gnbench.optim.muon_optax`) is the ``optax.contrib.muon`` variant the GN
paper's code uses, and differs from this one (bias-corrected Nesterov, routing, clipping).

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
Newton-Schulz needs no change (it commutes with transposition).

Decay: the reference's ``p.mul_(1 - lr*wd); p.add_(update, alpha=-lr)`` gives
:math:`W(1-\eta\lambda) - \eta U = W - \eta(U + \lambda W)`, which is exactly
``add_decayed_weights(wd)`` followed by ``scale_by_learning_rate(lr)`` (checked step for step
against a NumPy port of the reference in ``tests/optim/test_muon.py``).

Precision: the reference casts to bfloat16 for Newton-Schulz (it is stable there and fast on
GPUs). We compute the momentum and Newton-Schulz in the parameters' dtype promoted to at least
float32 (so float64 stays float64 in tests, and bfloat16 parameters still get a float32 EMA and
orthogonalization), and return updates in the gradients' dtype: the benchmark compares
optimizers, and a bfloat16 cast would add rounding noise that is not part of the algorithm.

Routing (:func:`default_labels`): orthogonalization only makes sense for matrices mapping hidden
features to hidden features, so embeddings, the output head and every non-2-D leaf (norm scales)
use AdamW with their own learning rate and weight decay, as the reference's
``MuonWithAuxAdam`` example does. Its ``adam_update`` is bias-corrected Adam with ``eps`` outside
the square root and the same decoupled decay, i.e. ``optax.adamw``.

References:
  K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
  https://kellerjordan.github.io/posts/muon/ ; code: https://github.com/KellerJordan/Muon .
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

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
    x = g.astype(_compute_dtype(g.dtype))
    x = x.T if tall else x
    x = x / (jnp.linalg.norm(x) + eps)

    def step(_, x):
        s = x @ x.T
        return a * x + (b * s + c * s @ s) @ x

    # fori_loop, not range: under optax.inject_hyperparams ns_steps arrives as an array.
    x = jax.lax.fori_loop(0, ns_steps, step, x, unroll=True)
    return x.T if tall else x


class MuonReferenceState(NamedTuple):
    """State of :func:`scale_by_muon_reference`: the momentum buffer of each matrix."""

    momentum: optax.Updates


def scale_by_muon_reference(
    beta: float = 0.95, ns_steps: int = 5, nesterov: bool = True, eps: float = NS_EPS
) -> optax.GradientTransformation:
    """Momentum and Newton-Schulz of the reference ``muon_update`` (without the width factor).

    ``m <- beta*m + (1-beta)*g``; the direction is ``NS((1-beta)*g + beta*m)`` with Nesterov,
    else ``NS(m)``. No bias correction (unlike ``optax.contrib.scale_by_muon``). Every leaf must
    be a matrix; chain :func:`scale_by_width` after it for the reference's full update.

    Args:
      beta: momentum decay (the reference's ``momentum``).
      ns_steps: Newton-Schulz iterations.
      nesterov: Nesterov look-ahead.
      eps: added to the Frobenius norm before Newton-Schulz.

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
            lambda g, d: orthogonalize(d, ns_steps, eps).astype(g.dtype), updates, directions
        )
        return out, MuonReferenceState(momentum)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_width() -> optax.GradientTransformation:
    """Multiplies an ``(in, out)`` update by ``sqrt(max(1, out / in))`` (the reference's factor).

    Example:
      >>> u, _ = scale_by_width().update(jnp.ones((2, 8)), None)
      >>> float(u[0, 0])
      2.0
    """

    def update_fn(updates, state, params=None):
        del params
        scale = lambda u: u * max(1.0, u.shape[1] / u.shape[0]) ** 0.5  # noqa: E731
        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def default_labels(params: Any) -> Any:
    """``"adam"`` for ``embed``, ``head`` and every non-2-D leaf; ``"muon"`` for other matrices.

    Args:
      params: a parameter pytree (e.g. the gnbench Transformer's).

    Returns:
      A pytree like ``params`` with ``"muon"`` or ``"adam"`` leaves.

    Example:
      >>> default_labels({"embed": {"embedding": jnp.zeros((4, 2))},
      ...                 "block_0": {"up": {"kernel": jnp.zeros((2, 3))}}})
      {'block_0': {'up': {'kernel': 'muon'}}, 'embed': {'embedding': 'adam'}}
    """

    def label(path, x):
        names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
        if x.ndim != 2 or names & set(ADAM_NAMES):
            return "adam"
        return "muon"

    return jax.tree_util.tree_map_with_path(label, params)


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
    labels: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """The reference Muon on parameters labelled ``"muon"``, AdamW on those labelled ``"adam"``.

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
      labels: ``params -> pytree of "muon" | "adam"``; ``None`` means :func:`default_labels`.
        Under ``optax.inject_hyperparams`` list it in ``static_args``.

    Returns:
      An ``optax.GradientTransformation`` (``optax.partition`` of the two parts).

    Example:
      >>> params = {"embed": {"embedding": jnp.ones((8, 4))},
      ...           "block_0": {"up": {"kernel": jnp.ones((4, 4))}}}
      >>> tx = muon(0.02, adam_learning_rate=1e-3)
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["block_0"]["up"]["kernel"].shape
      (4, 4)
    """
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    labels = default_labels if labels is None else labels
    muon_part = optax.chain(
        scale_by_muon_reference(beta=momentum, ns_steps=ns_steps, nesterov=nesterov),
        scale_by_width(),
        # p - lr*(u + wd*p) == the reference's p*(1 - lr*wd) - lr*u.
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam_part = optax.adamw(
        adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=adam_weight_decay
    )
    return optax.partition({"muon": muon_part, "adam": adam_part}, labels)


__all__ = [
    "MuonReferenceState",
    "default_labels",
    "muon",
    "orthogonalize",
    "scale_by_muon_reference",
    "scale_by_width",
]
