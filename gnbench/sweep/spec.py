"""Sweep files: what they declare and how they are checked.

A sweep file is a Python file with ``get_sweep()`` (or ``get_sweep(quick=True)`` for a small smoke
variant) returning a dict or ``ml_collections.ConfigDict``::

    {
      "name": "compare_tiny",                # folder <out>/<name>, wandb group
      "base": "tiny.py",                     # experiment config, relative to the sweep file or repo
      "overrides": {"train.steps": 40},      # applied to every run
      "methods": {                           # method -> fixed overrides and a grid to tune
        "adamw": {"overrides": {}, "grid": {"optimizer.learning_rate": [3e-3, 1e-2]},
                  "grid_at": {4: {"optimizer.learning_rate": [1e-3, 3e-3]}}},  # optional:
      },                                     # another grid at some scan values
      "seeds": [0, 1, 2],
      "target_loss": 2.65,                   # optional: sets train.target_loss for every run
      "warmup": {"steps": 10, "overrides": {}},          # optional shared AdamW warm-up run
      "scan": {"key": "data.micro_batches", "values": [4, 8],   # optional batch-size scan;
               "with": {"train.steps": [80, 40]}},              # keys set per scan value
      # a method may scan its own values of the same key (and its own "with"): in its entry,
      # "scan": {"values": [8, 16], "with": {"train.steps": [40, 30]}}; a variant scans as its
      # reference does unless it sets its own
      "baseline": "adamw",                   # optional: the method speedups are measured against
      "full_gn": "gauss_newton",             # optional: the far end of the gap (ratios to it)
      "headline_seeds": [1, 2],              # optional: extra seeds at each headline point
      "variants": {"muon_optax": {"of": "muon"}},   # optional: tuned at the reference's batch
      "reuse": ["critical_batch_tiny"],      # optional: sweeps beside this one whose finished
    }                                        # runs with the same identity are copied, not rerun

Keys are dotted config paths (nested dicts are flattened, so a ConfigDict can spell them nested).
A method without ``optimizer.name`` in its overrides runs the optimizer of the same name; an
outside method (gnbench/optim/outside.py) gets a short name of its own and its entry as
``"overrides": {"optimizer.name": "path/to/my_opt.py:build"}`` (a method's name names its runs'
folders, so it holds no ``:`` or ``/``). Every
override key is checked against the base config: an unknown key, or a value the field cannot
hold, fails before anything runs; :func:`load_sweep_file` then checks every run the sweep can plan
with the trainer's own checks (:mod:`gnbench.sweep.runs_check`), so an unknown method or a value
the trainer would refuse fails too, in one line naming the sweep file.

Two stages. Stage 1 (*tuning*) runs every method at every scan value, every grid point and every
seed of ``seeds``. When the sweep has ``headline_seeds`` or ``variants``, stage 2 is planned from
the finished stage-1 results (:func:`gnbench.sweep.stage2.stage2_runs`):

- ``headline_seeds``: seeds (not in ``seeds``) run only at each method's *headline point*: its
  tuned setting (chosen on the ``seeds`` runs alone) at its best scan value (fewest median
  iterations to target; ties go to fewer tokens per iteration). Without a scan the headline point
  is the tuned setting.
- ``variants``: ``variant -> {"of": method, "overrides": {...}, "grid": {...}}``. A variant is
  another method (``optimizer.name`` defaults to the variant's name, as for methods; its
  ``overrides`` are its own, not the reference's) tuned on its ``grid`` (default: the reference
  method's grid) at its reference's headline scan value only, with ``seeds + headline_seeds``.
  The report compares it with its reference at that batch.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import ml_collections

from gnbench.sweep.files import (  # noqa: F401  (REPO_ROOT, SweepError: imported from here)
    REPO_ROOT,
    SweepError,
    load_config_file,
    read_sweep_file,
    resolve_base,
)
from gnbench.train.validation import suggestion

SCALAR_TYPES = (bool, int, float, str, type(None))
_TOP_KEYS = {
    "name",
    "base",
    "overrides",
    "methods",
    "seeds",
    "warmup",
    "target_loss",
    "scan",
    "baseline",
    "full_gn",
    "headline_seeds",
    "variants",
    "reuse",
}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of a sweep: fixed overrides and the grid of hyperparameters tuned for it."""

    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    grid_at: dict[Any, dict[str, list[Any]]] = dataclasses.field(default_factory=dict)
    # The method's own scan values and their linked keys (None: the sweep's).
    scan_values: list[Any] | None = None
    scan_with: dict[str, list[Any]] | None = None

    def grid_for(self, scan_value: Any) -> dict[str, list[Any]]:
        """The grid tuned at ``scan_value``: ``grid`` with the keys ``grid_at`` sets there."""
        return {**self.grid, **self.grid_at.get(scan_value, {})}


