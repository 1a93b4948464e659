"""Matmul precision of the numerically sensitive parts of gnbench's optimizers, set in one place.

On NVIDIA GPUs XLA runs float32 matmuls in TF32 (10-bit mantissa) unless told otherwise, and on
TPUs in one bfloat16 pass. That is harmless for a model's forward pass but not for:

- SOAP's eigenbases: the Kronecker statistics ``L_i``, their power-iteration/QR refresh and the
  rotations into and out of the eigenbasis (:mod:`gnbench.optim.first_order.soap`);
- GN's curvature products: the linearization's JVP/VJP and the output-space products
  ``J^T H_z J v`` (:mod:`gnbench.optim.gn.curvature`), whose errors would bias the inner solve.

Those parts run under :func:`pinned`, which traces them inside
``jax.default_matmul_precision(setting)``: every matmul traced there without an explicit
``precision=`` gets the pinned setting written into its ``dot_general``, so it holds under
``jax.jit``, inside ``lax.scan``/``cond`` and through ``jax.linearize``/transposition (JAX copies
a ``dot_general``'s precision to its JVP and transpose), whatever precision the caller set.
``eigh`` and ``qr`` have no precision knob: on CPU/GPU they call LAPACK/cuSOLVER in the input's
dtype, and on TPU JAX's own lowering picks float32 matmuls. The precision only affects float32
operands; bfloat16 operands (``model.dtype=bfloat16``) multiply in bfloat16 either way.

Muon is different: the reference (github.com/KellerJordan/Muon) casts to bfloat16 for
Newton-Schulz, so :func:`newton_schulz_dtype` says bfloat16 for float32/bfloat16 inputs and keeps
float64 as float64 (the step-for-step tests against a NumPy float64 port).

Change a setting here (e.g. ``CURVATURE = "tensorfloat32"`` to trade GN accuracy for speed on
GPUs) and every pinned function follows; docs/precision.md lists the settings and their cost.

Example:
  >>> import jax, jax.numpy as jnp
  >>> @pinned("curvature")
  ... def gram(x):
  ...     return x @ x.T
  >>> with jax.default_matmul_precision("bfloat16"):
  ...     jaxpr = jax.make_jaxpr(gram)(jnp.ones((2, 3)))
  >>> [str(p) for p, _ in dot_generals(jaxpr)]
  ['(Precision.HIGHEST, Precision.HIGHEST)']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

#: SOAP's statistics, eigenbasis refresh and rotations.
SOAP = "highest"
#: GN's linearization (JVP/VJP) and output-space curvature products.
CURVATURE = "highest"
#: Muon's Newton-Schulz compute dtype for float32/bfloat16 inputs (the reference's).
NEWTON_SCHULZ_DTYPE = "bfloat16"

PARTS = ("soap", "curvature")
# The values jax.default_matmul_precision accepts besides DotAlgorithmPreset names.
_VALID = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def setting(part: str) -> str:
    """The matmul precision pinned for ``part`` (``"soap"`` or ``"curvature"``), read now.

    Example:
      >>> setting("soap")
      'highest'
    """
    if part not in PARTS:
        raise ValueError(f"unknown precision part {part!r}; valid: {', '.join(PARTS)}")
    value = {"soap": SOAP, "curvature": CURVATURE}[part]
    presets = getattr(getattr(jax.lax, "DotAlgorithmPreset", None), "__members__", {})
    if value not in _VALID and value not in presets:
        raise ValueError(
            f"precision.{part.upper()}={value!r}; valid: {', '.join(_VALID)} or a "
            "jax.lax.DotAlgorithmPreset name"
        )
    return value


def pinned(part: str) -> Callable[[F], F]:
    """Decorator: trace the function under ``jax.default_matmul_precision(setting(part))``.

    The setting is read at each call, i.e. at trace time under ``jit``: set it before the first
    trace, since a jitted function already traced keeps the precision it was traced with.

    Example:
      >>> f = pinned("soap")(lambda a: a @ a)
      >>> float(f(jnp.eye(2))[0, 0])
      1.0
    """
    setting(part)  # Fail at decoration on an unknown part.

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with jax.default_matmul_precision(setting(part)):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def newton_schulz_dtype(dtype: Any) -> np.dtype:
    """Muon's Newton-Schulz dtype for inputs of ``dtype``: float64 stays, else the reference's.

    Example:
      >>> newton_schulz_dtype(jnp.float32)
      dtype(bfloat16)
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Newton-Schulz needs a floating dtype, got {dtype}")
    if dtype == jnp.float64:
        return dtype
    return jnp.dtype(NEWTON_SCHULZ_DTYPE)


def _sub_jaxprs(value: Any):
    if hasattr(value, "eqns"):  # Jaxpr
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # ClosedJaxpr
        yield value.jaxpr
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def dot_generals(jaxpr: Any) -> list[tuple[Any, tuple[np.dtype, ...]]]:
    """``(precision, operand dtypes)`` of every ``dot_general`` in a (closed) jaxpr, nested
    jaxprs (``pjit``, ``scan``, ``cond``, custom derivatives) included.

    Example:
      >>> jaxpr = jax.make_jaxpr(lambda a: a @ a)(jnp.ones((2, 2)))
      >>> [dtypes for _, dtypes in dot_generals(jaxpr)]
      [(dtype('float32'), dtype('float32'))]
    """
    out: list[tuple[Any, tuple[np.dtype, ...]]] = []
    stack = list(_sub_jaxprs(jaxpr))
    while stack:
        for eqn in stack.pop().eqns:
            if eqn.primitive.name == "dot_general":
                dtypes = tuple(jnp.dtype(v.aval.dtype) for v in eqn.invars)
                out.append((eqn.params["precision"], dtypes))
            for value in eqn.params.values():
                stack.extend(_sub_jaxprs(value))
    return out


__all__ = [
    "CURVATURE",
    "NEWTON_SCHULZ_DTYPE",
    "PARTS",
    "SOAP",
    "dot_generals",
    "newton_schulz_dtype",
    "pinned",
    "setting",
]
