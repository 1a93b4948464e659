"""Reading the Python files a sweep names: the sweep file itself and its base experiment.

Every failure is one :class:`SweepError` line naming the file: a missing file, a syntax error
(with its line), an exception while importing it or inside ``get_sweep()``/``get_config()``, a
missing function, or a result of the wrong type.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import ml_collections

REPO_ROOT = Path(__file__).resolve().parents[2]


class SweepError(ValueError):
    """A sweep file that cannot be planned (unknown key, bad value, missing field)."""


def _load_module(path: Path, name: str) -> Any:
    """Imports a Python file by path, with its folder and the repo root on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SweepError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    added = [p for p in (str(path.parent), str(REPO_ROOT)) if p not in sys.path]
    sys.path[:0] = added
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        where = f"{e.filename or path}:{e.lineno}" if e.lineno else str(path)
        raise SweepError(f"{where}: syntax error: {e.msg}; fix the file") from None
    except Exception as e:
        raise SweepError(f"{path} failed to import: {_one_line(e)}; fix the file") from None
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
    return module


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _call(fn: Any, path: Path, what: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``; an exception in it names the file and the function."""
    try:
        return fn(**kwargs)
    except Exception as e:
        raise SweepError(f"{path}: {what}() failed: {_one_line(e)}; fix the file") from None


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """The ``get_config()`` of an experiment file.

    Example:
      >>> cfg = load_config_file(REPO_ROOT / "experiments" / "base.py")
      >>> "optimizer" in cfg
      True
    """
    module = _load_module(Path(path), f"_gnbench_config_{Path(path).stem}")
    if not callable(getattr(module, "get_config", None)):
        raise SweepError(f"{path} has no get_config() function")
    config = _call(module.get_config, Path(path), "get_config")
    if not isinstance(config, ml_collections.ConfigDict):
        raise SweepError(f"{path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def resolve_base(base: str, sweep_file: Path) -> Path:
    """The experiment file ``base`` names: relative to the sweep file, else to the repo root."""
    for root in (sweep_file.parent, REPO_ROOT, Path.cwd()):
        candidate = (root / base).resolve()
        if candidate.exists():
            return candidate
    raise SweepError(f"base config {base!r} not found next to {sweep_file} nor in {REPO_ROOT}")


def read_sweep_file(path: Path, quick: bool = False) -> dict[str, Any] | ml_collections.ConfigDict:
    """What ``get_sweep()`` (``get_sweep(quick=True)`` with ``quick``) of the file ``path``
    returns, unchecked beyond its type.

    Raises:
      SweepError: the file does not load, has no ``get_sweep`` function, does not take
        ``quick``, raises, or returns something else than a dict.
    """
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist")
    if not path.is_file() or path.suffix != ".py":
        raise SweepError(f"sweep file {path} is not a .py file; give a file with get_sweep()")
    module = _load_module(path, f"_gnbench_sweep_{path.stem}")
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"{path} has no get_sweep() function")
    if quick:
        if "quick" not in inspect.signature(module.get_sweep).parameters:
            raise SweepError(f"{path}: get_sweep() takes no `quick` argument")
        raw = _call(module.get_sweep, path, "get_sweep", quick=True)
    else:
        raw = _call(module.get_sweep, path, "get_sweep")
    if not isinstance(raw, (dict, ml_collections.ConfigDict)):
        raise SweepError(
            f"{path}: get_sweep() returned {type(raw).__name__}, not a dict; it returns "
            "{'name': ..., 'base': ..., 'methods': {...}, 'seeds': [...]} (see experiments/)"
        )
    return raw
