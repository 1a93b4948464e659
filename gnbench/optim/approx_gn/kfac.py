"""K-FAC through kfac-jax: the Kronecker-factored rung of the approximation ladder.

K-FAC approximates the same Gauss-Newton matrix ``G = Jᵀ H_z J`` that full GN solves with (for
softmax cross-entropy the Fisher kfac-jax estimates equals G) by one block per layer, each a
Kronecker product: for a dense layer ``y = x W + b`` the block is ``A ⊗ S`` with ``A = E[x̃ x̃ᵀ]``
(inputs with a 1 appended for the bias) and ``S = E[s sᵀ]`` (output-space curvature pulled back
to the layer's outputs). Norm scales and shifts get diagonal blocks; parameters the graph
matcher does not recognize (e.g. an embedding table, an Equinox ``(out, in)`` weight applied as
``W @ x``; ``init`` warns about such hidden matrices) get kfac-jax's generic diagonal block, and
so do 3-D kernels (attention's ``DenseGeneral`` projections: kfac-jax mis-tags them, so they
are shown to it flattened, with a warning: ``kfac_compat.FlatKernels``). :func:`layer_table`
lists the blocks of any parameter pytree. The exact modes (``ggn_exact``, ``fisher_exact``) are
refused on logits with more than two axes, where kfac-jax 0.0.8 gets them wrong.

The variant: **fixed learning rate and damping**, with heavy-ball momentum on the preconditioned
gradient and decoupled weight decay (kfac-jax's adaptive ``kfac_jax.Optimizer``, whose learning
rate, momentum and damping come from the quadratic model, runs outside ``jax.jit`` and does not
fit the trainer's jitted step):

    u = (A ⊗ S + λ I)⁻¹ g      (exact inverse of each damped block; ``exact_inverses=True``)
    v ← μ v + u,    θ ← θ − lr · (v + wd · θ)

With ``exact_inverses=False`` kfac-jax's factored (π-adjusted) damping is used instead:
``((A + π√λ I) ⊗ (S + √λ/π I))⁻¹`` with π² = (tr A / dim A) / (tr S / dim S): classic K-FAC
(Martens and Grosse's factored Tikhonov damping), not the damped block's inverse but two small
inverses instead of two eigendecompositions, about half the CPU time per step on the tiny model;
``make ladder`` runs it (docs/METHOD.md).

The curvature factors are exponential moving averages (``curvature_ema``) over steps, estimated
on the step's first micro-batch. kfac-jax does the curvature; this module only registers the
loss, adapts its state to plain containers (a NamedTuple of arrays and a string-keyed dict, so
nnx, orbax and ``jax.tree`` round trips keep it) and builds an Optax transform. It needs the
optional extra ``pip install 'gnbench[ladder]'`` (kfac-jax);
:mod:`gnbench.optim.approx_gn.kfac_compat` patches kfac-jax 0.0.8 for jax >= 0.9.2.

Example:
  >>> import jax, jax.numpy as jnp
  >>> apply_fn = lambda p, x: x @ p["w"] + p["b"]           # logits (N, V)
  >>> params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
  >>> x = jnp.ones((1, 5, 3))                              # K=1 micro-batch of 5 inputs
  >>> tx = kfac(apply_fn, 0.1, example_micro_batch=x[0])
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params, batch=x)
  >>> jax.tree.map(jnp.shape, updates)
  {'b': (4,), 'w': (3, 4)}

Reference: Martens and Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", ICML 2015; kfac-jax (github.com/google-deepmind/kfac-jax).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnbench.optim import pytrees, routing
from gnbench.optim.approx_gn import kfac_compat
from gnbench.optim.checks import Checks
from gnbench.optim.registry import BuildContext, Optimizer, clip, outer_schedule, register

PyTree = Any
ESTIMATION_MODES = ("fisher_gradients", "ggn_curvature_prop", "ggn_exact", "fisher_exact")
# kfac-jax 0.0.8's exact output Hessians are right only for (examples, classes) logits: on
# (B, T, V) its replicated one-hot multiply gives diag(p) + (T - 2) p pᵀ per position.
EXACT_MODES = ("ggn_exact", "fisher_exact")
LOSS_KINDS = ("softmax_cross_entropy", "squared_error")


def _import_kfac_jax():
    try:
        import kfac_jax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the kfac optimizer needs kfac-jax: pip install 'gnbench[ladder]'") from e
    kfac_compat.apply()
    return kfac_jax


def _leading_dim(micro_batch: PyTree) -> int:
    """Examples in one micro-batch: its leading dimension (sequences, for a language model)."""
    leaf = jax.tree.leaves(micro_batch)[0]
    return leaf.shape[0] if leaf.ndim else 1


def _upcast(tree: PyTree) -> PyTree:
    """Low-precision floats (bfloat16, float16) as float32: kfac-jax's inverses need >= 32 bits."""

    def up(x):
        low = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32
        return x.astype(jnp.float32) if low else x

    return jax.tree.map(up, tree)


