"""``gnbench ladder --method ENTRY``: an optimizer from outside gnbench, placed on the
approximation ladder by ``make ladder``'s protocol, its row printed.

    gnbench ladder --method optax:lion --grid optimizer.learning_rate=1e-4,3e-4,1e-3
    gnbench ladder --method examples/my_optimizers/lion.py:lion \\
        --config examples/my_optimizers/lion_config.py --quick

The sweep is experiments/ladder_tiny.py's (``--quick``: its quick variant) with one more method,
the entry (:mod:`gnbench.optim.outside`), tuned on its own grid at every batch of the scan with
the same seeds, budgets, target and data as every rung. Its sweep, ``<out>/ladder_<name>``
(``_quick``), reuses by identity the finished runs of ``make ladder`` and ``make bench``
(``<out>/ladder_tiny``, ``<out>/critical_batch_tiny``, or their quick variants): the rungs' runs
are the same runs, so only the new method's run when those are there. It runs through the code
``gnbench sweep`` runs (:func:`gnbench.sweep.cli.run_sweep`), writes the sweep's report and
prints the method's row: tokens per iteration at its headline point, iterations, tokens, FLOPs
and wall-clock to target (median [min, max] over its seeds), the gap from AdamW to full GN it
closes with its 95% interval, and its grid edges (also written to ``ladder_row.md``).

``--config FILE``: an experiment config holding the method's own ``optimizer.<section>`` (a
builder that reads one; see examples/my_optimizers/lion_config.py). The sweep runs on it, every
key it shares with the ladder's base (experiments/tiny.py) set back to the ladder's value (each
such key is named on stderr), so the rungs keep their identity; a key it adds outside a new
``optimizer`` section is an error.

``--grid KEY=V1,V2,...`` (repeatable): the method's grid; default AdamW's learning rates
(``optimizer.learning_rate`` 1e-3, 3e-3, 1e-2). ``--quick`` runs the middle value of each, as
the quick ladder does for every rung.
"""

from __future__ import annotations

import argparse
import ast
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from gnbench.files import atomic_write_text
from gnbench.sweep.executors import EXECUTORS, TRAINER_CMD, make_executor
from gnbench.sweep.files import REPO_ROOT, SweepError, load_config_file, read_sweep_file
from gnbench.sweep.spec import SweepSpec, flatten, parse_sweep

LADDER_FILE = REPO_ROOT / "experiments" / "ladder_tiny.py"
LR = "optimizer.learning_rate"
DEFAULT_GRID = {LR: [1e-3, 3e-3, 1e-2]}  # AdamW's grid on the ladder (critical_batch_tiny).
# Keys a --config file may set to anything: they change where files go, not a run's results.
PLUMBING = ("optimizer.name", "train.workdir", "train.progress", "data.dir", "wandb.")
ROW_FILE = "ladder_row.md"


