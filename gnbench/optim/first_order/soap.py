r"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024).

Reference: Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson, Kakade, "SOAP: Improving
and Stabilizing Shampoo using Adam", arXiv 2409.11321, and the authors' PyTorch code
(github.com/nikhilvyas/SOAP, ``soap.py``). This file is hand-written because no maintained JAX
package provides SOAP; it follows the authors' code step for step (order of operations, bias
correction, weight decay, basis refresh) and ``tests/optim/test_soap.py`` checks it against an
independent NumPy float64 port.

For a gradient :math:`G` (reshaped to its *working shape*, see ``merge_dims``) with dimensions
:math:`d_1, \dots, d_k`, SOAP keeps, for every dimension :math:`i` with :math:`d_i \le`
``max_precond_dim``, a statistic :math:`L_i \in \mathbb{R}^{d_i \times d_i}` and an orthogonal
basis :math:`Q_i`. :math:`C_i(G)` contracts :math:`G` with itself over every axis but :math:`i`
(for a matrix, :math:`C_1 = G G^\top`, :math:`C_2 = G^\top G`). Writing :math:`G \times_i Q`
for multiplying axis :math:`i` by :math:`Q`, the rotations are
:math:`\mathrm{rot}(G) = G \times_1 Q_1^\top \cdots \times_k Q_k^\top` and
:math:`\mathrm{rot}^{-1}(X) = X \times_1 Q_1 \cdots \times_k Q_k` (axes without a statistic are
left alone). With :math:`\beta_s` = ``shampoo_beta``:

* first call: :math:`L_i = (1-\beta_s)\,C_i(G_0)`, :math:`Q_i` = eigenvectors of :math:`L_i`
  (eigenvalues descending); the update is zero, so the first gradient never preconditions itself.
* call :math:`t \ge 1`:

  .. math::
    \tilde G = \mathrm{rot}(G_t),\quad m \leftarrow \beta_1 m + (1-\beta_1)\tilde G,\quad
    v \leftarrow \beta_2 v + (1-\beta_2)\tilde G^2,

    N = \mathrm{rot}^{-1}\!\big(m / (\sqrt v + \epsilon)\big),\quad
    \eta_t = \eta \sqrt{1-\beta_2^t} / (1-\beta_1^t),\quad
    p \leftarrow (p - \eta_t N)(1 - \eta\lambda),

  then :math:`L_i \leftarrow \beta_s L_i + (1-\beta_s) C_i(G_t)`, and when
  :math:`t \bmod f = 0` (``precondition_frequency``) every basis takes one step of power
  iteration with QR: with :math:`\hat\lambda = \mathrm{diag}(Q_i^\top L_i Q_i)` sorted
  descending by the permutation :math:`\pi`, :math:`Q_i \leftarrow \mathrm{qr}(L_i Q_i[:, \pi])`,
  :math:`v` is permuted by :math:`\pi` along axis :math:`i`, and :math:`m` (which lives in the
  rotated basis) is rotated back with the old bases and forward with the new ones.

Why QR power iteration and not ``eigh`` every time: ``L_i`` moves slowly, so one power step from
the previous basis tracks its eigenvectors at the cost of two matrix products and a QR; ``eigh``
runs once, on the first call. ``normalize_grads`` divides :math:`N` by its root mean square,
as the reference does.

All state is arrays in pytrees parallel to the parameters: ``m`` and ``v`` have the parameter's
shape; per parameter, ``stats`` and ``bases`` are dicts ``{"axis_i": (d_i, d_i) matrix}`` holding
only the rotated axes (an axis that is not rotated has no entry, so checkpoints never hold empty
arrays). The state is built only from arrays, NamedTuples and string-keyed dicts, never from bare
tuples or int keys, so ``flax.nnx.Optimizer`` (which turns every container inside a parameter's
slot into a string-keyed ``nnx.State``), orbax and ``jax.tree`` round trips keep it intact, and
:func:`gnbench.model.sharding.state_shardings` shards it like the parameters. The basis refresh
sits under ``lax.cond``: one compiled update serves every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gnbench.optim import pytrees
from gnbench.optim.checks import Checks
from gnbench.optim.precision import pinned
from gnbench.optim.registry import BuildContext, Optimizer, clip, outer_schedule, register


