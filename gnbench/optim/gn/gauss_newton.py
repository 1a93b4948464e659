"""Full Gauss-Newton as an Optax transform: an inner first-order solve of the GN model.

Each outer step fixes θ_t and (approximately) minimizes the Gauss-Newton model of the loss,

    q(θ) = L(f_t) + g_zᵀ J Δ + ½ Δᵀ Jᵀ H_z J Δ + λ/2 ‖Δ‖²,     Δ = θ − θ_t,

whose minimizer is θ_t − (G + λI)⁻¹ ∇L with G = Jᵀ H_z J (notation of
:mod:`gnbench.optim.gn.curvature`). G has as many rows as the model has parameters, so it is never
formed and never inverted: ``q`` is minimized by an *inner* first-order optimizer (AdamW, Muon,
...) for K inner steps, each on a fresh micro-batch, with the gradient

    ∇q(Δ) = Jᵀ (g_z + H_z J Δ) + λ Δ,

one linearization of the model at θ_t (forward + JVP), one output-space Hessian-vector product
and one transposed JVP. Why this way: a Krylov solver (CG) on G would need a fixed batch and many
products per step; the stochastic inner solve reads a new micro-batch per product, reuses
well-tuned first-order optimizers as preconditioners of the subproblem, and is the method the
paper studies. The damping λ is a proximal term: it pulls the inner iterate toward θ_t (with large
λ the step tends to −∇L/λ).

Outer step, as implemented (``update(grads, state, params, *, batch, ls_batch=None)``):

1. Start the inner iterate. Warm start (default): at the previous inner solution θ̂_{t−1}
   *itself* (the absolute parameters, before the line search), keeping the inner optimizer's
   state and step count, as the paper does (docs/METHOD.md). So if the previous line search chose
   α < 1 the new solve starts at Δ₀ = θ̂_{t−1} − θ_t = (1 − α) d_{t−1}, and at Δ₀ = 0 if α = 1.
   Cold start: at θ_t with a freshly initialized inner optimizer.
2. ``lax.scan`` over the K micro-batches of ``batch`` (leading axis K): linearize at θ_t on
   micro-batch k, take the inner gradient at the current iterate, apply one inner update.
3. Direction d = θ̂ − θ_t. Optional line search: the true loss at θ_t + αd for each α of
   ``line_search``, averaged over the micro-batches of ``ls_batch``; the smallest finite loss
   wins (ties go to the larger α); if every loss is non-finite, α = 0 (no step) and the next
   solve is cold-started so that a diverged inner solve cannot poison the next one.
4. Return the update α·d.

The inner optimizer receives ``inner_step=`` (the global inner step, counted across outer steps
and never reset, int32) as an extra keyword argument: :func:`with_inner_schedule` uses it so that
learning-rate schedules run over inner steps across outer steps, cold start or warm.

The gradient passed to ``update`` is not used: pass the real gradient or ``None``. Optax
wrappers that read it need a tree: ``optax.apply_if_finite`` (skips the step when the gradient is
non-finite) and ``optax.MultiSteps`` (which runs the GN solve at every call and applies it on
every k-th, with that call's ``batch``) work with real gradients, or with ``None`` when the
outermost transform is wrapped in :func:`gnbench.optim.gn.wrappers.none_grads_as_zeros`.
``optax.chain`` works either way. ``damping`` can be injected:
:func:`gnbench.optim.gn.wrappers.inject_gn_hyperparams` is ``optax.inject_hyperparams`` with every
other argument static, so ``state.hyperparams["damping"]`` can change between steps.

State metrics (``state.metrics``, float32 scalars, read by the trainer): ``true_loss`` (L at θ_t
averaged over the K micro-batches), ``gn_model_before`` / ``gn_model_after`` (the GN model
q, including L(f_t) and the damping term, at the first inner iterate on micro-batch 1 and at the
last iterate whose gradient was taken on micro-batch K: by-products of the gradient evaluations,
so free but measured on different micro-batches), ``alpha`` (1 without a line search),
``alpha_min`` (the smallest step size the line search may take: a run whose ``alpha`` sits there
on most steps is limited by the search's range, an edge of its grid),
``ls_loss`` (best line-search loss or nan), ``update_norm`` (‖α d‖), and ``inner_learning_rate``
when the inner optimizer's state exposes a ``learning_rate``.

Written by hand for gnbench: no maintained package provides GN with a stochastic inner solver.

Reference: Abreu, Vyas, Kakade, Morwani, "The Potential of Second-Order Optimization for LLMs: A
Study with Full Gauss-Newton", arXiv 2510.09378 (ICLR 2026).
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gnbench.optim import loops, pytrees
from gnbench.optim.gn.curvature import (
    ApplyFn,
    LossFn,
    OutputRule,
    PyTree,
    gn_output_rule,
    linearized_model_eval,
)

InnerRefresh = Callable[[optax.OptState, optax.Params, PyTree], optax.OptState]


class GaussNewtonState(NamedTuple):
    """State of the GN family (full, prox-linear, layerwise).

    Attributes:
      inner_params: θ̂ of the last inner solve (absolute parameters, before the line search).
      inner_state: the inner optimizer's state (one per block for layerwise GN).
      inner_step: global inner step count (int32), never reset; drives inner schedules.
      metrics: float32 scalars of the last outer step (see the module docstring).
    """

    inner_params: optax.Params
    inner_state: optax.OptState
    inner_step: jax.Array
    metrics: dict[str, jax.Array]


class InnerScheduleState(NamedTuple):
    """State of :func:`with_inner_schedule`: the wrapped state and the last learning rate."""

    learning_rate: jax.Array
    inner_state: optax.OptState


def with_inner_schedule(
    inner: optax.GradientTransformation, schedule: optax.ScalarOrSchedule
) -> optax.GradientTransformationExtraArgs:
    """Scales ``inner``'s updates by ``schedule(inner_step)``, the global GN inner step.

    Build ``inner`` with a unit learning rate (e.g. ``optax.adamw(1.0, ...)``): for any optimizer
    whose update is ``−lr · direction`` (AdamW, with decoupled weight decay included; Muon) this
    equals running it with learning rate ``schedule(inner_step)``. Unlike a schedule inside the
    inner optimizer, it keeps running across outer steps when a cold start resets the inner state.

    Args:
      inner: the inner optimizer at learning rate 1.
      schedule: learning rate as a function of the global inner step, or a constant.

    Returns:
      A transform whose ``update`` requires the keyword argument ``inner_step``.

    Example:
      >>> tx = with_inner_schedule(optax.sgd(1.0), optax.constant_schedule(0.1))
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.ones(2), state, inner_step=jnp.array(0))
      >>> updates
      Array([-0.1, -0.1], dtype=float32)
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        # The schedule's own dtype (float64 under jax_enable_x64), not a weak type: the state's
        # learning rate keeps one dtype across updates (it is carried through lax.scan).
        lr = jnp.asarray(schedule(0) if callable(schedule) else schedule)
        return InnerScheduleState(lr.astype(lr.dtype), inner.init(params))

    def update_fn(updates, state, params=None, *, inner_step, **extra_args):
        # A constant learning rate is state, not a constant of the program: runs that differ
        # only in it compile to the same program.
        if callable(schedule):
            lr = jnp.asarray(schedule(inner_step), state.learning_rate.dtype)
        else:
            lr = state.learning_rate
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        updates = jax.tree.map(lambda u: lr.astype(u.dtype) * u, updates)
        return updates, InnerScheduleState(lr, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def line_search_alphas(n: int) -> tuple[float, ...]:
    """The paper's step sizes ``α_i = 2^(−i/2)``, i = 0..n−1 (``n = 0``: no line search).

    Example:
      >>> line_search_alphas(3)
      (1.0, 0.7071067811865476, 0.5)
    """
    if n < 0:
        raise ValueError(f"line_search must be >= 0 values, got {n}")
    return tuple(2.0 ** (-i / 2) for i in range(n))


def _leading_axis(tree: PyTree, name: str) -> int:
    sizes = {x.shape[0] if jnp.ndim(x) else None for x in jax.tree.leaves(tree)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{name} leaves need one common leading (micro-batch) axis, got {sizes}")
    return sizes.pop()


def _learning_rate_of(inner_state: Any) -> jax.Array | None:
    """The first scalar ``learning_rate`` in the inner state, if any (for logging)."""
    found = optax.tree_utils.tree_get_all_with_path(inner_state, "learning_rate")
    for _, value in found:
        if isinstance(value, jax.Array | float) and jnp.ndim(value) == 0:
            return jnp.asarray(value, jnp.float32)
    return None


def _metrics(inner_state: Any, **values: Any) -> dict[str, jax.Array]:
    out = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
    lr = _learning_rate_of(inner_state)
    if lr is not None:
        out["inner_learning_rate"] = lr
    return out


def _labels_like(params: PyTree, labels: PyTree) -> PyTree:
    """``labels`` (a label per leaf, or per subtree: a prefix) in the containers of ``params``.

    ``blocks`` may rebuild a mapping as a plain dict (e.g. an ``nnx.State`` of parameters under
    ``flax.nnx.Optimizer``); ``optax.multi_transform`` needs the exact structure of ``params``.
    """

    def keys(path):
        return tuple(jax.tree_util.keystr((k,)) for k in path)

    label_at = {keys(p): label for p, label in jax.tree_util.tree_flatten_with_path(labels)[0]}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for path, _ in leaves:  # The longest labelled prefix of each leaf's path.
        found = [keys(path[:n]) for n in range(len(path), -1, -1) if keys(path[:n]) in label_at]
        if not found:
            labelled = sorted("".join(k) for k in label_at)
            raise ValueError(f"blocks(params) labels {labelled}, not {jax.tree_util.keystr(path)}")
        out.append(label_at[found[0]])
    return jax.tree.unflatten(treedef, out)


def _keep_learning_rates(fresh: optax.OptState, current: optax.OptState) -> optax.OptState:
    """``fresh`` with the learning rate of every :class:`InnerScheduleState` taken from
    ``current`` (same structure): a constant schedule's rate never changes, and a schedule
    function overwrites it at every update, so the values are the same."""
    is_schedule = lambda s: isinstance(s, InnerScheduleState)  # noqa: E731
    return jax.tree.map(
        lambda f, c: f._replace(learning_rate=c.learning_rate) if is_schedule(f) else f,
        fresh,
        current,
        is_leaf=is_schedule,
    )


def gauss_newton_core(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    *,
    rule: OutputRule,
    inner: optax.GradientTransformation,
    inner_steps: int,
    damping: float,
    line_search: Sequence[float] | None,
    warm_start: bool,
    blocks: Callable[[PyTree], PyTree] | None,
    model_eval: Callable[..., Any] = linearized_model_eval,
    inner_refresh: InnerRefresh | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The core of the GN family: the outer loop full GN, GN-prox-linear and layerwise GN share.

    Each outer step runs ``inner_steps`` steps of ``inner`` on the model of the loss that
    ``rule`` defines around θ_t (the GN quadratic, or the exact loss of the linearized model for
    prox-linear), one micro-batch of ``batch`` per step, with the proximal term
    ``damping/2 ‖θ − θ_t‖²``; then the optional line search over ``line_search`` step sizes on
    ``ls_batch``, and the warm start of the next solve. ``blocks`` labels parameters into
    independent blocks (layerwise GN: one inner state, and one subproblem, per block).
    :func:`gauss_newton`, :func:`gnbench.optim.gn.prox_linear.gn_prox_linear` and
    :func:`gnbench.optim.gn.layerwise.layerwise_gauss_newton` are this function with their
    ``rule`` and ``blocks``; a new member of the family is another ``rule``.

    ``model_eval`` has :func:`linearized_model_eval`'s signature (layerwise GN on a staged
    model passes :func:`gnbench.optim.gn.staged.staged_model_eval` bound to its stages)."""
    try:
        inner_steps = operator.index(inner_steps)
    except TypeError as e:  # A float, or a tracer (inner_steps injected as a hyperparameter).
        raise ValueError(
            f"inner_steps must be a Python int (it fixes the batch shape), got {inner_steps!r}; "
            "under optax.inject_hyperparams list it in static_args (see inject_gn_hyperparams)"
        ) from e
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    fix = "to change it between steps use inject_gn_hyperparams(gauss_newton)(..., damping=...)"
    pytrees.require_numbers("gauss_newton", fix, damping=damping)
    # Validated only when concrete: under optax.inject_hyperparams it is an array or a tracer.
    if isinstance(damping, numbers.Real) and not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    alphas = tuple(float(a) for a in (line_search or ()))
    if any(not a > 0 for a in alphas):
        raise ValueError(f"line_search step sizes must be > 0, got {alphas}")
    base_inner = optax.with_extra_args_support(inner)

    def make_inner(params):
        """The inner optimizer and block labels (one inner state per block if layerwise)."""
        if blocks is None:
            return base_inner, None
        labels = _labels_like(params, pytrees.call_or_tree(blocks, params))
        names = sorted(set(jax.tree.leaves(labels)))
        tx = optax.multi_transform({n: base_inner for n in names}, pytrees.constant(labels))
        return tx, labels

    def init_fn(params):
        pytrees.check_params(params, "gauss_newton")
        tx, _ = make_inner(params)
        inner_state = tx.init(params)
        nan = jnp.nan
        metrics = _metrics(
            inner_state,
            true_loss=nan,
            gn_model_before=nan,
            gn_model_after=nan,
            alpha=nan,
            alpha_min=min(alphas, default=1.0),
            ls_loss=nan,
            update_norm=nan,
        )
        return GaussNewtonState(
            inner_params=jax.tree.map(jnp.array, params),
            inner_state=inner_state,
            inner_step=jnp.zeros([], jnp.int32),
            metrics=metrics,
        )

    def loss_at(theta, micro_batches):
        losses = loops.map(lambda mb: loss_fn(apply_fn(theta, mb), mb), micro_batches)
        return jnp.mean(losses)

    def update_fn(updates, state, params=None, *, batch=None, ls_batch=None, **extra_args):
        del extra_args
        if params is None or batch is None:
            raise ValueError("GN transforms need update(grads, state, params, batch=...)")
        pytrees.check_params(params, "gauss_newton")
        # GN reads the micro-batches, never the averaged gradient: it may be None or real.
        if updates is not None and jax.tree.structure(updates) != jax.tree.structure(params):
            raise ValueError(
                "grads must be None or structured like params; got "
                f"{jax.tree.structure(updates)} for params {jax.tree.structure(params)}"
            )
        k = _leading_axis(batch, "batch")
        if k != inner_steps:
            raise ValueError(f"batch has {k} micro-batches, expected inner_steps={inner_steps}")
        if alphas and ls_batch is None:
            raise ValueError("a line search needs ls_batch= (extra micro-batches)")
        tx, labels = make_inner(params)

        def fresh_inner_state():
            # tx.init traced here would make a constant inner learning rate a constant of the
            # program; taking it from the state keeps runs that differ only in it one program.
            return _keep_learning_rates(tx.init(params), state.inner_state)

        if warm_start:
            start, inner_state = state.inner_params, state.inner_state
        else:
            start, inner_state = params, fresh_inner_state()
        if inner_refresh is not None:  # Once per outer step, at θ_t (e.g. K-FAC's factors).
            inner_state = inner_refresh(inner_state, params, batch)

        def inner_step(carry, micro_batch):
            theta, opt_state, step = carry
            delta = jax.tree.map(jnp.subtract, theta, params)
            ev = model_eval(
                apply_fn,
                loss_fn,
                params,
                micro_batch,
                delta,
                damping=damping,
                rule=rule,
                block_labels=labels,
            )
            # An inner optimizer that estimates curvature (K-FAC) reads the micro-batch and θ_t,
            # where the GN model's curvature lives; the others ignore both.
            step_updates, opt_state = tx.update(
                ev.grad,
                opt_state,
                theta,
                inner_step=step,
                batch=jax.tree.map(lambda x: x[None], micro_batch),
                curvature_params=params,
            )
            theta = optax.apply_updates(theta, step_updates)
            return (theta, opt_state, step + 1), (ev.value, ev.loss)

        (theta_hat, inner_state, step), (values_K, losses_K) = loops.scan(
            inner_step, (start, inner_state, state.inner_step), batch
        )
        direction = jax.tree.map(jnp.subtract, theta_hat, params)
        if alphas:
            _leading_axis(ls_batch, "ls_batch")
            alpha_A = jnp.asarray(alphas)
            ls_losses_A = loops.map(
                lambda a: loss_at(
                    jax.tree.map(lambda p, d: p + a.astype(d.dtype) * d, params, direction),
                    ls_batch,
                ),
                alpha_A,
            )
            finite_A = jnp.isfinite(ls_losses_A)
            ok = jnp.any(finite_A)
            best = jnp.argmin(jnp.where(finite_A, ls_losses_A, jnp.inf))
            alpha = jnp.where(ok, alpha_A[best], 0.0)
            ls_loss = jnp.where(ok, ls_losses_A[best], jnp.nan)
            new_updates = jax.tree.map(
                lambda d: jnp.where(ok, alpha.astype(d.dtype) * d, jnp.zeros_like(d)), direction
            )
            if warm_start:  # Every step size failed: cold-start the next solve.
                keep = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
                theta_hat = jax.tree.map(keep, theta_hat, params)
                inner_state = jax.tree.map(keep, inner_state, fresh_inner_state())
        else:
            alpha, ls_loss, new_updates = 1.0, jnp.nan, direction
        metrics = _metrics(
            inner_state,
            true_loss=jnp.mean(losses_K),
            gn_model_before=values_K[0],
            gn_model_after=values_K[-1],
            alpha=alpha,
            alpha_min=min(alphas, default=1.0),
            ls_loss=ls_loss,
            update_norm=optax.tree_utils.tree_norm(new_updates),
        )
        new_state = GaussNewtonState(theta_hat, inner_state, step, metrics)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gauss_newton(
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
    """Full Gauss-Newton: K inner steps on the GN quadratic model, then an optional line search.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> outputs`` (static, e.g. logits).
      loss_fn: ``loss_fn(outputs, micro_batch) -> scalar mean loss`` (static).
      inner: the inner optimizer minimizing the GN model (e.g. ``optax.adamw``, Muon); it may use
        the extra keyword argument ``inner_step`` (see :func:`with_inner_schedule`).
      inner_steps: K, the micro-batches per outer step (leading axis of ``batch``).
      damping: λ ≥ 0, the proximal term λ/2 ‖θ − θ_t‖² added to the GN model.
      line_search: step sizes α to try on ``ls_batch`` (e.g. :func:`line_search_alphas`);
        ``None`` or empty: always α = 1.
      warm_start: start each inner solve at the previous inner solution with the inner state
        kept (True), or at θ_t with a fresh inner state (False).
      inner_refresh: ``(inner_state, θ_t, batch) -> inner_state``, called once per outer step
        before the inner solve: an inner optimizer whose preconditioner estimates G, fixed at
        θ_t for the whole solve, rebuilds it here once instead of at every inner step (K-FAC,
        :func:`gnbench.optim.approx_gn.kfac.kfac_refreshed_by_caller`). Default: none.

    Returns:
      A transform with ``update(grads, state, params, *, batch, ls_batch=None)``; ``grads`` (the
      real gradient or ``None``) is not used. Its state is a :class:`GaussNewtonState`.

    Example:
      >>> apply_fn = lambda w, x: x @ w
      >>> loss_fn = lambda z, x: 0.5 * jnp.mean((z - 1.0) ** 2)
      >>> tx = gauss_newton(apply_fn, loss_fn, inner=optax.sgd(1.0), inner_steps=8)
      >>> w = jnp.zeros(2)
      >>> state = tx.init(w)
      >>> batch = jnp.broadcast_to(jnp.eye(2), (8, 2, 2))
      >>> updates, state = tx.update(None, state, w, batch=batch)
      >>> [round(float(u), 3) for u in updates]  # 1 - 2**-8: eight halvings
      [0.996, 0.996]
    """
    return gauss_newton_core(
        apply_fn,
        loss_fn,
        rule=gn_output_rule,
        inner=inner,
        inner_steps=inner_steps,
        damping=damping,
        line_search=line_search,
        warm_start=warm_start,
        blocks=None,
        inner_refresh=inner_refresh,
    )
