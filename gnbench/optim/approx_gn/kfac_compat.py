"""Compatibility patch: kfac-jax 0.0.8 with jax >= 0.9.2.

kfac-jax 0.0.8 (the latest release) unpacks ``Primitive.get_bind_params`` as
``(subfuns, params)``; jax 0.9.2 changed it to return only the params (sub-functions travel inside
them), so kfac-jax's graph matcher fails with ``ValueError: too many values to unpack`` on the
first curvature update. The fix is on kfac-jax's main branch (``tag_graph_matcher.eval_jaxpr_eqn``
accepting both forms) but not in a release. :func:`apply` installs an equivalent
``eval_jaxpr_eqn`` only when the installed pair needs it, so it stops being applied once a fixed
kfac-jax is installed (or an old jax is).

Example:
  >>> from gnbench.optim.approx_gn import kfac_compat
  >>> kfac_compat.apply() in (True, False)
  True
"""

from __future__ import annotations

import contextlib

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


def apply() -> bool:
    """Installs the patch if this kfac-jax/jax pair needs it; returns whether it is installed."""
    global _APPLIED
    if not _APPLIED and needs_patch():
        from kfac_jax._src import tag_graph_matcher

        tag_graph_matcher.eval_jaxpr_eqn = _eval_jaxpr_eqn
        _APPLIED = True
    return _APPLIED
