"""Diagonal Gauss-Newton: precondition a momentum gradient by a running estimate of diag(Jᵀ H_z J).

The lowest rung of the approximation ladder above AdamW (docs/METHOD.md): the curvature is the
same Gauss-Newton matrix ``G = Jᵀ H_z J`` that full GN solves with, kept only on its diagonal.

Estimator (Gauss-Newton-Bartlett): draw an output-space vector ``r`` whose covariance is the loss's
output Hessian, ``E[r rᵀ] = H_z``, and pull it back, ``Jᵀ r``. Then

    E[(Jᵀ r)²] = diag(Jᵀ E[r rᵀ] J) = diag(G),

so one VJP per sample gives an unbiased estimate of the exact diagonal. For the mean softmax
cross-entropy over N positions ``H_z`` is block-diagonal with blocks ``(diag(p_n) − p_n p_nᵀ)/N``;
``r_n = (p_n − e_{y_n})/√N`` with ``y_n ~ softmax(z_n)`` drawn from the model has exactly that
covariance (:func:`softmax_cotangent`). Any other loss plugs in its own ``sample_cotangent``.

Update, per coordinate, with ``g`` the gradient, both averages bias-corrected as in Adam:

    m ← β₁ m + (1 − β₁) g,    h ← β₂ h + (1 − β₂) ĥ,    u = m̂ / (ĥ_avg + λ)^p,
    θ ← θ − lr · (u + wd · θ).

``p = 1`` is a diagonal Newton step on the GN model; ``p = ½`` is Adam with the squared gradient
replaced by the GN diagonal. ``λ`` (damping) plays Adam's ε and GN's proximal term.

Written by hand for gnbench: no maintained JAX package provides a GN-diagonal preconditioner
(``optax.contrib.sophia`` takes a Hutchinson Hessian estimate and does not bias-correct its
average).

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> apply_fn = lambda w, x: x @ w                       # logits (N, V)
  >>> w, x = jnp.zeros((3, 4)), jnp.ones((1, 5, 3))       # K=1 micro-batch of 5 inputs
  >>> tx = diag_gn(apply_fn, learning_rate=0.1)
  >>> state = tx.init(w)
  >>> updates, state = tx.update(jnp.ones_like(w), state, w, batch=x)
  >>> updates.shape
  (3, 4)

Reference: Martens, "New insights and perspectives on the natural gradient method", JMLR 2020
(the GN matrix of softmax cross-entropy equals the Fisher, whose diagonal sampled labels estimate);
Liu et al., "Sophia", arXiv 2305.14342 (the Gauss-Newton-Bartlett estimator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gnbench.optim import loops, pytrees
from gnbench.optim.checks import Checks, in_range
from gnbench.optim.registry import BuildContext, Optimizer, clip, outer_schedule, register

PyTree = Any
SampleCotangent = Callable[[jax.Array, jax.Array], jax.Array]


def softmax_cotangent(logits: jax.Array, key: jax.Array) -> jax.Array:
    """``r`` with ``E[r rᵀ] = H_z`` for the mean softmax cross-entropy over all leading positions.

    Args:
      logits: ``(..., V)`` model outputs; every leading position is one term of the mean.
      key: PRNG key for the sampled labels ``y ~ softmax(logits)``.

    Returns:
      ``(softmax(z) − onehot(y)) / √N``, shaped like ``logits``, N the number of positions.
    """
    n = logits.size // logits.shape[-1]
    probs = jax.nn.softmax(logits, axis=-1)
    labels = jax.random.categorical(key, logits, axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=probs.dtype)
    return (probs - onehot) / jnp.sqrt(jnp.asarray(n, probs.dtype))


def squared_error_cotangent(outputs: jax.Array, key: jax.Array) -> jax.Array:
    """``r`` with ``E[r rᵀ] = H_z = I / M`` for ``0.5 * mean((z - y)**2)`` over M entries."""
    noise = jax.random.normal(key, outputs.shape, outputs.dtype)
    return noise / jnp.sqrt(jnp.asarray(outputs.size, outputs.dtype))


COTANGENTS: dict[str, SampleCotangent] = {
    "softmax_cross_entropy": softmax_cotangent,
    "squared_error": squared_error_cotangent,
}


def diag_gn_estimate(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    micro_batch: PyTree,
    key: jax.Array,
    sample_cotangent: SampleCotangent = softmax_cotangent,
) -> PyTree:
    """One unbiased sample of diag(Jᵀ H_z J) at ``params``: ``(Jᵀ r)²`` (one forward, one VJP)."""
    logits, pullback = jax.vjp(lambda p: apply_fn(p, micro_batch), params)
    r = sample_cotangent(jax.lax.stop_gradient(logits), key)
    (jtr,) = pullback(r.astype(logits.dtype))
    return jax.tree.map(jnp.square, jtr)


_BATCH_FIX = (
    "batch= needs a leading axis of K micro-batches, each a batch of examples (x: (K, B, ...)); "
    "for one batch pass jax.tree.map(lambda a: a[None], batch)"
)


def _check_micro_batches(apply_fn, params, batch, used: int, classes: bool) -> None:
    """Refuses a ``batch`` without its leading K axis (shapes only, at trace time): a leaf
    without axes, fewer micro-batches than the estimate reads, or (``classes``: softmax
    logits) a micro-batch whose logits have no example axis (one example's)."""
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batch)}
    if None in sizes or len(sizes) != 1:
        raise ValueError(f"diag_gn: batch leaves have leading sizes {sizes}; {_BATCH_FIX}")
    (k,) = sizes
    if k < used:
        raise ValueError(f"diag_gn: batch has {k} micro-batches, curvature_micro_batches={used}")
    if not classes:
        return
    micro_batch = jax.tree.map(lambda x: x[0], batch)
    try:
        out = jax.eval_shape(apply_fn, params, micro_batch)
    except (TypeError, ValueError) as e:  # e.g. a model given one example's features
        shapes = jax.tree.map(jnp.shape, micro_batch)
        raise ValueError(
            f"diag_gn: apply_fn(params, batch[0]) fails on micro-batch shapes {shapes} "
            f"({type(e).__name__}); {_BATCH_FIX}"
        ) from e
    shapes = [o.shape for o in jax.tree.leaves(out)]
    if any(len(s) < 2 for s in shapes):
        raise ValueError(
            f"diag_gn: apply_fn(params, batch[0]) gave outputs of shape {shapes[0]}, one "
            f"example's, not (B, ..., V); {_BATCH_FIX}"
        )