class SoapState(NamedTuple):
    """State of :func:`scale_by_soap`.

    Attributes:
      count: int32 scalar, calls of ``update`` so far (the first call only sets the bases).
      mu: first moment, in the rotated basis, shaped like the parameters.
      nu: second moment, in the rotated basis, shaped like the parameters.
      stats: per parameter, a dict ``{axis_key(i): (d_i, d_i) statistic}`` over the rotated axes
        ``i`` of the working shape (empty when no axis is rotated).
      bases: per parameter, the matching dict of orthogonal bases.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    stats: Any
    bases: Any


def merged_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """Merges adjacent axes while their product stays ``<= max_precond_dim`` (as the reference).

    Example:
      >>> merged_shape((2, 3, 8), 10)
      (6, 8)
    """
    out: list[int] = []
    current = 1
    for d in shape:
        if current * d > max_precond_dim:
            if current > 1:
                out.append(current)
                current = d
            else:
                out.append(d)
                current = 1
        else:
            current *= d
    if current > 1 or not out:
        out.append(current)
    return tuple(out)


def axis_key(i: int) -> str:
    """Key of axis ``i``'s statistic and basis in a parameter's entry of :class:`SoapState`.

    Example:
      >>> axis_key(1)
      'axis_1'
    """
    return f"axis_{i}"


def _unpack(factors: Any, rotated: tuple[bool, ...]) -> tuple[jax.Array | None, ...]:
    """A parameter's ``{axis_key(i): matrix}`` entry as a tuple over axes (``None``: not rotated).

    Reads by key, so a dict turned into another mapping (``nnx.State``) reads the same.
    """
    return tuple(factors[axis_key(i)] if r else None for i, r in enumerate(rotated))


def _pack(factors: Any) -> dict[str, jax.Array]:
    """Inverse of :func:`_unpack`: the per-axis tuple as a string-keyed dict of rotated axes."""
    return {axis_key(i): f for i, f in enumerate(factors) if f is not None}


def _layout(
    shape: tuple[int, ...], max_precond_dim: int, merge_dims: bool, precondition_1d: bool
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Working shape of a parameter and which of its axes are rotated."""
    if len(shape) == 1:
        return shape, (precondition_1d and shape[0] <= max_precond_dim,)
    work = merged_shape(shape, max_precond_dim) if merge_dims and shape else shape
    return work, tuple(d <= max_precond_dim for d in work)


def _rotate(x: jax.Array, bases: tuple[jax.Array, ...], rotated: tuple[bool, ...], back: bool):
    """``x ×_i Q_i^T`` over rotated axes (``back``: ``x ×_i Q_i``)."""
    for i, (q, r) in enumerate(zip(bases, rotated, strict=True)):
        if r:
            x = jnp.tensordot(x, q, axes=([i], [1 if back else 0]))
            x = jnp.moveaxis(x, -1, i)
    return x


def _contract(g: jax.Array, i: int) -> jax.Array:
    """``C_i(G)``: ``G`` contracted with itself over every axis but ``i``."""
    others = [j for j in range(g.ndim) if j != i]
    return jnp.tensordot(g, g, axes=(others, others))


def _descending_eigenvectors(s: jax.Array) -> jax.Array:
    return jnp.linalg.eigh(s)[1][:, ::-1]


def _static_int(x: Any) -> int | None:
    """``x`` as a Python int, or ``None`` when it is traced (injected by inject_hyperparams)."""
    try:
        return int(x)
    except jax.errors.ConcretizationTypeError:
        return None


