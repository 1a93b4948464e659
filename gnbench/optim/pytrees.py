"""Parameter pytrees from any framework (dicts, flax linen and nnx, Equinox): what is not guessed.

The transforms take whatever pytree holds the parameters. Three facts about such a tree are
read here, once, instead of being assumed:

* **A tree or a function?** ``labels=``, ``blocks=`` and ``weight_dimension_numbers=`` accept a
  pytree or a function of the params. ``callable(x)`` cannot tell them apart: an Equinox module
  is callable (it is the model), so a label tree shaped like Equinox params would be called.
  :func:`is_function` says "function" only for a callable that is itself a pytree *leaf*; and
  where a label tree goes to ``optax.partition`` / ``optax.multi_transform`` (which test
  ``callable``), :func:`constant` wraps it.
* **Arrays only, floating only.** :func:`check_params` turns an unpartitioned Equinox model (its
  activation function is a leaf) or an integer leaf into one line naming the leaf and the fix,
  where JAX would fail later with a message about tangents or attributes.
* **Axis conventions of weights.** Flax stores a dense kernel as ``(in, out)``; Equinox's
  ``nn.Linear`` stores ``weight`` as ``(out, in)`` and ``nn.Conv`` as ``(out, in, *window)``.
  :func:`known_layouts` finds the Equinox layers in a tree (only if ``equinox`` is already
  imported: gnbench never imports it) and gives each weight's Muon axes.

Example:
  >>> import jax.numpy as jnp
  >>> is_function(lambda p: p), is_function({"w": "muon"})
  (True, False)
  >>> check_params({"w": jnp.zeros(2, jnp.int32)}, "muon")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: muon: params leaf ['w'] has dtype int32; every parameter must be a float array...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers


def is_function(x: Any) -> bool:
    """Whether ``x`` is a function of the params rather than a pytree of labels.

    A callable pytree *node* (an Equinox module, a labels tree shaped like Equinox params) is a
    tree; a callable *leaf* (a function, a ``functools.partial``, a jitted function) is a
    function.
    """
    return callable(x) and jax.tree_util.treedef_is_leaf(jax.tree.structure(x))


def require_numbers(who: str, fix: str = "only learning_rate takes a schedule", **values) -> None:
    """Refuses, in one line naming the argument, a function (a schedule) where a number goes.

    Example:
      >>> require_numbers("muon", momentum=0.95)
    """
    for name, value in values.items():
        if is_function(value):
            raise ValueError(f"{who}: {name} must be a number, got a function (a schedule?); {fix}")


def call_or_tree(x: Any, params: Any) -> Any:
    """``x(params)`` if ``x`` is a function (:func:`is_function`), else ``x`` itself."""
    return x(params) if is_function(x) else x


def constant(tree: Any) -> Callable[[Any], Any]:
    """``tree`` as a function of the params, for optax's ``partition`` / ``multi_transform``,
    which would call a callable label tree (Equinox) as if it were a labels function."""
    return lambda _: tree


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """The names of a key path, without an nnx ``Variable``'s trailing ``.value``."""
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys.pop()
    names = []
    for k in keys:
        attr = next((a for a in ("key", "name", "idx") if hasattr(k, a)), None)
        names.append(str(getattr(k, attr)) if attr else str(k))
    return tuple(names)


def top_level_depth(names: Sequence[tuple[str, ...]]) -> int:
    """Index of the top level in the name paths: below linen's ``"params"`` and single-entry
    wrappers (an nnx model whose layers sit in one ``nnx.List``), never inside one layer.

    Example:
      >>> top_level_depth([("params", "Dense_0", "kernel"), ("params", "Dense_1", "kernel")])
      1
    """
    d = 0
    while names and all(len(n) > d + 1 for n in names) and len({n[d] for n in names}) == 1:
        linen_collection = d == 0 and names[0][0] == "params"
        if not linen_collection and not all(len(n) > d + 2 for n in names):
            break  # One layer holding its leaves: it is the top level.
        d += 1
    return d


def normalize_dims(dims: Any, shape: tuple[int, ...], where: str) -> MuonDimensionNumbers:
    """``dims`` with tuples of non-negative axes, checked against ``shape``."""
    if not isinstance(dims, MuonDimensionNumbers):
        raise ValueError(f"{where}: got {dims!r}; valid: a MuonDimensionNumbers or None (adam)")
    if len(shape) < 2:
        raise ValueError(f"{where}: Muon needs a leaf of ndim >= 2, got shape {shape}")
    axes = []
    for field in (dims.reduction_axis, dims.output_axis):
        field = (field,) if isinstance(field, int) else tuple(field)
        if not field or any(not -len(shape) <= a < len(shape) for a in field):
            raise ValueError(f"{where}: axes {field} of {dims} invalid for shape {shape}")
        axes.append(tuple(sorted(a % len(shape) for a in field)))
    if set(axes[0]) & set(axes[1]):
        raise ValueError(f"{where}: reduction and output axes overlap in {dims}")
    return MuonDimensionNumbers(*axes)