@dataclasses.dataclass(frozen=True)
class VariantSpec(MethodSpec):
    """A variant of a method (``of``): tuned in stage 2 at the reference's headline scan value."""

    of: str = ""


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file (see the module docstring for the meaning of each field)."""

    name: str
    base: Path
    overrides: dict[str, Any]
    methods: dict[str, MethodSpec]
    seeds: list[int]
    target_loss: float | None = None
    warmup_steps: int | None = None
    warmup_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    scan_key: str | None = None
    scan_values: list[Any] = dataclasses.field(default_factory=list)
    scan_with: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    baseline: str = "adamw"
    full_gn: str = "gauss_newton"
    headline_seeds: list[int] = dataclasses.field(default_factory=list)
    variants: dict[str, VariantSpec] = dataclasses.field(default_factory=dict)
    reuse: list[str] = dataclasses.field(default_factory=list)
    # The base experiment's config as loaded (run ids hash it with each run's overrides).
    base_config: ml_collections.ConfigDict | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    @property
    def two_stage(self) -> bool:
        """Whether stage 2 (headline seeds, variants) is planned after stage 1."""
        return bool(self.headline_seeds or self.variants)

    def scan_of(self, name: str) -> tuple[list[Any], dict[str, list[Any]]]:
        """The scan values ``name`` (a method or variant) runs at and the keys linked to them:
        its own, else (a variant) its reference's, else the sweep's."""
        m = self.methods.get(name) or self.variants[name]
        if m.scan_values is None and isinstance(m, VariantSpec):
            m = self.methods[m.of]
        if m.scan_values is None:
            return self.scan_values, self.scan_with
        return m.scan_values, m.scan_with or {}

    def all_scan_values(self) -> list[Any]:
        """Every scan value some method runs at: the sweep's, then the methods' own, in order."""
        values = list(self.scan_values)
        for name in {**self.methods, **self.variants}:
            values += [v for v in self.scan_of(name)[0] if v not in values]
        return values

    def grids(self) -> dict[str, dict[str, list[Any]]]:
        """method or variant -> its grid (key -> values)."""
        return {m: dict(s.grid) for m, s in {**self.methods, **self.variants}.items()}

    def grids_at(self) -> dict[str, dict[str, dict[str, list[Any]]]]:
        """method or variant -> scan value (as a string, as JSON keys are) -> its grid there,
        for the methods whose grid depends on the scan value."""
        return {
            m: {str(sv): s.grid_for(sv) for sv in s.grid_at}
            for m, s in {**self.methods, **self.variants}.items()
            if s.grid_at
        }


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict with dotted keys; non-dict values are leaves.

    Example:
      >>> flatten({"optimizer": {"learning_rate": 1e-3}, "seed": 0})
      {'optimizer.learning_rate': 0.001, 'seed': 0}
    """
    if isinstance(tree, ml_collections.ConfigDict):
        tree = tree.to_dict()
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any], where: str):
    """Applies ``overrides`` to a copy of ``config``; fails naming any key or value it rejects.

    Args:
      config: the base experiment config.
      overrides: dotted key -> scalar value.
      where: where the overrides come from, for the error message.

    Returns:
      The overridden copy of ``config``.

    Raises:
      SweepError: unknown key, non-scalar value, or a value of the wrong type.
    """
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise SweepError(f"unknown config key {key!r} in {where}")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], ml_collections.ConfigDict):
            raise SweepError(f"unknown config key {key!r} in {where}")
        if not isinstance(value, SCALAR_TYPES):
            raise SweepError(f"{where}: {key}={value!r} is not a scalar (bool/int/float/str)")
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise SweepError(f"{where}: {key}={value!r} does not fit the field: {e}") from None
    return config


def _as_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, (list, tuple)) and len(value) > 0:
        return list(value)
    raise SweepError(f"{where} must be a non-empty list, got {value!r}")


def _seeds(value: Any, where: str, empty_ok: bool = False) -> list[int]:
    """A list of distinct integer seeds; fails naming the bad value."""
    if empty_ok and isinstance(value, (list, tuple)) and not value:
        return []
    seeds = _as_list(value, where)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SweepError(f"{where}: seed {s!r} is not an integer >= 0")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise SweepError(f"{where}: seeds {dup} appear more than once")
    return list(seeds)


