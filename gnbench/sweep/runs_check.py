"""Every run a sweep can plan, checked like ``gnbench train`` checks one run, before any runs.

:func:`gnbench.sweep.spec.parse_sweep` checks the sweep file's own fields and that every override
key exists; :func:`check_runs` then builds the resolved config of every run the sweep can ever
plan (the warm-up, every method and variant at every scan value and grid point) and passes it
through :func:`gnbench.train.validation.validate_config`, the trainer's own checks. So an unknown
method, a learning rate of 0 in a grid, a scan value the key cannot take or a negative target
fails in one line naming the sweep file and the run, before any folder or process exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gnbench.sweep.spec import SweepError, SweepSpec, check_overrides
from gnbench.train.validation import ConfigError, validate_config


def _runs(spec: SweepSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, overrides): the sweep-wide ones first (their mistakes are named as theirs), the
    warm-up, then one run per method or variant, scan value and grid point (seeds are checked
    by the spec itself)."""
    from gnbench.sweep.plan import _shared_overrides, grid_points, run_overrides, warmup_run

    yield "overrides and target_loss (shared by every run)", _shared_overrides(spec)
    warmup = warmup_run(spec)
    if warmup is not None:
        yield "the warm-up run", warmup.overrides
    for scan_value in spec.all_scan_values() or [None]:
        for name, m in {**spec.methods, **spec.variants}.items():
            if scan_value is not None and scan_value not in spec.scan_of(name)[0]:
                continue
            kind = "variant" if name in spec.variants else "method"
            at = f" at {spec.scan_key}={scan_value!r}" if spec.scan_key else ""
            for setting in grid_points(m.grid_for(scan_value)):
                point = ", ".join(f"{k}={v!r}" for k, v in setting.items())
                where = f"{kind} {name!r}{at}" + (f" with {point}" if point else "")
                yield where, run_overrides(spec, name, setting, spec.seeds[0], scan_value)


def check_runs(spec: SweepSpec, sweep_file: str | Path) -> None:
    """Fails on the first run of ``spec`` whose resolved config the trainer would refuse.

    Raises:
      SweepError: ``<sweep file>: <run>: <the trainer's message>``, one line.
    """
    if spec.base_config is None:
        return
    for where, overrides in _runs(spec):
        config = check_overrides(spec.base_config, overrides, where)
        try:
            validate_config(config)
        except ConfigError as e:
            raise SweepError(f"{sweep_file}: {where}: {e}") from None