_FIX = "pass only the arrays (Equinox: params, static = eqx.partition(model, eqx.is_array))"


def check_params(params: Any, who: str) -> None:
    """Raises one line naming the first leaf of ``params`` that is not a float array, and the fix.

    Accepts arrays, ``jax.ShapeDtypeStruct`` and Python floats; masked leaves
    (``optax.MaskedNode``) and ``None`` hold no leaves.

    Args:
      params: the parameter pytree given to a transform's ``init`` or ``update``.
      who: the transform's name, first in the message.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, x in flat:
        where = jax.tree_util.keystr(path) or "(root)"
        if isinstance(x, float | complex):
            continue
        dtype = getattr(x, "dtype", None)
        if dtype is None or not hasattr(x, "shape") or isinstance(x, str | bool | int):
            kind = type(x).__name__
            raise TypeError(f"{who}: params leaf {where} is a {kind}, not an array; {_FIX}")
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise ValueError(
                f"{who}: params leaf {where} has dtype {dtype}; "
                "every parameter must be a float array: keep integer state out of params "
                "(Equinox: eqx.partition(model, eqx.is_inexact_array))"
            )


def built_per_tree(
    build: Callable[[Any], optax.GradientTransformation], who: str
) -> optax.GradientTransformation:
    """A transform that ``build(tree)`` makes anew for each tree it is given (the Muons decide
    their routing on the tree itself, so a masked subtree inside layerwise GN routes as such);
    ``init`` first checks the parameters (:func:`check_params`).

    Example:
      >>> tx = built_per_tree(lambda tree: optax.scale(-1.0), "demo")
      >>> tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))[0]["w"].tolist()
      [-1.0, -1.0]
    """

    def init_fn(params):
        check_params(params, who)
        return build(params).init(params)

    def update_fn(updates, state, params=None):
        return build(updates).update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


class Layout(NamedTuple):
    """A weight whose layer class fixes its axes: Muon's axes and the table's wording."""

    dims: MuonDimensionNumbers | None  # None: not a matrix to orthogonalize (an embedding)
    role: str  # "hidden" or "embedding"
    text: str  # e.g. "(out, in): equinox Linear"


def _equinox_layers() -> dict[type, Callable[[int], Layout]] | None:
    eqx = sys.modules.get("equinox")
    nn = getattr(eqx, "nn", None)
    if nn is None:
        return None

    def conv(ndim: int) -> Layout:
        dims = MuonDimensionNumbers(tuple(range(1, ndim)), (0,))
        return Layout(dims, "hidden", "(out, in, *window): equinox Conv")

    return {
        nn.Linear: lambda _: Layout(
            MuonDimensionNumbers((1,), (0,)), "hidden", "(out, in): equinox Linear"
        ),
        nn.Conv: conv,
        nn.Embedding: lambda _: Layout(None, "embedding", "(vocab, dim): equinox Embedding"),
    }


def known_layouts(params: Any) -> dict[tuple[str, ...], Layout]:
    """The :class:`Layout` of every weight whose layer class is known, keyed by its names.

    Today: Equinox ``nn.Linear`` (``(out, in)``), ``nn.Conv`` (``(out, in, *window)``) and
    ``nn.Embedding``. Flax kernels need no entry: they are ``(in, out)``, the default rule's.
    Empty when ``equinox`` is not imported.
    """
    layers = _equinox_layers()
    if layers is None:
        return {}
    kinds = tuple(layers)
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, kinds))
    out = {}
    for path, node in flat:
        weight = getattr(node, "weight", None)
        if isinstance(node, kinds) and hasattr(weight, "shape") and len(weight.shape) >= 2:
            out[(*path_names(path), "weight")] = layers[type(node)](len(weight.shape))
    return out


def pure(params: Any) -> Any:
    """``params`` with flax nnx ``Variable`` wrappers removed (``nnx.as_pure``), else as is.

    ``nnx.Optimizer`` calls ``tx.init`` on ``Variable``-valued state and ``tx.update`` on plain
    arrays; a transform that traces the model at ``init`` (K-FAC) must see the same tree both
    times.
    """
    nnx = sys.modules.get("flax.nnx")
    as_pure = getattr(nnx, "as_pure", None)
    return params if as_pure is None else as_pure(params)


__all__ = [
    "Layout",
    "call_or_tree",
    "check_params",
    "constant",
    "is_function",
    "known_layouts",
    "normalize_dims",
    "path_names",
    "pure",
    "require_numbers",
    "top_level_depth",
]