def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
) -> optax.GradientTransformation:
    """SOAP's preconditioned direction ``sqrt(1-b2^t)/(1-b1^t) * N`` (no learning rate, no decay).

    The first call returns zeros. Weight decay and the learning rate live in :func:`soap`.

    Args:
      b1: Adam first-moment decay (in the rotated basis).
      b2: Adam second-moment decay.
      shampoo_beta: decay of the statistics ``L_i``; ``None`` means ``b2``.
      eps: added to ``sqrt(v)``.
      precondition_frequency: refresh the bases every this many updates (may be traced).
      max_precond_dim: axes longer than this are not rotated (static).
      merge_dims: merge adjacent axes while their product is ``<= max_precond_dim``.
      precondition_1d: also rotate 1-D parameters (one ``d x d`` statistic).
      normalize_grads: divide ``N`` by its root mean square.
      correct_bias: Adam bias correction.

    Returns:
      An ``optax.GradientTransformation`` with :class:`SoapState`.

    Example:
      >>> params = {"w": jnp.ones((3, 4))}
      >>> tx = scale_by_soap()
      >>> state = tx.init(params)
      >>> u, state = tx.update({"w": jnp.ones((3, 4))}, state)
      >>> float(jnp.abs(u["w"]).max())
      0.0
    """
    sb = b2 if shampoo_beta is None else shampoo_beta
    max_dim = _static_int(max_precond_dim)

    def layout(shape, stats=None):
        """Working shape and rotated axes; traced ``max_precond_dim`` (injected): from the
        state, whose statistics exist for the rotated axes only (init saw a concrete value)."""
        if max_dim is not None:
            return _layout(tuple(shape), max_dim, merge_dims, precondition_1d)
        if merge_dims or stats is None:
            raise ValueError(
                "soap: max_precond_dim arrived traced (optax.inject_hyperparams?) and fixes the "
                "state's shapes: pass static_args=('max_precond_dim',)"
            )
        return tuple(shape), tuple(axis_key(i) in stats for i in range(len(shape)))

    def state_dtype(x):
        return jnp.promote_types(x.dtype, jnp.float32)

    def init_fn(params):
        pytrees.check_params(params, "soap")

        def factors(p, make):
            work, rotated = layout(p.shape)
            dt = state_dtype(p)
            return _pack([make(d, dt) if r else None for d, r in zip(work, rotated, strict=True)])

        def zero_stats(p):
            return factors(p, lambda d, dt: jnp.zeros((d, d), dt))

        def eyes(p):
            return factors(p, lambda d, dt: jnp.eye(d, dtype=dt))

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, state_dtype(p)), params)
        return SoapState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros,
            nu=zeros,
            stats=jax.tree.map(zero_stats, params),
            bases=jax.tree.map(eyes, params),
        )

    @pinned("soap")
    def update_fn(updates, state, params=None):
        del params
        grads, treedef = jax.tree.flatten(updates)
        layouts = [
            layout(g.shape, s)
            for g, s in zip(grads, treedef.flatten_up_to(state.stats), strict=True)
        ]
        stats = [
            _unpack(s, r)
            for s, (_, r) in zip(treedef.flatten_up_to(state.stats), layouts, strict=True)
        ]
        bases = [
            _unpack(q, r)
            for q, (_, r) in zip(treedef.flatten_up_to(state.bases), layouts, strict=True)
        ]
        shapes = [w for w, _ in layouts]
        mus = [m.reshape(w) for m, w in zip(treedef.flatten_up_to(state.mu), shapes, strict=True)]
        nus = [v.reshape(w) for v, w in zip(treedef.flatten_up_to(state.nu), shapes, strict=True)]
        works = [g.astype(m.dtype).reshape(m.shape) for g, m in zip(grads, mus, strict=True)]
        count = state.count

        def new_stats():
            out = []
            for g, s, (_, rotated) in zip(works, stats, layouts, strict=True):
                out.append(
                    tuple(
                        sb * si + (1 - sb) * _contract(g, i) if r else si
                        for i, (si, r) in enumerate(zip(s, rotated, strict=True))
                    )
                )
            return out

        def first(_):
            stats1 = new_stats()
            bases1 = [
                tuple(_descending_eigenvectors(si) if si is not None else None for si in s)
                for s in stats1
            ]
            zero = [jnp.zeros_like(m) for m in mus]
            return zero, mus, nus, stats1, bases1

        def refresh(args):
            mu_w, nu_w, stats1, bases0 = args
            out_mu, out_nu, out_bases = [], [], []
            for m, v, s, q, (_, rotated) in zip(mu_w, nu_w, stats1, bases0, layouts, strict=True):
                m = _rotate(m, q, rotated, back=True)
                new_q = []
                for i, (li, qi, r) in enumerate(zip(s, q, rotated, strict=True)):
                    if not r:
                        new_q.append(qi)
                        continue
                    estimate = jnp.sum(qi * jnp.matmul(li, qi), axis=0)
                    order = jnp.argsort(-estimate)
                    v = jnp.take(v, order, axis=i)
                    power = jnp.matmul(li, qi[:, order])
                    new_q.append(jnp.linalg.qr(power)[0])
                new_q = tuple(new_q)
                out_mu.append(_rotate(m, new_q, rotated, back=False))
                out_nu.append(v)
                out_bases.append(new_q)
            return out_mu, out_nu, out_bases

        def regular(_):
            t = count.astype(jnp.result_type(float))
            scale = jnp.sqrt(1 - b2**t) / (1 - b1**t) if correct_bias else 1.0
            directions, mu_w, nu_w = [], [], []
            for g, m, v, q, (_, rotated) in zip(works, mus, nus, bases, layouts, strict=True):
                g_rot = _rotate(g, q, rotated, back=False)
                m = b1 * m + (1 - b1) * g_rot
                v = b2 * v + (1 - b2) * g_rot**2
                n = _rotate(m / (jnp.sqrt(v) + eps), q, rotated, back=True)
                if normalize_grads:
                    n = n / (1e-30 + jnp.sqrt(jnp.mean(n**2)))
                directions.append((scale * n).astype(m.dtype))
                mu_w.append(m)
                nu_w.append(v)
            stats1 = new_stats()
            mu_w, nu_w, bases1 = jax.lax.cond(
                count % precondition_frequency == 0,
                refresh,
                lambda a: (a[0], a[1], a[3]),
                (mu_w, nu_w, stats1, bases),
            )
            return directions, mu_w, nu_w, stats1, bases1

        directions, mu_w, nu_w, stats1, bases1 = jax.lax.cond(count == 0, first, regular, None)
        out = [d.reshape(g.shape).astype(g.dtype) for d, g in zip(directions, grads, strict=True)]
        unflat = lambda xs, like: jax.tree.unflatten(  # noqa: E731
            treedef, [x.reshape(g.shape) for x, g in zip(xs, like, strict=True)]
        )
        new_state = SoapState(
            count=optax.safe_increment(count),
            mu=unflat(mu_w, grads),
            nu=unflat(nu_w, grads),
            stats=jax.tree.unflatten(treedef, [_pack(s) for s in stats1]),
            bases=jax.tree.unflatten(treedef, [_pack(q) for q in bases1]),
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def soap(
    learning_rate: optax.ScalarOrSchedule = 3e-3,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
) -> optax.GradientTransformation:
    """SOAP with the authors' defaults: ``p <- (p - lr * scale * N) * (1 - lr * weight_decay)``.

    Decoupled weight decay is applied after the step, to the already-updated parameters, and is
    skipped on the first call (which leaves parameters unchanged), as in the reference.
    ``optax.inject_hyperparams(soap)`` works as is (``max_precond_dim`` fixes shapes: a traced
    value is read back from the state); with ``merge_dims=True`` it needs
    ``static_args=("max_precond_dim",)``, and says so.

    Args:
      learning_rate: float or optax schedule (evaluated at the call count, from 0).
      b1: Adam first-moment decay.
      b2: Adam second-moment decay.
      shampoo_beta: decay of the Kronecker statistics; ``None`` means ``b2``.
      eps: Adam epsilon.
      weight_decay: decoupled weight decay, multiplied by the learning rate.
      precondition_frequency: bases refresh every this many updates.
      max_precond_dim: axes longer than this are not rotated.
      merge_dims: merge adjacent axes while their product is ``<= max_precond_dim``.
      precondition_1d: rotate 1-D parameters too.
      normalize_grads: divide the direction by its root mean square.
      correct_bias: Adam bias correction.

    Returns:
      An ``optax.GradientTransformation``; ``update`` needs ``params`` when ``weight_decay != 0``.

    Example:
      >>> params = {"w": jnp.ones((3, 4))}
      >>> tx = soap(1e-2)
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     u, state = tx.update({"w": params["w"]}, state, params)
      ...     params = optax.apply_updates(params, u)
      >>> bool((params["w"] < 1).all())
      True
    """
    pytrees.require_numbers("soap", b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    inner = scale_by_soap(
        b1=b1,
        b2=b2,
        shampoo_beta=shampoo_beta,
        eps=eps,
        precondition_frequency=precondition_frequency,
        max_precond_dim=max_precond_dim,
        merge_dims=merge_dims,
        precondition_1d=precondition_1d,
        normalize_grads=normalize_grads,
        correct_bias=correct_bias,
    )

    def update_fn(updates, state, params=None):
        count = state.count
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        directions, state = inner.update(updates, state, params)
        if params is None:
            if isinstance(weight_decay, (int, float)) and weight_decay == 0:
                return jax.tree.map(lambda d: -lr * d, directions), state
            raise ValueError("soap with weight_decay != 0 needs params in update()")
        # (p - lr*N) * (1 - lr*wd) - p; no decay on the first call, which leaves p unchanged.
        decay = jnp.where(count == 0, 0.0, lr * weight_decay)

        def step(d, p):
            new = -lr * d
            new = new - decay * (p.astype(new.dtype) + new)
            return new.astype(p.dtype)

        return jax.tree.map(step, directions, params), state

    return optax.GradientTransformation(inner.init, update_fn)


@register("soap", reads=("soap",), check=Checks(positive_ints=("soap.precondition_frequency",)))
def _soap(cfg: Any, ctx: BuildContext) -> Optimizer:
    s = cfg.soap
    lr = outer_schedule(cfg, cfg.learning_rate, ctx)
    shampoo_beta = None if s.shampoo_beta < 0 else s.shampoo_beta

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            soap(
                learning_rate,
                b1=cfg.b1,
                b2=cfg.b2,
                shampoo_beta=shampoo_beta,
                eps=cfg.eps,
                weight_decay=cfg.weight_decay,
                precondition_frequency=s.precondition_frequency,
                max_precond_dim=s.max_precond_dim,
                merge_dims=s.merge_dims,
                precondition_1d=s.precondition_1d,
                normalize_grads=s.normalize_grads,
                correct_bias=s.correct_bias,
            ),
        )

    return Optimizer(
        tx=optax.with_extra_args_support(make(lr)),
        hparams=dict(
            name="soap",
            learning_rate=cfg.learning_rate,
            b1=cfg.b1,
            b2=cfg.b2,
            shampoo_beta=cfg.b2 if shampoo_beta is None else shampoo_beta,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            precondition_frequency=s.precondition_frequency,
            max_precond_dim=s.max_precond_dim,
            merge_dims=s.merge_dims,
            precondition_1d=s.precondition_1d,
            normalize_grads=s.normalize_grads,
        ),
    )


__all__ = ["SoapState", "axis_key", "merged_shape", "scale_by_soap", "soap"]