class KfacParts(NamedTuple):
    """What :func:`_kfac_parts` builds: the transform, ``refresh(state, params, batch)`` (update
    the factors on ``batch[0]`` at ``params``) and ``precondition(state, vector, damping,
    params)`` (``(F̃ + damping I)⁻¹ vector`` with the factors as they are and a damping that may
    be traced: the adaptive rung changes it every few steps)."""

    tx: optax.GradientTransformationExtraArgs
    refresh: Callable[..., Any]
    precondition: Callable[..., Any]


class KfacState(NamedTuple):
    """Preconditioner step count, PRNG key and kfac-jax's estimator state as named leaves."""

    count: jax.Array
    key: jax.Array
    estimator: dict[str, jax.Array]


def _preconditioner(
    apply_fn,
    positions,
    damping,
    curvature_ema,
    estimation_mode,
    exact_inverses,
    loss_kind,
    inverse_update_period=1,
    kernels=None,
):
    kfac_jax = _import_kfac_jax()
    if loss_kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss_kind {loss_kind!r}; valid: {', '.join(LOSS_KINDS)}")

    def value_func(params, micro_batch):
        outputs = apply_fn(params if kernels is None else kernels.unview(params), micro_batch)
        # kfac-jax's losses are weight * sum(per entry) / batch_size, batch_size = positions(mb);
        # the weights make them gnbench's means over every position (e.g. a sequence's tokens).
        b = positions(micro_batch)
        if loss_kind == "softmax_cross_entropy":
            weight = b * outputs.shape[-1] / outputs.size
            kfac_jax.register_softmax_cross_entropy_loss(outputs, weight=weight)
        else:
            kfac_jax.register_squared_error_loss(outputs, weight=0.5 * b / outputs.size)
        return jnp.zeros((), outputs.dtype)

    return kfac_jax.OptaxPreconditioner(
        value_func,
        damping=damping,
        estimation_mode=estimation_mode,
        curvature_ema=curvature_ema,
        inverse_update_period=inverse_update_period,
        use_exact_inverses=exact_inverses,
        batch_size_extractor=positions,
        distributed_inverses=False,
        distributed_precon_apply=False,
    )


def scale_by_kfac(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    example_micro_batch: PyTree,
    damping: float = 1e-3,
    curvature_ema: float = 0.95,
    estimation_mode: str = "fisher_gradients",
    exact_inverses: bool = True,
    positions: Callable[[PyTree], int] = _leading_dim,
    seed: int = 0,
    loss_kind: str = "softmax_cross_entropy",
    inverse_update_period: int = 1,
) -> optax.GradientTransformationExtraArgs:
    """``u = F̃⁻¹ g``: gradients preconditioned by kfac-jax's damped block-diagonal K-FAC.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> logits`` (last axis: classes).
      example_micro_batch: one micro-batch (arrays or ``jax.ShapeDtypeStruct``) to trace the
        model's layers at ``init``.
      damping: λ > 0 added to each block.
      curvature_ema: decay of the factor averages.
      estimation_mode: kfac-jax's estimator, one of :data:`ESTIMATION_MODES`.
      exact_inverses: invert each damped block exactly (eigendecompositions) rather than with
        factored damping.
      positions: ``micro_batch -> B``, the examples in one micro-batch (the logits' leading
        dimension; kfac-jax averages its factors over them). Default: the leading dimension.
        The loss is registered as the mean over every position of every example.
      seed: seed of the sampled labels (``fisher_gradients``).
      loss_kind: the loss the curvature is of, one of :data:`LOSS_KINDS` (the mean softmax
        cross-entropy of ``apply_fn``'s logits, or ``0.5 * mean((z - y)**2)``).
      inverse_update_period: recompute the damped blocks' inverses (eigendecompositions) every
        this many steps; in between the last ones are reused while the factors keep averaging
        every step. A setting counted in steps: scale it with the run's length.

    Returns:
      A transform whose ``update(grads, state, params, *, batch, curvature_params=None)`` reads
      ``batch[0]`` and estimates the factors at ``curvature_params`` (default ``params``; GN's
      inner loop passes θ_t, where its model's curvature lives).
    """
    return _kfac_parts(
        apply_fn,
        example_micro_batch,
        damping,
        curvature_ema,
        estimation_mode,
        exact_inverses,
        positions,
        seed,
        loss_kind,
        inverse_update_period,
    ).tx


