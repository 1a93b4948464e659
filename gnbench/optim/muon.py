r"""Muon for hidden matrices, AdamW for everything else (Jordan et al. 2024).

Muon (MomentUm Orthogonalized by Newton-Schulz) keeps a momentum :math:`M` of each hidden 2-D
weight's gradient and steps along its orthogonal polar factor:

.. math::
  M \leftarrow \mu M + (1-\mu) G, \qquad
  W \leftarrow W - \eta \big(\sqrt{\max(1, d_\text{out}/d_\text{in})}\;
  \mathrm{NS}_5(\hat M) + \lambda W\big),

where :math:`\hat M` is :math:`M` (or its Nesterov look-ahead) and :math:`\mathrm{NS}_5`
approximates :math:`U V^\top` for :math:`\hat M = U \Sigma V^\top` by five steps of the quintic
Newton-Schulz map :math:`X \leftarrow aX + b(XX^\top)X + c(XX^\top)^2X` with
:math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`, started from :math:`\hat M/\|\hat M\|_F`. Why no
SVD: the iteration is a few matmuls, cheap on accelerators and shardable. Its coefficients trade
exactness for speed: singular values land in roughly [0.7, 1.2] instead of exactly 1, which
does not hurt training.

Orthogonalization is only meaningful for matrices that act as linear maps between hidden
features, so embeddings, the output head and 1-D parameters (norm scales) use AdamW with their
own learning rate and weight decay. The Muon part is optax's ``optax.contrib.scale_by_muon`` (and
its width scaling); this module only routes parameters and wires the two learning rates.

References:
  K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
  https://kellerjordan.github.io/posts/muon/ ; J. Liu et al., "Muon is Scalable for LLM
  Training", arXiv 2502.16982.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

NS_COEFFS = (3.4445, -4.7750, 2.0315)
ADAM_NAMES = ("embed", "head")


def orthogonalize(g: jax.Array, ns_steps: int = 5, eps: float = 1e-8) -> jax.Array:
    """Quintic Newton-Schulz approximation of the polar factor ``U V^T`` of a matrix.

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
    a, b, c = NS_COEFFS
    wide = g.shape[0] <= g.shape[1]
    x = g if wide else g.T
    x = x / (jnp.linalg.norm(x) + eps)
    for _ in range(ns_steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x if wide else x.T


def _scale_by_width() -> optax.GradientTransformation:
    """Multiplies a ``(fan_in, fan_out)`` update by ``sqrt(max(1, fan_out / fan_in))``."""

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
    """Muon on parameters labelled ``"muon"``, AdamW on those labelled ``"adam"``.

    Args:
      learning_rate: Muon learning rate (float or schedule).
      adam_learning_rate: AdamW learning rate; ``None`` means ``learning_rate``.
      momentum: Muon momentum decay.
      nesterov: Nesterov look-ahead for the Muon momentum (the AdamW part is plain AdamW).
      ns_steps: Newton-Schulz iterations.
      weight_decay: decoupled decay of Muon matrices (multiplied by ``learning_rate``).
      adam_b1: AdamW first-moment decay.
      adam_b2: AdamW second-moment decay.
      adam_eps: AdamW epsilon.
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

    def dims(updates):
        # Inside optax.partition the Adam leaves are MaskedNode (empty subtrees): map real leaves.
        return jax.tree.map(lambda _: MuonDimensionNumbers(0, 1), updates)

    muon_part = optax.chain(
        scale_by_muon(
            ns_coeffs=NS_COEFFS,
            ns_steps=ns_steps,
            beta=momentum,
            eps=adam_eps,
            nesterov=nesterov,
            weight_dimension_numbers=dims,
        ),
        _scale_by_width(),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam_part = optax.adamw(
        adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=adam_weight_decay
    )
    return optax.partition({"muon": muon_part, "adam": adam_part}, labels)


__all__ = ["default_labels", "muon", "orthogonalize"]