def parse_value(text: str) -> Any:
    """A grid value as Python reads it (numbers, booleans, quoted strings), else the text.

    Example:
      >>> [parse_value(t) for t in ("3e-4", "8", "True", "muon", "'adamw'")]
      [0.0003, 8, True, 'muon', 'adamw']
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["optimizer.learning_rate=1e-4,3e-4"]`` -> ``{"optimizer.learning_rate": [1e-4, 3e-4]}``.

    Raises:
      SweepError: an item without ``=`` or without values.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        parsed = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not parsed:
            raise SweepError(
                f"--grid {item!r} is not KEY=V1,V2,...; give e.g. --grid {LR}=1e-4,3e-4,1e-3"
            )
        grid[key.strip()] = parsed
    return grid


def method_name(entry: str) -> str:
    """The short name of an entry's runs: its attribute (``pkg.opt:build`` -> ``build``).

    Example:
      >>> method_name("examples/my_optimizers/lion.py:lion"), method_name("optax:lion")
      ('lion', 'lion')
    """
    return entry.rpartition(":")[2].split(".")[-1]


def _config_overrides(config_file: Path, base: Path) -> tuple[dict[str, Any], list[str]]:
    """The overrides that set ``config_file``'s keys back to the ladder base's, and a note per
    key whose value they change (plumbing left out)."""
    mine, ladder = flatten(load_config_file(config_file)), flatten(load_config_file(base))
    sections = {k.split(".")[1] for k in ladder if k.startswith("optimizer.") and k.count(".") > 1}
    for key in mine:
        parts = key.split(".")
        new_section = parts[0] == "optimizer" and len(parts) > 2 and parts[1] not in sections
        if key not in ladder and not new_section:
            raise SweepError(
                f"--config {config_file} adds {key}, which the ladder's base {base.name} lacks: "
                "the rungs would not be the ladder's; add only the method's own "
                "optimizer.<section> to the ladder's base config"
            )
    missing = sorted(set(ladder) - set(mine))
    if missing:
        raise SweepError(
            f"--config {config_file} lacks {', '.join(missing[:3])} of the ladder's base "
            f"{base.name}; build it from experiments/tiny.py (as lion_config.py does)"
        )
    overrides, notes = {}, []
    for key, value in mine.items():
        if key in ladder and value != ladder[key]:
            overrides[key] = ladder[key]
            if not key.startswith(PLUMBING):
                notes.append(
                    f"{key}={value!r} in {config_file.name} is the ladder's {ladder[key]!r} here "
                    "(every run shares it; tune the method's with --grid)"
                )
    return overrides, notes


def ladder_sweep(
    entry: str,
    *,
    name: str | None = None,
    config_file: str | Path | None = None,
    grid: dict[str, list[Any]] | None = None,
    quick: bool = False,
) -> tuple[SweepSpec, list[str]]:
    """The ladder's sweep with ``entry`` as one more method, checked, and notes for the user.

    Args:
      entry: the outside method (``pkg.module:attr`` or ``path/to/file.py:attr``).
      name: its short name (default: the entry's attribute).
      config_file: an experiment config with the method's own section (see the module doc).
      grid: its grid (default :data:`DEFAULT_GRID`); ``quick`` keeps the middle value of each key.
      quick: the quick ladder (experiments/ladder_tiny.py ``get_sweep(quick=True)``).

    Returns:
      ``(spec, notes)``: every run checked with the trainer's checks, as ``gnbench sweep`` does.

    Raises:
      SweepError: a bad name, grid, config file or entry (one line).
    """
    from gnbench.sweep.runs_check import check_runs

    raw = dict(read_sweep_file(LADDER_FILE, quick))
    label = name or method_name(entry)
    if label in raw["methods"]:
        raise SweepError(f"--name {label!r} is a rung of the ladder already; give another --name")
    grid = dict(grid or DEFAULT_GRID)
    if quick:
        grid = {k: [v[len(v) // 2]] for k, v in grid.items()}
    notes: list[str] = []
    if config_file is not None:
        config_file = Path(config_file).resolve()
        if not config_file.is_file():
            raise SweepError(f"--config {config_file} does not exist; give an experiment file")
        base = (LADDER_FILE.parent / raw["base"]).resolve()
        overrides, notes = _config_overrides(config_file, base)
        raw["base"] = str(config_file)
        raw["overrides"] = {**overrides, **raw["overrides"]}
    raw["methods"] = {
        **raw["methods"],
        label: {"grid": grid, "overrides": {"optimizer.name": entry}},
    }
    reused = [raw["name"], *raw.get("reuse", [])]
    raw.update(name=f"ladder_{label}" + ("_quick" if quick else ""), reuse=reused)
    spec = parse_sweep(raw, LADDER_FILE)
    check_runs(spec, f"gnbench ladder --method {entry}")
    return spec, notes


def _spread(s: tuple[float, float, float], unit: str) -> str:
    from gnbench.report.table import fmt

    return f"{fmt(s[0], unit)} [{fmt(s[1], unit)}, {fmt(s[2], unit)}]"


def _gap(value: tuple[float | None, float | None, float | None] | None) -> str:
    if value is None or value[0] is None:
        return "—"
    text = lambda x: "—" if x is None else "−∞" if x == -math.inf else f"{x:.2f}"  # noqa: E731
    return f"{text(value[0])} [{text(value[1])}, {text(value[2])}]"


ROW_HEAD = [
    "method",
    "tokens / iteration",
    "best hyperparameters",
    "reached",
    "iterations to target",
    "tokens to target",
    "FLOPs to target",
    "wall-clock (s) to target",
    "gap closed, iterations [95% CI]",
    "gap closed, FLOPs [95% CI]",
    "grid edges",
]


def method_row(sweep_dir: str | Path, method: str) -> str:
    """The method's row of the ladder, as a Markdown table (the report's numbers).

    Its headline point (its best batch), costs to target as median [min, max] over its seeds,
    the gap closed from the baseline (AdamW) to full GN with its 95% bootstrap interval
    (:mod:`gnbench.report.gap`), and its tuned values at a grid edge (``none``: interior).
    """
    from gnbench.report.gap import gap_rows
    from gnbench.report.headline import FULL_GN, headline
    from gnbench.report.io import load_sweep
    from gnbench.report.results import sweep_results
    from gnbench.report.table import edge_map, fmt, fmt_setting, markdown_table
    from gnbench.report.tuning import grid_edges, summarize

    sweep = load_sweep(sweep_dir)
    plan = sweep.plan
    _, results = sweep_results(sweep)
    baseline, full_gn = plan.get("baseline") or "adamw", plan.get("full_gn") or FULL_GN
    rows = summarize(results, baseline=baseline, seeds=plan.get("seeds") or None)
    heads = headline(rows, baseline=baseline, exclude=plan.get("variants") or {}, full_gn=full_gn)
    head = next((h for h in heads if h.method == method), None)
    if head is None:
        return markdown_table(ROW_HEAD, [[method, "no finished runs"] + ["—"] * 9])
    summaries = {r.entry["id"]: r.summary for r in sweep.runs if r.summary}
    gap = {g.method: g.gap for g in gap_rows(heads, summaries, baseline, full_gn)}.get(method, {})
    edges = [e for e in grid_edges(rows, plan.get("grids"), results, plan.get("grids_at"))]
    row = head.row
    marks = edge_map(edges).get((method, row.scan_value))
    scan_key = (plan.get("scan_key") or "scan").rsplit(".", 1)[-1]
    own = [e for e in edges if e.method == method]
    edge_text = "; ".join(
        f"{e.key.removeprefix('optimizer.')}={e.value} {e.side} at {scan_key}={e.scan_value}"
        if e.side != "floor"
        else f"line search at its floor on {e.value:.0%} of iterations at {scan_key}={e.scan_value}"
        for e in own
    )
    cells = [
        method,
        fmt(row.tokens_per_iteration, "tokens"),
        fmt_setting(row.setting, marks),
        f"{row.reached}/{len(row.runs)}",
        *[_spread(row.to_target[u], u) for u in ("step", "tokens", "flops")],
        _spread(row.to_target["wall_clock"], "wall_clock"),
        _gap(gap.get("step")),
        _gap(gap.get("flops")),
        edge_text or "none",
    ]
    return markdown_table(ROW_HEAD, [cells])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gnbench ladder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, help="pkg.module:attr or path/to/file.py:attr")
    p.add_argument("--name", default=None, help="the method's short name (default: attr)")
    p.add_argument("--config", default=None, help="experiment file with the method's section")
    p.add_argument(
        "--grid", action="append", default=[], help=f"KEY=V1,V2,... (default {LR}=1e-3,3e-3,1e-2)"
    )
    p.add_argument("--quick", action="store_true", help="the quick ladder (make ladder-quick)")
    p.add_argument("--executor", default="local", help=f"{', '.join(sorted(EXECUTORS))}")
    p.add_argument("--parallel", type=int, default=None, help="runs at once (default: half)")
    p.add_argument("--out", default="runs", help="root folder of sweeps (default runs)")
    p.add_argument(
        "--trainer-cmd", default=None, help=f"default: {shlex.join(TRAINER_CMD)} (tests: a fake)"
    )
    return p


def main(argv: list[str], trainer_cmd: list[str] | None = None) -> int:
    """Command-line entry of ``gnbench ladder``.

    Returns:
      0 when every run is done (the row printed), 1 when some run failed, 2 for a bad entry,
      option or config file (one line on stderr).
    """
    from gnbench.sweep.cli import run_sweep

    args = _parser().parse_args(argv)
    if args.trainer_cmd:
        trainer_cmd = shlex.split(args.trainer_cmd)
    try:
        if args.parallel is not None and args.parallel < 1:
            raise SweepError(f"--parallel {args.parallel} must be an integer >= 1")
        executor = make_executor(args.executor, trainer_cmd=trainer_cmd, parallel=args.parallel)
        spec, notes = ladder_sweep(
            args.method,
            name=args.name,
            config_file=args.config,
            grid=parse_grid(args.grid),
            quick=args.quick,
        )
    except (SweepError, ValueError) as e:
        print(f"gnbench ladder: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"gnbench ladder: {note}", file=sys.stderr)
    label = args.name or method_name(args.method)
    dry_run = args.executor == "dry-run"
    code = run_sweep(spec, executor, args.out, dry_run=dry_run, prog="gnbench ladder")
    if dry_run or code == 2:
        return code
    sweep_dir = Path(args.out) / spec.name
    row = method_row(sweep_dir, label)
    atomic_write_text(sweep_dir / ROW_FILE, row + "\n")
    print(f"{label} on the ladder ({sweep_dir / 'report.md'}):\n{row}")
    return code