def _kfac_parts(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    example_micro_batch: PyTree,
    damping: float = 1e-3,
    curvature_ema: float = 0.95,
    estimation_mode: str = "fisher_gradients",
    exact_inverses: bool = True,
    positions: Callable[[PyTree], int] = _leading_dim,
    seed: int = 0,
    loss_kind: str = "softmax_cross_entropy",
    inverse_update_period: int = 1,
    external_refresh: bool = False,
) -> KfacParts:
    """:func:`scale_by_kfac` with its ``refresh`` and ``precondition`` (:class:`KfacParts`).
    With ``external_refresh`` the transform's own update only preconditions: the caller
    refreshes."""
    if estimation_mode not in ESTIMATION_MODES:
        raise ValueError(
            f"unknown estimation_mode {estimation_mode!r}; valid: {', '.join(ESTIMATION_MODES)}"
        )
    pytrees.require_numbers("kfac", damping=damping, curvature_ema=curvature_ema)
    if damping <= 0:
        raise ValueError(f"damping must be > 0, got {damping}")
    if int(inverse_update_period) != inverse_update_period or inverse_update_period < 1:
        raise ValueError(
            f"inverse_update_period must be an integer >= 1, got {inverse_update_period}"
        )
    if external_refresh and inverse_update_period != 1:
        raise ValueError(
            "a K-FAC refreshed by its caller (GN's inner solver, refreshed once per outer step) "
            f"recomputes its inverses at every refresh: inverse_update_period must be 1, got "
            f"{inverse_update_period}"
        )
    precond = _preconditioner(
        apply_fn,
        positions,
        damping,
        curvature_ema,
        estimation_mode,
        exact_inverses,
        loss_kind,
        int(inverse_update_period),
        kernels := kfac_compat.FlatKernels(),
    )
    view = kernels.view

    def example(params):
        batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), example_micro_batch)
        return (_upcast(view(params)), _upcast(batch))

    # kfac-jax's estimator state is a tree of its own classes; the transform's state holds its
    # leaves by index, and this structure (fixed by the params' shapes) rebuilds it. init records
    # it; an update that runs first (a state restored in another process) traces init for it.
    structure: list[Any] = []

    def treedef(params):
        if not structure:
            shapes = jax.eval_shape(lambda p: precond.init(example(p), jax.random.key(0)), params)
            structure.append(jax.tree.structure(shapes.estimator_state))
        return structure[0]

    def pack(estimator_state) -> dict[str, jax.Array]:
        leaves = jax.tree.leaves(estimator_state)
        return {f"{i:04d}": leaf for i, leaf in enumerate(leaves)}

    def unpack(estimator: dict[str, jax.Array], params):
        return jax.tree.unflatten(treedef(params), [estimator[k] for k in sorted(estimator)])

    def init_fn(params):
        pytrees.check_params(params, "kfac")
        # nnx.Optimizer inits on Variable-valued state and updates on arrays: trace arrays.
        params = pytrees.pure(params)
        kfac_compat.FlatKernels.warn(params)
        if estimation_mode in EXACT_MODES:
            logits = jax.eval_shape(apply_fn, params, example_micro_batch)
            if logits.ndim > 2:
                raise ValueError(
                    f"kfac: estimation_mode={estimation_mode!r} is wrong on logits of shape "
                    f"{logits.shape} (kfac-jax 0.0.8 spreads each position's output Hessian "
                    "over all positions); use estimation_mode='fisher_gradients'"
                )
        state = precond.init(example(params), jax.random.key(seed))
        _warn_generic_matrices(precond.estimator, params)
        if not structure:
            structure.append(jax.tree.structure(state.estimator_state))
        return KfacState(
            state.count, jax.random.key_data(jax.random.key(seed)), pack(state.estimator_state)
        )

    def update_fn(updates, state, params=None, *, batch=None, curvature_params=None, **extra):
        del extra
        if params is None or batch is None:
            raise ValueError("kfac needs params and batch=: update(grads, state, params, batch=)")
        # As GN's inner optimizer the curvature is the GN model's, at θ_t, not at the iterate.
        params = pytrees.pure(params if curvature_params is None else curvature_params)
        kfac_jax = _import_kfac_jax()
        key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
        micro_batch = first_micro_batch(batch)
        pstate = kfac_jax.OptaxPreconditionState(state.count, unpack(state.estimator, params))
        if not external_refresh:
            pstate = precond.maybe_update(
                pstate, (_upcast(view(params)), _upcast(micro_batch)), sub
            )
        direction = like(updates, precond.apply(_upcast(view(pytrees.pure(updates))), pstate))
        pstate = precond.increment_count(pstate)
        return direction, KfacState(
            pstate.count, jax.random.key_data(key), pack(pstate.estimator_state)
        )

    def like(updates, direction):
        """``direction`` (kfac-jax's flattened view) in the containers of ``updates`` (leaf
        order is kept by ``pure`` and ``view``)."""
        flat, tree = jax.tree.flatten(updates)
        return tree.unflatten(
            d.reshape(u.shape).astype(u.dtype)
            for d, u in zip(jax.tree.leaves(direction), flat, strict=True)
        )

    def first_micro_batch(batch):
        micro_batch = jax.tree.map(lambda x: x[0], batch)
        want = jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), example_micro_batch)
        got = jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), micro_batch)
        if want != got:
            raise ValueError(
                f"kfac: micro-batch {got} differs from example_micro_batch {want}; K-FAC traces "
                "its layers on the example, so give one of the same shapes and dtypes"
            )
        return micro_batch

    def refresh(state: KfacState, params, batch) -> KfacState:
        kfac_jax = _import_kfac_jax()
        key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
        micro_batch = first_micro_batch(batch)
        params = pytrees.pure(params)
        pstate = kfac_jax.OptaxPreconditionState(state.count, unpack(state.estimator, params))
        pstate = precond.maybe_update(pstate, (_upcast(view(params)), _upcast(micro_batch)), sub)
        return KfacState(state.count, jax.random.key_data(key), pack(pstate.estimator_state))

    def precondition(state: KfacState, vector, damping, params):
        # use_cached=False: each call inverts the damped blocks (or the factored-damping ones)
        # for this damping, which may change from step to step.
        out = precond.estimator.multiply_matpower(
            state=unpack(state.estimator, pytrees.pure(params)),
            parameter_structured_vector=_upcast(view(pytrees.pure(vector))),
            identity_weight=damping,
            power=-1,
            exact_power=exact_inverses,
            use_cached=False,
            pmap_axis_name=None,
        )
        return like(vector, out)

    return KfacParts(
        optax.GradientTransformationExtraArgs(init_fn, update_fn), refresh, precondition
    )


