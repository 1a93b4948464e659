"""Stage 2 of a sweep: headline seeds and variants, planned from the finished stage-1 results
(see :mod:`gnbench.sweep.plan` for the stages and the run ids)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gnbench.report.headline import headline_rows
from gnbench.report.io import load_runs
from gnbench.report.results import sweep_results
from gnbench.report.tuning import summarize
from gnbench.sweep.plan import Plan, Run, _check_unique, grid_points, make_run, plan_to_json
from gnbench.sweep.spec import SweepSpec


def stage2_runs(spec: SweepSpec, plan: Plan, sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """The stage-2 runs that the stage-1 results on disk determine so far.

    Reads the stage-1 runs of ``plan`` under ``sweep_dir`` (writes nothing), tunes every method
    with the report's rule on the tuning seeds and takes each method's headline point
    (:func:`gnbench.report.headline.headline_rows`). A method's headline runs (and the variants of
    it) are planned only when every one of its stage-1 runs is done, so results still to come can
    never move them.

    Args:
      spec: the sweep.
      plan: its stage 1 (:func:`make_plan`); stage-2 runs in it are ignored.
      sweep_dir: the sweep folder.

    Returns:
      ``(stage-2 runs in a fixed order, notes on methods whose stage 2 waits)``.
    """
    if not spec.two_stage:
        return [], []
    stage1 = dataclasses.replace(plan, runs=[r for r in plan.runs if r.stage == "tuning"])
    sweep = load_runs(sweep_dir, plan_to_json(stage1))
    pending = {m: 0 for m in spec.methods}
    for r in sweep.runs:
        if r.summary is None:
            pending[r.entry["method"]] += 1
    needed = set(spec.methods if spec.headline_seeds else ()) | {
        v.of for v in spec.variants.values()
    }
    ready = {m for m in needed if pending[m] == 0}
    notes = [
        f"stage 2 of {m} waits for its {pending[m]} stage-1 runs not done yet"
        for m in spec.methods
        if m in needed and m not in ready
    ]
    if not ready:
        return [], notes
    _, results = sweep_results(sweep)
    heads = headline_rows(summarize(results, baseline=spec.baseline, seeds=spec.seeds))
    runs = []
    for method in spec.methods:
        if spec.headline_seeds and method in ready and method in heads:
            head = heads[method]
            runs += [
                make_run(spec, method, head.setting, seed, head.scan_value, "headline")
                for seed in spec.headline_seeds
            ]
    for variant, v in spec.variants.items():
        if v.of in ready and v.of in heads:
            scan_value = heads[v.of].scan_value
            runs += [
                make_run(spec, variant, setting, seed, scan_value, "variant")
                for setting in grid_points(v.grid_for(scan_value))
                for seed in spec.seeds + spec.headline_seeds
            ]
    return runs, notes


def with_stage2(plan: Plan, runs: list[Run]) -> Plan:
    """``plan``'s stage-1 runs followed by the stage-2 ``runs``."""
    runs = [r for r in plan.runs if r.stage == "tuning"] + list(runs)
    _check_unique(runs)
    return dataclasses.replace(plan, runs=runs)
