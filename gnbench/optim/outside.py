"""Optimizers from outside gnbench: a builder named by where it lives, with no change to gnbench.

``optimizer.name`` (a config key, or a sweep method's ``optimizer.name`` override) may name an
*entry* instead of a registered method:

- ``pkg.module:attr``: ``attr`` of an importable module (an installed package, or a folder on
  ``PYTHONPATH``);
- ``path/to/file.py:attr``: ``attr`` of a Python file, loaded by path (relative paths start from
  the current folder: the repository root for ``gnbench sweep`` and ``gnbench ladder``).

``attr`` is either

- a builder with the registry's contract (``builder(optimizer_cfg, BuildContext) -> Optimizer``,
  :mod:`gnbench.optim.registry`), decorated with :func:`outside_method` to declare the
  ``optimizer.<section>`` sub-sections it reads (the run identity keeps those, drops the others)
  and a check of its own keys (run by the config validation before anything is built); or
- a plain Optax factory, ``factory(learning_rate) -> optax.GradientTransformation`` (its first
  argument named ``learning_rate``, as in every optax alias, or its only required one):
  wrapped as a first-order method exactly as AdamW is built (``optimizer.learning_rate`` under
  ``optimizer.schedule``, ``grad_clip`` first, ``optax.inject_hyperparams`` so the learning
  rate in use is logged). ``optax:lion`` is Lion with optax's defaults for its other arguments.

An entry is resolved once per process and cached by its string. Every way it can fail (module
or file not found, the file fails to import, no such attribute, not callable, a signature that
is neither contract, a builder that raises or returns something other than an ``Optimizer``)
raises :class:`OutsideMethodError`: one line naming the entry and what to give instead.

The run's identity holds the entry string, not the code it names: change the entry (rename the
builder or the file) when you change what the method computes, or runs of the old code are
taken for runs of the new one (a rerun skips them, ``reuse`` copies them).

Example:
  >>> m = resolve("optax:lion")   # an optax factory, wrapped like AdamW
  >>> m.sections({}), m.check is None
  (set(), True)
  >>> resolve("optax:nope")
  Traceback (most recent call last):
  ...
  gnbench.optim.outside.OutsideMethodError: optimizer 'optax:nope': module optax has no attribute 'nope'; give optax:NAME with NAME a builder or an optax factory it defines
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optax

from gnbench.optim.checks import suggestion
from gnbench.optim.registry import (
    BuildContext,
    Builder,
    Method,
    Optimizer,
    Reads,
    clip,
    outer_schedule,
)

if TYPE_CHECKING:
    import ml_collections

# The attribute :func:`outside_method` sets on a builder: ``(reads, check)``.
MARK = "__gnbench_method__"
CONTRACT = (
    "a builder (cfg, ctx) -> gnbench.optim.Optimizer decorated with "
    "@gnbench.optim.outside_method(reads=..., check=...), or an optax factory "
    "(learning_rate) -> optax.GradientTransformation"
)
_RESOLVED: dict[str, Method] = {}


class OutsideMethodError(ValueError):
    """An entry that names no usable method; the message is one line naming the entry and the
    fix. (A ``ValueError``: the trainer's validation turns it into its own one-line error.)"""


def is_entry(name: Any) -> bool:
    """Whether ``name`` names an outside method (``module:attr`` or ``file.py:attr``)."""
    return isinstance(name, str) and ":" in name


def outside_method(
    *, reads: Reads = (), check: Callable[[Any], None] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator declaring what an outside builder reads and how its keys are checked.

    The same facts a built-in method gives :func:`gnbench.optim.registry.register`, without
    registering anything: the builder is found by its entry (``path/to/file.py:build``).

    Args:
      reads: the ``optimizer.<section>`` sub-sections the builder reads (a tuple, or a function
        of the optimizer config returning them); the run identity drops every other section.
      check: a check of its own keys, ``check(optimizer_cfg)`` raising ``ValueError`` with one
        line naming the key (e.g. :class:`gnbench.optim.checks.Checks`), run before anything is
        built.

    Example:
      >>> from gnbench.optim.checks import Checks
      >>> @outside_method(reads=("toy",), check=Checks(positive_floats=("toy.lr",)))
      ... def build(cfg, ctx):
      ...     return Optimizer(tx=optax.with_extra_args_support(optax.sgd(cfg.toy.lr)), hparams={})
      >>> getattr(build, MARK)[0]
      ('toy',)
    """

    def wrap(builder: Builder) -> Builder:
        setattr(builder, MARK, (reads, check))
        return builder

    return wrap


def _fail(entry: str, why: str) -> OutsideMethodError:
    return OutsideMethodError(f"optimizer {entry!r}: {' '.join(why.split())}")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _load_file(entry: str, path_text: str) -> Any:
    """The module of the file ``path_text``, imported under a name unique to its path."""
    path = Path(path_text)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise _fail(entry, f"file {path_text} not found{where}; give path/to/file.py:NAME")
    absolute = path.resolve()
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:10]
    name = f"gnbench_outside_{absolute.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, absolute)
    if spec is None or spec.loader is None:
        raise _fail(entry, f"{path_text} cannot be loaded as Python; give path/to/file.py:NAME")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Before it runs: dataclasses and pickling look it up.
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise _fail(entry, f"{path_text} failed to import: {_one_line(e)}; fix the file") from None
    return module


def _load_module(entry: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise _fail(
                entry,
                f"module {module_name!r} not found; install its package or put its folder on "
                "PYTHONPATH, or name a file: path/to/file.py:NAME",
            ) from None
        raise _fail(
            entry, f"module {module_name} failed to import: {_one_line(e)}; install {missing!r}"
        ) from None
    except Exception as e:
        raise _fail(entry, f"module {module_name} failed to import: {_one_line(e)}") from None


def _attribute(entry: str, module: Any, where: str, attr: str, module_part: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise _fail(
                entry,
                f"{where} has no attribute {attr!r}{suggestion(part, public)}; give "
                f"{module_part}:NAME with NAME a builder or an optax factory it defines",
            )
        obj = getattr(obj, part)
    return obj


def _positional(fn: Callable) -> list[inspect.Parameter] | None:
    """The parameters of ``fn`` that can take a positional argument, or ``None`` when Python
    cannot tell (a builtin)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in params if p.kind in kinds]


def _accepts(fn: Callable, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*([None] * n))
    except TypeError:
        return False
    except ValueError:  # No signature: let the call tell.
        return True
    return True


def _is_optax_factory(fn: Callable) -> bool:
    """Whether ``fn`` looks like ``factory(learning_rate, ...) -> GradientTransformation``."""
    params = _positional(fn)
    if not params:
        return False
    required = [p for p in params if p.default is inspect.Parameter.empty]
    return params[0].name == "learning_rate" or (len(required) == 1 and _accepts(fn, 1))


def _guarded(entry: str, builder: Builder) -> Builder:
    """``builder`` whose failures and wrong results are one-line :class:`OutsideMethodError`;
    a plain ``GradientTransformation`` in ``tx`` gets the extra-args support the trainer needs."""

    def build(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
        try:
            built = builder(cfg, ctx)
        except OutsideMethodError:
            raise
        except Exception as e:
            raise _fail(
                entry, f"its builder raised {_one_line(e)}; fix the builder (cfg, ctx) -> Optimizer"
            ) from None
        if not isinstance(built, Optimizer):
            hint = (
                "wrap it: Optimizer(tx=tx, hparams={...})"
                if isinstance(built, optax.GradientTransformation)
                else "return gnbench.optim.Optimizer(tx=..., hparams={...})"
            )
            raise _fail(
                entry, f"its builder returned {type(built).__name__}, not an Optimizer; {hint}"
            )
        if not isinstance(built.tx, optax.GradientTransformation):
            raise _fail(
                entry,
                f"its builder's Optimizer.tx is {type(built.tx).__name__}, not an "
                "optax.GradientTransformation",
            )
        if not isinstance(built.tx, optax.GradientTransformationExtraArgs):
            built = dataclasses.replace(built, tx=optax.with_extra_args_support(built.tx))
        return built

    return build


def optax_factory_builder(entry: str, factory: Callable[..., Any]) -> Builder:
    """A builder running ``factory(learning_rate)`` as a first-order method, as AdamW is built:
    ``optimizer.learning_rate`` under the config's schedule, ``grad_clip`` first, and
    ``optax.inject_hyperparams`` (the learning rate in use is logged; constant rates live in
    the state, so runs differing only in the rate share one compiled program)."""

    def build(cfg: ml_collections.ConfigDict, ctx: BuildContext) -> Optimizer:
        try:
            probe = factory(cfg.learning_rate)
        except Exception as e:
            raise _fail(
                entry,
                f"the optax factory raised {_one_line(e)} when called with learning_rate="
                f"{cfg.learning_rate!r}; name a factory (learning_rate) -> GradientTransformation",
            ) from None
        if not isinstance(probe, optax.GradientTransformation):
            raise _fail(
                entry,
                f"the factory returned {type(probe).__name__}, not an "
                f"optax.GradientTransformation; name {CONTRACT}",
            )
        lr = outer_schedule(cfg, cfg.learning_rate, ctx)

        @optax.inject_hyperparams
        def make(learning_rate):
            return optax.chain(clip(cfg.grad_clip), factory(learning_rate))

        return Optimizer(
            tx=optax.with_extra_args_support(make(lr)),
            hparams=dict(name=entry, learning_rate=cfg.learning_rate, grad_clip=cfg.grad_clip),
        )

    return build


def _method(entry: str) -> Method:
    module_part, _, attr = entry.rpartition(":")
    if not module_part or not attr:
        raise _fail(entry, "an outside method is module:NAME or path/to/file.py:NAME")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        module = _load_file(entry, module_part)
        where = module_part
    else:
        module = _load_module(entry, module_part)
        where = f"module {module_part}"
    obj = _attribute(entry, module, where, attr, module_part)
    if not callable(obj):
        raise _fail(entry, f"{attr} is a {type(obj).__name__}, not callable; name {CONTRACT}")
    mark = getattr(obj, MARK, None)
    if mark is not None:
        if not _accepts(obj, 2):
            raise _fail(
                entry,
                f"builder {attr}{inspect.signature(obj)} cannot be called as {attr}(cfg, ctx); "
                "give it the signature (cfg, ctx) -> Optimizer",
            )
        reads, check = mark
        return Method(_guarded(entry, obj), reads, check)
    if _is_optax_factory(obj):
        return Method(_guarded(entry, optax_factory_builder(entry, obj)))
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(...)"
    raise _fail(
        entry,
        f"{attr}{signature} is neither contract; name {CONTRACT} (an undecorated builder "
        "would declare no sections, so its runs' identity would miss its keys)",
    )


def resolve(entry: str) -> Method:
    """The :class:`~gnbench.optim.registry.Method` an entry names, resolved once per process.

    Raises:
      OutsideMethodError: the entry cannot be resolved (one line naming it and the fix).
    """
    if entry not in _RESOLVED:
        _RESOLVED[entry] = _method(entry)
    return _RESOLVED[entry]


__all__ = ["OutsideMethodError", "is_entry", "optax_factory_builder", "outside_method", "resolve"]