def _blocks_of(estimator: Any, params: PyTree) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, shape, block class)`` per leaf of ``params`` after ``estimator`` was built."""
    rows = []
    # flatten_up_to: one block index (or None) per leaf of params, whatever its containers
    # (an Equinox module's None fields are empty subtrees, not leaves).
    for (path, leaf), block in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.structure(params).flatten_up_to(estimator.params_block_index),
        strict=True,
    ):
        name = "none" if block is None else type(estimator.blocks[block]).__name__
        rows.append((jax.tree_util.keystr(path), tuple(leaf.shape), name))
    return rows


def _warn_generic_matrices(estimator: Any, params: PyTree) -> None:
    """Warns when hidden 2-D matrices get kfac-jax's generic diagonal block: its graph matcher
    did not recognise their layer (e.g. Equinox's ``W @ x``), so K-FAC is diagonal there.
    Embeddings and positional tables (by the routing's roles) are expected there: not named."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the routing's own guesses are Muon's business
        roles = {r.path: r.role for r in routing.routes(params).values()}
    rows = _blocks_of(estimator, params)
    names = [
        path
        for (path, shape, block), role in zip(rows, roles.values(), strict=True)
        if len(shape) == 2 and block == "NaiveDiagonal" and role not in ("embedding", "positional")
    ]
    if names:
        warnings.warn(
            f"kfac: matrices {', '.join(names)} get kfac-jax's generic diagonal blocks, not "
            "Kronecker ones (its graph matcher did not recognise their layers); see layer_table",
            stacklevel=3,
        )


def kfac(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    learning_rate: optax.ScalarOrSchedule,
    example_micro_batch: PyTree,
    damping: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    curvature_ema: float = 0.95,
    estimation_mode: str = "fisher_gradients",
    exact_inverses: bool = True,
    positions: Callable[[PyTree], int] = _leading_dim,
    seed: int = 0,
    loss_kind: str = "softmax_cross_entropy",
    inverse_update_period: int = 1,
) -> optax.GradientTransformationExtraArgs:
    """K-FAC with fixed learning rate and damping: :func:`scale_by_kfac`, momentum, decay, lr.

    Args: as :func:`scale_by_kfac`, plus ``learning_rate`` (number or schedule), ``momentum`` μ
    (heavy ball on the preconditioned gradient; 0 = none) and ``weight_decay`` (decoupled).
    """
    pytrees.require_numbers("kfac", momentum=momentum, weight_decay=weight_decay)
    scale = scale_by_kfac(
        apply_fn,
        example_micro_batch,
        damping,
        curvature_ema,
        estimation_mode,
        exact_inverses,
        positions,
        seed,
        loss_kind,
        inverse_update_period,
    )
    return _chain(scale, momentum, weight_decay, learning_rate)


def _chain(scale, momentum, weight_decay, learning_rate) -> optax.GradientTransformationExtraArgs:
    return optax.chain(
        scale,
        optax.trace(momentum) if momentum else optax.identity(),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def kfac_refreshed_by_caller(
    apply_fn: Callable[[PyTree, PyTree], jax.Array],
    learning_rate: optax.ScalarOrSchedule,
    example_micro_batch: PyTree,
    **settings: Any,
) -> tuple[optax.GradientTransformationExtraArgs, Callable[[PyTree, PyTree, PyTree], PyTree]]:
    """:func:`kfac` whose factors move only when the caller says: ``(tx, refresh)``.

    ``tx.update`` preconditions with the factors as they are; ``refresh(opt_state, params,
    batch)`` returns ``opt_state`` with every :class:`KfacState` in it (at any depth, e.g. under
    a clip or a schedule wrapper) updated on ``batch[0]`` at ``params``, as one step of
    :func:`kfac` updates it. Full GN's inner solve calls it once per outer step at θ_t: G is
    fixed for the K inner steps, so one estimate serves them all, the same one the ``kfac`` rung
    makes per step, and the inner steps cost a preconditioner product each instead of a factor
    estimate (``gn.inner_kfac_refresh='outer'``). Args: as :func:`kfac`, ``settings`` by name
    (``inverse_update_period`` must be 1: each refresh recomputes the inverses).
    """
    bound = inspect.signature(kfac).bind(apply_fn, learning_rate, example_micro_batch, **settings)
    bound.apply_defaults()
    a = bound.arguments
    pytrees.require_numbers("kfac", momentum=a["momentum"], weight_decay=a["weight_decay"])
    scale, refresh_one, _ = _kfac_parts(
        apply_fn,
        example_micro_batch,
        *(a[k] for k in ("damping", "curvature_ema", "estimation_mode", "exact_inverses")),
        *(a[k] for k in ("positions", "seed", "loss_kind", "inverse_update_period")),
        external_refresh=True,
    )

    def refresh(opt_state, params, batch):
        is_kfac = lambda s: isinstance(s, KfacState)  # noqa: E731
        return jax.tree.map(
            lambda s: refresh_one(s, params, batch) if is_kfac(s) else s, opt_state, is_leaf=is_kfac
        )

    return _chain(scale, a["momentum"], a["weight_decay"], learning_rate), refresh


def layer_table(
    apply_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree, example_micro_batch: PyTree
) -> list[tuple[str, tuple[int, ...], str]]:
    """Which parameters K-FAC gives Kronecker, diagonal or generic (diagonal fallback) blocks.

    Returns:
      Rows ``(path, shape, block)`` sorted by path; ``block`` is kfac-jax's block class name,
      e.g. ``DenseTwoKroneckerFactored`` (Kronecker), ``ScaleAndShiftDiagonal``,
      ``NaiveDiagonal`` (generic).
    """
    kernels = kfac_compat.FlatKernels()
    precond = _preconditioner(
        apply_fn,
        _leading_dim,
        1.0,
        0.95,
        "fisher_gradients",
        False,
        "softmax_cross_entropy",
        1,
        kernels,
    )
    params = pytrees.pure(params)
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), example_micro_batch)
    jax.eval_shape(lambda p: precond.init((kernels.view(p), batch), jax.random.key(0)), params)
    return sorted(_blocks_of(precond.estimator, params))


def format_layer_table(rows: list[tuple[str, tuple[int, ...], str]]) -> str:
    """The table of :func:`layer_table` as aligned text, one parameter per line."""
    width = max((len(p) for p, _, _ in rows), default=4)
    return "\n".join(f"{p:<{width}}  {str(s):<16} {b}" for p, s, b in rows)


def layer_summary(rows: list[tuple[str, tuple[int, ...], str]]) -> str:
    """One line: leaves and parameters per block kind (Kronecker, diagonal, generic, none).

    Example:
      >>> layer_summary([("w", (3, 4), "DenseTwoKroneckerFactored"), ("s", (4,), "none")])
      'kfac blocks: Kronecker 1 leaves (12 params); none 1 leaves (4 params)'
    """
    kinds: dict[str, list[int]] = {}
    for _, shape, block in rows:
        kind = (
            "Kronecker"
            if "Kronecker" in block
            else "generic diagonal"
            if block == "NaiveDiagonal"
            else "diagonal"
            if "Diagonal" in block
            else block
        )
        count = kinds.setdefault(kind, [0, 0])
        count[0] += 1
        count[1] += int(np.prod(shape, dtype=np.int64))
    parts = [f"{k} {n} leaves ({p:,} params)" for k, (n, p) in kinds.items()]
    return "kfac blocks: " + "; ".join(parts)


__all__ = [
    "ESTIMATION_MODES",
    "KfacParts",
    "KfacState",
    "LOSS_KINDS",
    "format_layer_table",
    "kfac",
    "kfac_from_config",
    "kfac_refreshed_by_caller",
    "layer_summary",
    "layer_table",
    "scale_by_kfac",
]


def require_model(ctx: BuildContext, who: str) -> None:
    """K-FAC traces the model: refuse a context without ``apply_fn`` and an example batch."""
    if ctx.apply_fn is None or ctx.example_micro_batch is None:
        raise ValueError(f"{who} needs BuildContext.apply_fn and example_micro_batch")


def kfac_from_config(
    f: Any,
    ctx: BuildContext,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float,
    who: str,
    make: Callable[..., Any] = kfac,
) -> Any:
    """:func:`kfac` (or ``make``, e.g. :func:`kfac_refreshed_by_caller`) with the settings of an
    ``optimizer.kfac`` section, for the ``kfac`` builder and GN's ``gn.inner='kfac'`` alike
    (``who`` names the caller in the error)."""
    require_model(ctx, who)
    return make(
        ctx.apply_fn,
        learning_rate,
        ctx.example_micro_batch,
        weight_decay=weight_decay,
        loss_kind=ctx.loss_kind,
        **f.to_dict(),
    )


@register(
    "kfac",
    reads=("kfac",),
    check=Checks(
        choices={"kfac.estimation_mode": (ESTIMATION_MODES, "K-FAC estimation mode")},
        positive_floats=("kfac.damping",),
        decays=("kfac.momentum", "kfac.curvature_ema"),
    ),
)
def _build(cfg: Any, ctx: BuildContext) -> Optimizer:
    """Registry builder: ``optimizer.kfac`` plus the common lr, schedule, decay and clip."""
    who = "optimizer 'kfac'"
    require_model(ctx, who)

    @optax.inject_hyperparams
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            kfac_from_config(cfg.kfac, ctx, learning_rate, cfg.weight_decay, who),
        )

    return Optimizer(
        tx=make(outer_schedule(cfg, cfg.learning_rate, ctx)),
        hparams=dict(
            name="kfac",
            learning_rate=cfg.learning_rate,
            **cfg.kfac.to_dict(),
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
        ),
        describe=lambda params: layer_summary(
            layer_table(ctx.apply_fn, params, ctx.example_micro_batch)
        ),
    )
