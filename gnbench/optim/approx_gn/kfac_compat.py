"""Compatibility patches: kfac-jax 0.0.8 with jax >= 0.9.2, one program per K-FAC step, and
3-D kernels (:class:`FlatKernels`).

kfac-jax 0.0.8 (the latest release) unpacks ``Primitive.get_bind_params`` as
``(subfuns, params)``; jax 0.9.2 changed it to return only the params (sub-functions travel inside
them), so kfac-jax's graph matcher fails with ``ValueError: too many values to unpack`` on the
first curvature update. The fix is on kfac-jax's main branch (``tag_graph_matcher.eval_jaxpr_eqn``
accepting both forms) but not in a release. :func:`apply` installs an equivalent
``eval_jaxpr_eqn`` only when the installed pair needs it, so it stops being applied once a fixed
kfac-jax is installed (or an old jax is).

The second patch makes the traced program the same in every process. kfac-jax's tracer
de-duplicates the inputs of its layer tags with ``list(set(vars))``; jaxpr variables hash by
identity (memory address), so their order, and with it the order of the operations in the
lowered step, changes from one process to the next. Every K-FAC run then missed JAX's
persistent compilation cache, even a rerun of the same config. :func:`apply` gives that module
a ``set`` that keeps insertion order (the only change), where its source still reads so.

Example:
  >>> from gnbench.optim.approx_gn import kfac_compat
  >>> kfac_compat.apply() in (True, False)
  True
"""

from __future__ import annotations

import collections.abc
import contextlib
import warnings
from typing import Any

import jax

_APPLIED = False


def _bind_params_is_dict() -> bool:
    """Whether this jax's ``get_bind_params`` returns the params alone (jax >= 0.9.2)."""
    from jax._src import core

    return not isinstance(core.Primitive("gnbench_probe").get_bind_params({}), tuple)


def needs_patch() -> bool:
    """True when the installed kfac-jax unpacks a pair that this jax no longer returns."""
    import inspect

    from kfac_jax._src import tag_graph_matcher

    source = inspect.getsource(tag_graph_matcher.eval_jaxpr_eqn)
    unpacks_pair = "subfuns, bind_params = eqn.primitive.get_bind_params" in source
    return unpacks_pair and _bind_params_is_dict()


def _eval_jaxpr_eqn(eqn, in_values):
    """``eval_jaxpr_eqn`` for either ``get_bind_params`` convention."""
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(bind_params, tuple):  # jax < 0.9.2
        subfuns, bind_params = bind_params
    context = getattr(jax.extend, "source_info_util", None)
    manager = (
        context.user_context(eqn.source_info.traceback) if context else contextlib.nullcontext()
    )
    with manager:
        output = eqn.primitive.bind(*subfuns, *in_values, **bind_params)
    return output if isinstance(output, list) else [output]


class InsertionOrderedSet(collections.abc.MutableSet):
    """A set that iterates in insertion order (set algebra from ``MutableSet``).

    Example:
      >>> list(InsertionOrderedSet([3, 1, 3, 2]) - {1})
      [3, 2]
    """

    def __init__(self, items=()):
        self._items = dict.fromkeys(items)

    def __contains__(self, item) -> bool:
        return item in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item) -> None:
        self._items[item] = None

    def discard(self, item) -> None:
        self._items.pop(item, None)

    def union(self, *others) -> InsertionOrderedSet:
        return InsertionOrderedSet([*self, *(x for other in others for x in other)])

    def __repr__(self) -> str:
        return "{" + ", ".join(map(repr, self)) + "}"


def needs_ordered_sets() -> bool:
    """True when kfac-jax's tracer orders the layer-tag inputs by a set of variables."""
    import inspect

    from kfac_jax._src import tracer

    return "list(set(v for v in layer_tag_invars" in inspect.getsource(tracer)


def apply() -> bool:
    """Installs the patches this kfac-jax/jax pair needs; returns whether the first (without
    which K-FAC fails) is installed."""
    global _APPLIED
    if not _APPLIED:
        from kfac_jax._src import tag_graph_matcher, tracer

        if needs_ordered_sets():
            tracer.set = InsertionOrderedSet
        if needs_patch():
            tag_graph_matcher.eval_jaxpr_eqn = _eval_jaxpr_eqn
            _APPLIED = True
    return _APPLIED


class FlatKernels:
    """3-D kernels (flax ``DenseGeneral``: attention's ``(d, heads, head_dim)`` projections and
    ``(heads, head_dim, d)`` outputs) shown to kfac-jax flattened, reshaped back inside the model.

    kfac-jax's graph matcher tags such a kernel as a dense layer, then fails on its bias
    ("Incompatible shapes for broadcasting"). Seen as a vector behind a reshape it matches no
    pattern and gets kfac-jax's generic diagonal block (a warning says which leaves). 4-D
    kernels (2-D convolutions, which kfac-jax registers) are left as they are.
    """

    def __init__(self):
        self.shapes = None

    def view(self, tree: Any) -> Any:
        self.shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), tree)
        return jax.tree.map(lambda p: p.reshape(-1) if p.ndim == 3 else p, tree)

    def unview(self, tree: Any) -> Any:
        return jax.tree.map(lambda v, s: v.reshape(s.shape), tree, self.shapes)

    @staticmethod
    def warn(params: Any) -> None:
        flat = jax.tree_util.tree_leaves_with_path(params)
        names = [jax.tree_util.keystr(p) for p, x in flat if x.ndim == 3]
        if names:
            warnings.warn(
                f"kfac: 3-D kernels {', '.join(names)} get diagonal blocks, not Kronecker ones "
                "(kfac-jax's dense blocks take 2-D kernels); see layer_table",
                stacklevel=3,
            )
