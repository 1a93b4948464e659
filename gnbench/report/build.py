"""Sweep folders -> ``report.md`` and PNG figures.

One folder gives ``<folder>/report.md`` with its figures next to it. Several folders give one
report (default ``reports/report.md``) with a section per sweep and a performance profile across
them. The report holds no paths or dates, so the same results always give the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gnbench.report import plots
from gnbench.report.io import atomic_write_text, load_sweep
from gnbench.report.profile import problem_costs, profile
from gnbench.report.results import config_value, sweep_results
from gnbench.report.table import methods_table, settings_table
from gnbench.report.tuning import MethodRow, summarize

TUNING_RULE = (
    "Every method, AdamW included, gets the same treatment: among its hyperparameter settings "
    "the report picks the one with the lowest median iterations-to-target over seeds (a seed "
    "that never reaches the target counts as ∞; a diverged run never reaches it); ties go to the "
    "lower median final validation loss, then to the setting listed first in the sweep. With a "
    "batch-size scan each scan value is tuned on its own."
)
COLUMNS = (
    "Costs are median [min, max] over the seeds of the tuned setting; *reached* counts the seeds "
    "that got to the target. Compute is in forward+backward passes over one micro-batch "
    "(a GN inner step counts its measured cost; line-search passes are included). *Speedup* = "
    "tuned {baseline}'s median / the method's median, per unit (— when the method's median is "
    "∞; >x when {baseline} never reached the target: its spend at the budget / the method's "
    "median, a lower bound). "
    "*p* = one-sided exact Mann-Whitney U test that the method needs fewer iterations than "
    "{baseline} (shown with ≥2 seeds on each side; with 3 vs 3 seeds the smallest possible p is "
    "0.05). Wall-clock depends on what else ran on the machine at the time."
)


def _config_values(results_files: Any, path: str) -> str:
    values = sorted({str(config_value(r.config, path)) for r in results_files if r.config})
    return ", ".join(values) if values else "?"


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
    rows = summarize(results, baseline=baseline)
    h = "#" * level
    done = [r for r in results if r.done]
    diverged = sum(r.status == "diverged" for r in results)
    lines = [
        f"{h} gnbench report: {plan['name']}",
        "",
        f"- Target: validation loss ≤ {target:g} nats/token; the cost to target is read at the "
        "first evaluation at or below it, the same rule for every method and seed.",
        f"- Budget: {_config_values(sweep.runs, 'train.steps')} iterations; evaluation every "
        f"{_config_values(sweep.runs, 'train.eval_every')} iterations.",
        f"- Runs: {len(done)}/{len(results)} done ({diverged} diverged); runs not done are "
        "left out.",
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
        problems.append(sv_rows)
        tag = "" if sv is None else f"_{plan['scan_key'].rsplit('.', 1)[-1]}{sv}"
        title = "Tuned methods" + ("" if sv is None else f" at {plan['scan_key']} = {sv}")
        lines += [
            f"{h}# {title}",
            "",
            methods_table(sv_rows),
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
    if plan.get("scan_key") and rows:
        scan = plots.plot_scan(rows, plan["scan_key"], fig_dir / f"{prefix}scan.png")
        lines += [
            f"{h}# Batch-size scan",
            "",
            "Iterations to target of each tuned method against the tokens one iteration "
            "feeds the optimizer (log-log; bars: min-max over seeds; points not reached are "
            "left out). Where a curve flattens, a bigger batch stops saving iterations: the "
            "critical batch size.",
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
        profiles = {unit: profile(by_method) for unit, by_method in costs.items()}
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