def _parse_method(
    config: ml_collections.ConfigDict,
    overrides: dict[str, Any],
    method: str,
    m: Any,
    kind: str = "method",
) -> MethodSpec:
    """Checks one method (or variant) entry: its fields, override keys and grid values."""
    if not isinstance(method, str) or not method or any(c in method for c in ":/\\ "):
        label = str(method).rpartition(":")[2].split(".")[-1] or "mine"
        raise SweepError(
            f"{kind} name {method!r} names its runs' folders and cannot hold ':', '/' or spaces; "
            f"name it and give the entry as its optimizer: {{{label!r}: {{'overrides': "
            f"{{'optimizer.name': {method!r}}}}}}}"
        )
    m = dict(m or {})
    extra = set(m) - {"overrides", "grid", "grid_at", "scan"}
    if extra:
        raise SweepError(f"{kind} {method!r}: unknown fields {sorted(extra)}")
    m_over = {"optimizer.name": method, **flatten(m.get("overrides"))}
    check_overrides(config, {**overrides, **m_over}, f"{kind} {method!r} overrides")

    def checked_grid(raw_grid: Any, where: str) -> dict[str, list[Any]]:
        grid = {k: _as_list(v, f"{method} {where} {k}") for k, v in flatten(raw_grid).items()}
        for key, values in grid.items():
            for value in values:
                check_overrides(config, {key: value}, f"{kind} {method!r} {where}")
            dup = [v for i, v in enumerate(values) if v in values[:i]]
            if dup:
                raise SweepError(
                    f"{kind} {method!r} {where} {key}: values {dup} appear more than once"
                )
        return grid

    raw_at = m.get("grid_at") or {}
    if not isinstance(raw_at, dict):
        raise SweepError(f"{kind} {method!r}: grid_at must be {{scan value: grid}}, got {raw_at!r}")
    scan_values = scan_with = None
    if m.get("scan") is not None:
        scan_values, scan_with = _parse_scan_values(m["scan"], f"{kind} {method!r} scan")
    return MethodSpec(
        overrides=m_over,
        grid=checked_grid(m.get("grid"), "grid"),
        grid_at={sv: checked_grid(g, f"grid_at[{sv!r}]") for sv, g in raw_at.items()},
        scan_values=scan_values,
        scan_with=scan_with,
    )


def _parse_scan_values(scan: Any, where: str) -> tuple[list[Any], dict[str, list[Any]]]:
    """A scan's ``values`` and ``with`` (one value per scan value for each linked key)."""
    if not isinstance(scan, dict) or not {"values"} <= set(scan) <= {"key", "values", "with"}:
        raise SweepError(
            f"{where} must be {{'values': [...], 'with': {{...}}}} ('with' optional), got {scan!r}"
        )
    values = _as_list(scan["values"], f"{where} values")
    dup = [v for i, v in enumerate(values) if v in values[:i]]
    if dup:
        raise SweepError(f"{where}: values {dup} appear more than once")
    scan_with = {k: _as_list(v, f"{where} with {k}") for k, v in flatten(scan.get("with")).items()}
    for key, with_values in scan_with.items():
        if len(with_values) != len(values):
            raise SweepError(
                f"{where} with {key}: {len(with_values)} values for {len(values)} scan values "
                f"{values}; give one per scan value"
            )
    return values, scan_with


