"""Sweep folders -> ``report.md`` and PNG figures.

One folder gives ``<folder>/report.md`` with its figures next to it. Several folders give one
report (default ``reports/report.md``) with a section per sweep and a performance profile across
them. The report holds no paths or dates, so the same results always give the same text.

A sweep's section, in order: the headline table (with a batch-size scan: each method at its own
best batch size, its ratio to full GN, speedup over the baseline, p and critical batch), the
variants table (if the sweep has variants), the grid edges (tuned values at the edge of their
grid), the tuning rule, the tuned methods at each scan value with their figures and every
setting tried, and the scan plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gnbench.files import atomic_write_text
from gnbench.report import plots
from gnbench.report.baselines import baseline_line
from gnbench.report.gap import gap_rows, gap_table, plot_gap
from gnbench.report.headline import FULL_GN, headline, variant_rows
from gnbench.report.intervals import interval_rows, interval_table
from gnbench.report.intervals import note as intervals_note
from gnbench.report.io import load_sweep
from gnbench.report.profile import problem_costs, profile
from gnbench.report.results import config_value, sweep_results
from gnbench.report.table import (
    edge_map,
    edges_section,
    headline_table,
    iteration_cost_table,
    methods_table,
    settings_table,
    variants_table,
)
from gnbench.report.tuning import MethodRow, grid_edges, summarize

TUNING_RULE = (
    "Every method, AdamW included, gets the same treatment: at each batch size (scan value) the "
    "report picks, among the method's hyperparameter settings, the one with the lowest median "
    "iterations-to-target over the tuning seeds (a seed that never reaches the target counts as "
    "∞; a diverged run never reaches it); ties go to the earlier median crossing of the target "
    "(interpolated linearly between the evaluations around it), then to the lower median final "
    "validation loss, then to the setting listed first in the sweep. Headline seeds, run "
    "afterwards only at the winning setting, take no part in the choice, so they cannot change "
    "which setting wins; the tuned row then holds every seed of that setting (median, min, max, "
    "reached and p are over all of them). A method's headline point is its tuned setting at its "
    "best batch size: the fewest median iterations-to-target over the tuning seeds, ties going "
    "to the fewer tokens per iteration. A variant is tuned the same way, at its reference's "
    "headline batch only. A tuned value that is the lowest or highest of its grid (a numeric "
    "grid key with at least two values) is marked *(edge: low)* or *(edge: high)*: a value "
    "outside the grid might do better."
)

HEADLINE = (
    "Each method at its own best batch size (its headline point: the tuned setting at the batch "
    "size with the fewest median iterations-to-target over the tuning seeds; ties go to the "
    "fewer tokens per iteration). Costs are median [min, max] over every seed of that point "
    "(tuning and headline seeds); *reached* counts the seeds that got to the target. FLOPs are "
    "the trainer's cumulative FLOPs measured from XLA (— where the records carry none). "
    "*Ratio to full GN* = the method's median / {full_gn}'s median, each at its own headline "
    "point (— without {full_gn}). *Speedup* = {baseline}'s headline median / the method's "
    "(>x: {baseline} never reached the target, its spend at the budget over the method's "
    "median). *p* = one-sided exact Mann-Whitney U test that the method needs fewer iterations "
    "than {baseline} at {baseline}'s headline point (≥2 seeds on each side). *Critical batch* "
    "(McCandlish et al. 2018, An Empirical Model of Large-Batch Training: S = S_min (1 + "
    "B_noise/B), so S = 2 S_min at B = B_crit): the tokens per iteration at which the method's "
    "median iterations-to-target over the tuning seeds is twice its fewest over the scan, "
    "linearly interpolated in log-log between the scanned batches on the small-batch side of "
    "the fewest; ≤ smallest when no scanned batch needs twice the fewest; — when no batch "
    "reached the target."
)
VARIANTS = (
    "Each variant is tuned at its reference's headline batch size with the tuning and headline "
    "seeds; iterations are median [min, max] over the seeds. *Variant / reference* = the "
    "variant's median iterations / the reference's at the same batch. The last columns show how "
    "the reference's headline ratio to full GN (its median / {full_gn}'s) moves when the "
    "variant replaces it."
)
COLUMNS = (
    "Costs are median [min, max] over the seeds of the tuned setting; *reached* counts the seeds "
    "that got to the target. FLOPs are the trainer's cumulative FLOPs measured from XLA (— when "
    "the records carry none). Compute is in forward+backward passes over one micro-batch "
    "(a GN inner step counts its measured cost; line-search passes are included). *Speedup* = "
    "tuned {baseline}'s median / the method's median, per unit (— when the method's median is "
    "∞ or unknown; >x when {baseline} never reached the target: its spend at the budget / the "
    "method's median, a lower bound). "
    "*p* = one-sided exact Mann-Whitney U test that the method needs fewer iterations than "
    "{baseline} (shown with ≥2 seeds on each side; with 3 vs 3 seeds the smallest possible p is "
    "0.05). Wall-clock depends on what else ran on the machine at the time."
)


def _config_values(results_files: Any, path: str) -> str:
    values = {config_value(r.config, path) for r in results_files if r.config}
    numeric = all(isinstance(v, int | float) for v in values)
    ordered = sorted(values) if numeric else sorted(values, key=str)
    return ", ".join(str(v) for v in ordered) if ordered else "?"


def sweep_section(
    folder: str | Path, fig_dir: Path, prefix: str = "", level: int = 1
) -> tuple[str, list[list[MethodRow]]]:
    """The Markdown of one sweep and its figures.

    Args:
      folder: the sweep folder.
      fig_dir: where the PNGs go (the Markdown links them by file name).
      prefix: prepended to figure names (several sweeps in one report).
      level: heading level of the section title.

    Returns:
      ``(markdown, tuned rows per problem)``, a problem being the sweep or one scan value.
    """
    sweep = load_sweep(folder)
    plan = sweep.plan
    target, results = sweep_results(sweep)
    baseline = plan.get("baseline") or "adamw"
    full_gn = plan.get("full_gn") or FULL_GN  # The far end of the gap (the sweep says which).
    seeds = plan.get("seeds") or None  # Older sweeps: every seed tunes.
    variants = dict(plan.get("variants") or {})
    rows = summarize(results, baseline=baseline, seeds=seeds)
    summaries = {r.entry["id"]: r.summary for r in sweep.runs if r.summary}
    edges = grid_edges(rows, plan.get("grids"), results, plan.get("grids_at"))
    marks = edge_map(edges)
    scan_key = plan.get("scan_key")
    h = "#" * level
    done = [r for r in results if r.done]
    diverged = sum(r.status == "diverged" for r in results)
    collapsed = sum(r.status == "collapsed" for r in results)
    lines = [
        f"{h} gnbench report: {plan['name']}",
        "",
        f"- Target: validation loss ≤ {target:g} nats/token; the cost to target is read at the "
        "crossing, interpolated linearly in the loss between the last evaluation above the "
        "target and the first at or below it (in every unit), the same rule for every method "
        "and seed.",
        f"- Budget: {_config_values(sweep.runs, 'train.steps')} iterations; evaluation every "
        f"{_config_values(sweep.runs, 'train.eval_every')} iterations.",
        f"- Runs: {len(done)}/{len(results)} done ({diverged} diverged, {collapsed} collapsed: "
        "ended above their first evaluation or at ln V; both count as never reaching the "
        "target); runs not done are left out.",
    ]
    entropies = baseline_line(sweep.runs, results, target)
    if entropies:
        lines.append(entropies)
    if seeds is not None:
        extra = plan.get("headline_seeds") or []
        lines.append(
            f"- Seeds: tuning {seeds}"
            + (f"; headline {extra} (at each method's headline point only)" if extra else "")
            + "."
        )
    lines.append("")
    if scan_key and rows:
        heads = headline(rows, baseline=baseline, exclude=variants, full_gn=full_gn)
        lines += [
            f"{h}# Headline: each method at its own best batch size",
            "",
            headline_table(heads, marks, baseline),
            "",
            HEADLINE.format(baseline=baseline, full_gn=full_gn),
            "",
            f"{h}## What the headline can claim: scaling fits and 95% intervals",
            "",
            interval_table(interval_rows(heads, rows, full_gn), full_gn),
            "",
            intervals_note(),
            "",
            f"{h}## What one iteration reads and costs, at each method's headline point",
            "",
            iteration_cost_table([hr.row for hr in heads], summaries),
            "",
            "Tokens read per iteration by the gradient (first-order methods) or the inner solve "
            "(the GN family), and by the line search (fresh micro-batches unless the run sets "
            "`optimizer.gn.line_search_data=inner`); FLOPs of one iteration as XLA counts the "
            "compiled step, and the same in forward+backward passes over one micro-batch; the "
            "share of iterations whose line search took its smallest step size (median over "
            "seeds; ≥ 50% is an edge: the search's range limited the step).",
            "",
        ]
        gaps = gap_rows(heads, summaries, baseline, full_gn)
        if gaps:
            lines += [
                f"{h}## Gap closed: how far each method gets from {baseline} to full GN",
                "",
                gap_table(gaps),
                "",
                f"Gap closed = ({baseline}'s iterations (or FLOPs) to target − the method's) / "
                f"({baseline}'s − {full_gn}'s), each method at its own headline point, medians; "
                "0 is the baseline, 1 is full GN; in brackets its 95% bootstrap interval over the "
                "seeds of the method, the baseline and full GN (−∞: seeds that never reached the "
                "target, diverged or collapsed); — where full GN is not "
                f"ahead of {baseline} in that unit (no gap to close).",
                "",
            ]
            figure = plot_gap(gaps, fig_dir / f"{prefix}gap_closed.png")
            if figure is not None:
                lines += [f"![gap closed against cost per iteration]({figure.name})", ""]
    if variants:
        lines += [
            f"{h}# Variants",
            "",
            variants_table(variant_rows(rows, variants, full_gn), marks),
            "",
            VARIANTS.format(full_gn=full_gn),
            "",
        ]
    lines += [
        f"{h}# Grid edges",
        "",
        edges_section(edges, scan_key),
        "",
        f"{h}# Tuning rule",
        "",
        TUNING_RULE,
        "",
    ]
    scan_values = list(dict.fromkeys(r.scan_value for r in rows)) or [None]
    problems = []
    for sv in scan_values:
        sv_rows = [r for r in rows if r.scan_value == sv]
        problems.append([r for r in sv_rows if r.method not in variants])
        tag = "" if sv is None else f"_{scan_key.rsplit('.', 1)[-1]}{sv}"
        title = "Tuned methods" + ("" if sv is None else f" at {scan_key} = {sv}")
        lines += [
            f"{h}# {title}",
            "",
            methods_table(sv_rows, marks),
            "",
            COLUMNS.format(baseline=baseline),
            "",
        ]
        if sv_rows:
            curves = plots.plot_curves(sv_rows, target, fig_dir / f"{prefix}curves{tag}.png")
            hits = plots.plot_to_target(sv_rows, fig_dir / f"{prefix}to_target{tag}.png")
            lines += [
                f"![validation loss]({curves.name})",
                "",
                f"![iterations to target]({hits.name})",
                "",
            ]
        lines += [f"{h}## Every setting tried", "", settings_table(results, sv), ""]
    scan_rows = [r for r in rows if r.method not in variants]
    if scan_key and scan_rows:
        scan = plots.plot_scan(
            scan_rows, scan_key, fig_dir / f"{prefix}scan.png", baseline=baseline
        )
        lines += [
            f"{h}# Batch-size scan",
            "",
            "Iterations to target of each tuned method against the tokens one iteration "
            "feeds the optimizer (log-log; points: median over the tuning seeds, bars: min-max; "
            "points not reached are left out). The dashed grey line is perfect scaling (slope "
            f"−1: twice the batch, half the iterations) through {baseline}'s smallest-batch "
            "point; a hollow marker on a curve is the method's critical batch, where it needs "
            "twice its fewest iterations. Where a curve flattens, a bigger batch stops saving "
            "iterations.",
            "",
            f"![batch-size scan]({scan.name})",
            "",
        ]
    return "\n".join(lines), problems


def write_report(folders: list[str | Path], out: str | Path | None = None) -> Path:
    """Writes the report of one or more sweep folders.

    Args:
      folders: sweep folders (``<out>/<sweep name>``).
      out: the Markdown file; default ``<folder>/report.md`` for one folder, else
        ``reports/report.md``. Figures go next to it.

    Returns:
      The path of the Markdown file.

    Example:
      >>> write_report(["runs/compare_tiny"])  # doctest: +SKIP
      PosixPath('runs/compare_tiny/report.md')
    """
    folders = [Path(f) for f in folders]
    if out is None:
        out = folders[0] / "report.md" if len(folders) == 1 else Path("reports/report.md")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(folders) == 1:
        text, _ = sweep_section(folders[0], out.parent)
    else:
        parts, problems = ["# gnbench report", ""], []
        for folder in folders:
            section, probs = sweep_section(folder, out.parent, prefix=f"{folder.name}_", level=2)
            parts.append(section)
            problems += probs
        costs = problem_costs(problems)
        profiles = {
            unit: profile(by_method)
            for unit, by_method in costs.items()
            if any(math.isfinite(c) for cs in by_method.values() for c in cs)
        }
        fig = plots.plot_profile(profiles, out.parent / "profile.png")
        parts += [
            "## Performance profile",
            "",
            f"Over {len(problems)} problems (each sweep, or each scan value of a scan): "
            "the fraction of problems on which a method's median cost to target is within "
            "a factor τ of the best method's (Dolan-Moré).",
            "",
            f"![profile]({fig.name})",
            "",
        ]
        text = "\n".join(parts)
    atomic_write_text(out, text.rstrip() + "\n")
    return out