class DiagGNState(NamedTuple):
    """Step count, PRNG key, gradient average ``mu`` and GN-diagonal average ``nu``."""

    count: jax.Array
    key: jax.Array
    mu: PyTree
    nu: PyTree


def scale_by_diag_gn(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    b1: float = 0.9,
    b2: float = 0.99,
    damping: float = 1e-8,
    power: float = 0.5,
    curvature_micro_batches: int = 1,
    sample_cotangent: SampleCotangent = softmax_cotangent,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """``u = m̂ / (ĥ + λ)^p``: the direction of :func:`diag_gn`, before learning rate and decay.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> logits``.
      b1: decay of the gradient average.
      b2: decay of the GN-diagonal average.
      damping: λ > 0 added to the diagonal before the power.
      power: p in (0, 1]: 1 is a diagonal Newton step, ½ is Adam-like.
      curvature_micro_batches: how many of the step's K micro-batches (the first ones) estimate
        the diagonal, one sampled-label VJP each; more lowers the variance and costs one forward
        and one backward pass each.
      sample_cotangent: ``(logits, key) -> r`` with ``E[r rᵀ] = H_z`` (default: softmax CE).
      seed: seed of the label sampling.

    Returns:
      A transform whose ``update(grads, state, params, *, batch)`` needs ``batch``: the step's
      ``(K, ...)`` stacked micro-batches.
    """
    if not 0 < power <= 1:
        raise ValueError(f"power must be in (0, 1], got {power}")
    pytrees.require_numbers("diag_gn", damping=damping, b1=b1, b2=b2)
    if isinstance(damping, (int, float)) and damping <= 0:
        raise ValueError(f"damping must be > 0, got {damping}")
    if curvature_micro_batches < 1:
        raise ValueError(f"curvature_micro_batches must be >= 1, got {curvature_micro_batches}")

    def init_fn(params):
        pytrees.check_params(params, "diag_gn")
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return DiagGNState(
            jnp.zeros((), jnp.int32), jax.random.key_data(jax.random.key(seed)), zeros(), zeros()
        )

    def update_fn(updates, state, params=None, *, batch=None, **extra_args):
        del extra_args
        if params is None or batch is None:
            raise ValueError(
                "diag_gn needs params and batch=: update(grads, state, params, batch=)"
            )
        classes = sample_cotangent is softmax_cotangent
        _check_micro_batches(apply_fn, params, batch, curvature_micro_batches, classes)
        key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
        keys = jax.random.split(sub, curvature_micro_batches)
        # One sampled estimate per micro-batch, in a loop (not unrolled: its compile time stays
        # flat in the count; gnbench.optim.loops unrolls it only for the FLOP count).
        first = jax.tree.map(lambda x: x[:curvature_micro_batches], batch)
        estimates = loops.map(
            lambda mb_key: diag_gn_estimate(
                apply_fn, params, mb_key[0], mb_key[1], sample_cotangent
            ),
            (first, keys),
        )
        estimate = jax.tree.map(lambda e: jnp.mean(e, axis=0), estimates)
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = jax.tree.map(lambda n, e: b2 * n + (1 - b2) * e, state.nu, estimate)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        direction = jax.tree.map(lambda m, n: m / (n + damping) ** power, mu_hat, nu_hat)
        return direction, DiagGNState(count, jax.random.key_data(key), mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def diag_gn(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    damping: float = 1e-8,
    power: float = 0.5,
    weight_decay: float = 0.0,
    curvature_micro_batches: int = 1,
    sample_cotangent: SampleCotangent = softmax_cotangent,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """Diagonal-GN optimizer: :func:`scale_by_diag_gn`, decoupled weight decay, learning rate.

    Args: as :func:`scale_by_diag_gn`, plus ``learning_rate`` (a number or schedule) and
    ``weight_decay`` (decoupled, ``θ ← θ − lr · wd · θ``).
    """
    return optax.chain(
        scale_by_diag_gn(
            apply_fn, b1, b2, damping, power, curvature_micro_batches, sample_cotangent, seed
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


__all__ = [
    "DiagGNState",
    "diag_gn",
    "diag_gn_estimate",
    "scale_by_diag_gn",
    "softmax_cotangent",
    "squared_error_cotangent",
]


@register(
    "diag_gn",
    reads=("diag_gn",),
    check=Checks(
        positive_ints=("diag_gn.curvature_micro_batches",),
        positive_floats=("diag_gn.damping",),
        decays=("diag_gn.b2",),
        extra=(in_range("diag_gn.power", 0, 1, "0.5"),),
    ),
)
def _build(cfg: Any, ctx: BuildContext) -> Optimizer:
    """Registry builder: ``optimizer.diag_gn`` plus the common lr, schedule, b1, decay, clip."""
    if ctx.apply_fn is None:
        raise ValueError("optimizer 'diag_gn' needs BuildContext.apply_fn")
    d = cfg.diag_gn
    if ctx.loss_kind not in COTANGENTS:
        raise ValueError(f"diag_gn: unknown loss_kind {ctx.loss_kind!r}; valid: {list(COTANGENTS)}")

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            diag_gn(
                ctx.apply_fn,
                learning_rate,
                b1=cfg.b1,
                b2=d.b2,
                damping=d.damping,
                power=d.power,
                weight_decay=cfg.weight_decay,
                curvature_micro_batches=min(d.curvature_micro_batches, ctx.micro_batches),
                sample_cotangent=COTANGENTS[ctx.loss_kind],
            ),
        )

    return Optimizer(
        tx=make(outer_schedule(cfg, cfg.learning_rate, ctx)),
        hparams=dict(
            name="diag_gn",
            learning_rate=cfg.learning_rate,
            b1=cfg.b1,
            b2=d.b2,
            damping=d.damping,
            power=d.power,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            curvature_micro_batches=d.curvature_micro_batches,
        ),
    )
