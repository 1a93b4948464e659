"""Checks of an optimizer's own config keys, declared where the method registers.

A method registers (:func:`gnbench.optim.registry.register`) with a :class:`Checks`: the keys of
``optimizer.*`` it reads and what each may hold. The trainer's validation runs the checks of the
method a run names before anything is built, so a bad value fails in one line naming the key and
a value to give instead, and ``train/`` keeps no copy of any method's choices or ranges.

Keys are relative to the optimizer section (``"soap.precondition_frequency"``); messages name
them in full (``optimizer.soap.precondition_frequency``). A key the config lacks is not checked.

Example:
  >>> checks = Checks(positive_ints=("soap.precondition_frequency",))
  >>> checks({"soap": {"precondition_frequency": 0}})
  Traceback (most recent call last):
  ...
  ValueError: optimizer.soap.precondition_frequency=0 must be an integer >= 1; give --config.optimizer.soap.precondition_frequency=N with N >= 1
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

MISSING = object()
PREFIX = "optimizer."


def get(section: Any, key: str) -> Any:
    """``section[a][b]`` for ``key="a.b"``, or :data:`MISSING`."""
    node = section
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return MISSING
    return node


def suggestion(name: Any, valid: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""``.

    Example:
      >>> suggestion("adamm", ["adamw", "soap"])
      " (did you mean 'adamw'?)"
    """
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(key: str, value: Any, need: str, example: str) -> None:
    full = PREFIX + key
    raise ValueError(f"{full}={value!r} must be {need}; give --config.{full}={example}")


def _int_ok(v: Any, low: int) -> bool:
    return _number(v) and v == int(v) and v >= low


# kind -> (test, what it must be, an example to give)
_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "positive_ints": (lambda v: _int_ok(v, 1), "an integer >= 1", "N with N >= 1"),
    "nonnegative_ints": (lambda v: _int_ok(v, 0), "an integer >= 0", "N with N >= 0"),
    "positive_floats": (
        lambda v: _number(v) and math.isfinite(v) and v > 0,
        "a finite number > 0",
        "3e-3",
    ),
    "nonnegative_floats": (
        lambda v: _number(v) and math.isfinite(v) and v >= 0,
        "a finite number >= 0",
        "0.0",
    ),
    "decays": (lambda v: _number(v) and 0 <= v < 1, "in [0, 1)", "0.9"),
}


@dataclasses.dataclass(frozen=True)
class Checks:
    """What a method's own keys may hold (keys relative to ``optimizer``).

    Attributes:
      positive_ints, nonnegative_ints, positive_floats, nonnegative_floats, decays: keys by the
        range their value must lie in (decays: ``[0, 1)``).
      choices: key -> (the valid names, what they are, e.g. ``"GN inner optimizer"``).
      extra: further checks ``section -> None`` raising ``ValueError`` (one line, naming the key):
        ranges that depend on other keys, or the checks of an inner method.
    """

    positive_ints: tuple[str, ...] = ()
    nonnegative_ints: tuple[str, ...] = ()
    positive_floats: tuple[str, ...] = ()
    nonnegative_floats: tuple[str, ...] = ()
    decays: tuple[str, ...] = ()
    choices: Mapping[str, tuple[tuple[str, ...], str]] = dataclasses.field(default_factory=dict)
    extra: tuple[Callable[[Any], None], ...] = ()

    def __call__(self, section: Any) -> None:
        """Checks ``section`` (the ``optimizer`` config); raises ``ValueError`` on the first
        bad value."""
        for key, (valid, what) in self.choices.items():
            value = get(section, key)
            if value is not MISSING and value not in valid:
                raise ValueError(
                    f"unknown {what} {value!r}; known {what}s: {', '.join(valid)}"
                    f"{suggestion(value, valid)}; set --config.{PREFIX}{key}=NAME"
                )
        for kind, (ok, need, example) in _RULES.items():
            for key in getattr(self, kind):
                value = get(section, key)
                if value is not MISSING and not ok(value):
                    _fail(key, value, need, example)
        for check in self.extra:
            check(section)

    def keys(self) -> set[str]:
        """Every key these checks name (``optimizer``-relative)."""
        out = set(self.choices)
        for kind in _RULES:
            out |= set(getattr(self, kind))
        return out


def in_range(key: str, low: float, high: float, example: str) -> Callable[[Any], None]:
    """A check that ``key`` lies in ``(low, high]`` (e.g. a power in (0, 1]).

    Example:
      >>> in_range("diag_gn.power", 0, 1, "0.5")({"diag_gn": {"power": 2}})
      Traceback (most recent call last):
      ...
      ValueError: optimizer.diag_gn.power=2 must be in (0, 1]; give --config.optimizer.diag_gn.power=0.5
    """  # noqa: E501

    def check(section: Any) -> None:
        value = get(section, key)
        if value is not MISSING and (not _number(value) or not low < value <= high):
            _fail(key, value, f"in ({low:g}, {high:g}]", example)

    return check


__all__ = ["MISSING", "Checks", "get", "in_range", "suggestion"]