def parse_sweep(raw: Any, sweep_file: Path) -> SweepSpec:
    """Checks a ``get_sweep()`` result and turns it into a :class:`SweepSpec`.

    Args:
      raw: the dict or ConfigDict ``get_sweep()`` returned.
      sweep_file: the sweep file (relative ``base`` paths start from its folder).

    Returns:
      The checked spec; every override key exists in the base config.

    Raises:
      SweepError: a missing or unknown field, an unknown config key, or a bad value.
    """
    if isinstance(raw, ml_collections.ConfigDict):
        raw = raw.to_dict()
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SweepError(f"unknown sweep fields {sorted(unknown)}; valid: {sorted(_TOP_KEYS)}")
    for field in ("name", "base", "methods", "seeds"):
        if field not in raw:
            raise SweepError(f"sweep file {sweep_file} lacks {field!r}")
    base = resolve_base(str(raw["base"]), sweep_file)
    config = load_config_file(base)
    overrides = flatten(raw.get("overrides"))
    check_overrides(config, overrides, "overrides")
    if not isinstance(raw["methods"], dict) or not raw["methods"]:
        raise SweepError(f"methods must be a non-empty dict, got {raw['methods']!r}")
    methods = {
        method: _parse_method(config, overrides, method, m) for method, m in raw["methods"].items()
    }
    seeds = _seeds(raw["seeds"], "seeds")
    headline_seeds = _seeds(raw.get("headline_seeds") or [], "headline_seeds", empty_ok=True)
    both = sorted(set(seeds) & set(headline_seeds))
    if both:
        raise SweepError(f"headline_seeds {both} are already tuning seeds (seeds={seeds})")
    variants = {}
    raw_variants = raw.get("variants") or {}
    if not isinstance(raw_variants, dict):
        raise SweepError(
            f"variants must be a dict variant -> {{'of': method, ...}}, got {raw_variants!r}"
        )
    for variant, v in raw_variants.items():
        v = dict(v or {})
        if variant in methods:
            raise SweepError(f"variant {variant!r} is also a method; give the variant its own name")
        of = v.pop("of", None)
        if of not in methods:
            raise SweepError(
                f"variant {variant!r}: 'of' must name one of the methods {sorted(methods)}, "
                f"got {of!r}"
            )
        v.setdefault("grid", methods[of].grid)
        v.setdefault("grid_at", methods[of].grid_at)
        m = _parse_method(config, overrides, variant, v, kind="variant")
        variants[variant] = VariantSpec(**vars(m), of=of)
    warmup = raw.get("warmup")
    if warmup and (
        not isinstance(warmup, dict)
        or not {"steps"} <= set(warmup) <= {"steps", "overrides"}
        or isinstance(warmup["steps"], bool)
        or not isinstance(warmup["steps"], int)
    ):
        raise SweepError(
            f"warmup must be {{'steps': N, 'overrides': {{...}}}} ('overrides' optional, N an "
            f"integer), got {warmup!r}"
        )
    target = raw.get("target_loss")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise SweepError(f"target_loss={target!r} must be a number (a validation loss), or None")
    baseline = raw.get("baseline", "adamw")
    if "baseline" in raw and baseline not in methods:
        raise SweepError(
            f"baseline={baseline!r} is not one of the sweep's methods; valid: "
            f"{', '.join(methods)}{suggestion(str(baseline), list(methods))}"
        )
    full_gn = raw.get("full_gn", "gauss_newton")
    if "full_gn" in raw and full_gn not in methods:
        raise SweepError(
            f"full_gn={full_gn!r} is not one of the sweep's methods; valid: "
            f"{', '.join(methods)}{suggestion(str(full_gn), list(methods))}"
        )
    reuse = raw.get("reuse") or []
    if isinstance(reuse, str) or not all(isinstance(r, str) and r for r in reuse):
        raise SweepError(f"reuse must be a list of sweep names, got {reuse!r}")
    spec = SweepSpec(
        name=str(raw["name"]),
        base=base,
        overrides=overrides,
        methods=methods,
        seeds=seeds,
        target_loss=None if raw.get("target_loss") is None else float(raw["target_loss"]),
        warmup_steps=None if not warmup else int(warmup["steps"]),
        warmup_overrides=flatten((warmup or {}).get("overrides")),
        baseline=str(baseline),
        full_gn=str(full_gn),
        headline_seeds=headline_seeds,
        variants=variants,
        reuse=list(reuse),
        base_config=config,
    )
    if spec.target_loss is not None:
        check_overrides(config, {"train.target_loss": spec.target_loss}, "target_loss")
    if warmup:
        check_overrides(config, spec.warmup_overrides, "warmup overrides")
    scan = raw.get("scan")
    if scan:
        if not isinstance(scan, dict) or "key" not in scan:
            raise SweepError(
                f"scan must be {{'key': ..., 'values': [...], 'with': {{...}}}} ('with' "
                f"optional), got {scan!r}"
            )
        values, scan_with = _parse_scan_values(scan, "scan")
        spec = dataclasses.replace(
            spec, scan_key=str(scan["key"]), scan_values=values, scan_with=scan_with
        )
    for name, m in {**spec.methods, **spec.variants}.items():
        own = m.scan_values is not None
        if own and spec.scan_key is None:
            raise SweepError(f"{name!r} has its own scan values but the sweep has no scan key")
        values, scan_with = spec.scan_of(name)
        for i, value in enumerate(values):
            linked = {key: with_values[i] for key, with_values in scan_with.items()}
            check_overrides(config, {**overrides, spec.scan_key: value, **linked}, "scan")
        unknown_at = [sv for sv in m.grid_at if sv not in values]
        if unknown_at:
            raise SweepError(
                f"{name!r} grid_at names {unknown_at}, not scan values "
                f"(scan values: {values or 'none, the sweep has no scan'})"
            )
    return spec


def load_sweep_file(path: str | Path, quick: bool = False) -> SweepSpec:
    """Imports a sweep file, calls ``get_sweep`` and checks the result.

    Args:
      path: the sweep file.
      quick: call ``get_sweep(quick=True)`` (the file must accept ``quick``).

    Returns:
      The checked :class:`SweepSpec`.

    Example:
      >>> spec = load_sweep_file("experiments/compare_tiny.py", quick=True)  # doctest: +SKIP
    """
    path = Path(path).resolve()
    raw = read_sweep_file(path, quick)
    from gnbench.sweep.runs_check import check_runs

    try:
        spec = parse_sweep(raw, path)
    except SweepError as e:
        raise SweepError(e if str(path) in str(e) else f"{path}: {e}") from None
    check_runs(spec, path)
    return spec
