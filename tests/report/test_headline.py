"""The headline (each method at its own best batch size), critical batch, variants, grid edges and
the tuning seeds, against values worked out by hand from tests/report/fixture.py."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from gnbench.report import (
    GridEdge,
    MethodRow,
    critical_batch,
    grid_edges,
    headline_rows,
    select_best,
    summarize,
    sweep_results,
    variant_rows,
)
from gnbench.report.cli import report_main
from gnbench.report.headline import headline
from gnbench.report.io import load_sweep
from gnbench.report.results import RunResult
from gnbench.report.table import edges_section, fmt_critical, iteration_cost_table
from tests.report.fixture import (
    ADAMW_A,
    ADAMW_B,
    GN_X,
    GN_Y,
    HEADLINE_GRIDS,
    INNER,
    LR,
    write_headline_sweep,
    write_sweep,
)

INF = math.inf


@pytest.fixture
def scan(tmp_path):
    folder = write_headline_sweep(tmp_path / "headline")
    _, results = sweep_results(load_sweep(folder))
    return folder, results, summarize(results, seeds=[0])


def _row(method, setting, tpi=None, steps=(), scan_value=None):
    runs = [
        RunResult(
            f"{method}-{i}", method, setting, i, scan_value, "finished", {"step": s}, 2.0, [], tpi
        )
        for i, s in enumerate(steps)
    ]
    return MethodRow(method, scan_value, setting, runs, {}, 2.0, {}, None)


def test_grid_edges_low_high_interior_and_one_value_grids():
    grids = {"m": {"lr": [0.3, 0.1, 0.01], "wd": [0.0, 0.1], "beta": [0.9], "name": ["a", "b"]}}
    rows = [
        _row("m", {"lr": 0.01, "wd": 0.1, "beta": 0.9, "name": "a"}, scan_value=4, steps=[4]),
        _row("m", {"lr": 0.3, "wd": 0.0}, scan_value=8, steps=[4]),  # grid order is not size
        _row("m", {"lr": 0.1, "beta": 0.9}, scan_value=16, steps=[4]),  # interior; 1-value grid
        _row("m", {"lr": 0.3}, scan_value=32, steps=[math.inf]),  # never reached: not flagged
    ]
    assert grid_edges(rows, grids) == [
        GridEdge("m", 4, "lr", 0.01, "low"),
        GridEdge("m", 4, "wd", 0.1, "high"),
        GridEdge("m", 8, "lr", 0.3, "high"),
        GridEdge("m", 8, "wd", 0.0, "low"),
    ]
    # A grid of its own at one scan value (grid_at in the sweep file, grids_at in plan.json).
    at = {"m": {"8": {"lr": [1.0, 0.3, 0.1], "wd": [0.0, 0.1]}}}
    assert grid_edges(rows[1:2], grids, None, at) == [GridEdge("m", 8, "wd", 0.0, "low")]
    # Without recorded grids the values seen among the method's runs stand in.
    seen = [_row("m", {"lr": v}, steps=[4]) for v in (0.01, 0.1)]
    assert grid_edges(seen[:1], None, [r for row in seen for r in row.runs]) == [
        GridEdge("m", None, "lr", 0.01, "low")
    ]
    assert grid_edges(seen[:1]) == []  # Its own runs only: one value, never an edge.


def test_grid_edges_of_the_headline_fixture(scan):
    _, results, rows = scan
    assert grid_edges(rows, HEADLINE_GRIDS) == [
        GridEdge("muon", 4, LR, 0.03, "high"),
        GridEdge("muon", 8, LR, 0.03, "high"),
        GridEdge("gauss_newton", 16, INNER, 0.01, "high"),
        GridEdge("muon", 16, LR, 0.03, "high"),
        GridEdge("muon_optax", 8, LR, 0.01, "low"),
    ]  # adamw's 3e-3 is interior everywhere; its 1-value weight_decay grid is never flagged.


def test_selection_ignores_headline_seeds(tmp_path):
    # Tuning seed 0: lr 1e-3 reaches at 6, lr 3e-3 at 8. The headline seeds of 1e-3 never reach:
    # counted, they would make its median ∞ and hand the win to 3e-3.
    runs = [
        ("adamw", ADAMW_A, 0, 6, 2.3, "finished"),
        ("adamw", ADAMW_B, 0, 8, 2.3, "finished"),
        ("adamw", ADAMW_A, 1, None, 2.6, "finished", "headline"),
        ("adamw", ADAMW_A, 2, None, 2.6, "finished", "headline"),
    ]
    folder = write_sweep(tmp_path / "sel", runs=runs, seeds=[0], headline_seeds=[1, 2])
    _, results = sweep_results(load_sweep(folder))
    assert select_best(results)[("adamw", None)][0].setting == ADAMW_B  # Counting every seed.
    best = select_best(results, seeds=[0])[("adamw", None)]
    assert best[0].setting == ADAMW_A and sorted(r.seed for r in best) == [0, 1, 2]
    (row,) = summarize(results, seeds=[0])
    assert row.to_target["step"] == (INF, 6, INF) and row.reached == 1
    assert report_main([str(folder)]) == 0
    assert (
        "| adamw | learning_rate=0.001 (edge: low) | 1/3 | ∞ [6, ∞] |"
        in (folder / "report.md").read_text()
    )


def test_headline_picks_the_fewest_iterations_and_breaks_ties_by_fewer_tokens(scan):
    _, _, rows = scan
    heads = headline_rows(rows, exclude={"muon_optax"})
    assert list(heads) == ["adamw", "gauss_newton", "muon"]
    # adamw: 6 iterations at K=8 and K=16 (seed 0); K=8 feeds fewer tokens. Its headline seeds
    # (8, 10 at K=8) would move it to K=16 if they counted.
    assert heads["adamw"].scan_value == 8 and heads["adamw"].setting[LR] == 3e-3
    assert heads["adamw"].to_target["step"] == (8, 6, 10)
    assert heads["gauss_newton"].scan_value == 16 and heads["gauss_newton"].setting == {INNER: 1e-2}
    assert heads["muon"].scan_value == 8 and heads["muon"].setting == {LR: 0.03}
    assert [r.tokens_per_iteration for r in heads.values()] == [1000, 2000, 1000]


def test_critical_batch_interpolates_in_log_log():
    rows = [_row("m", {}, tpi, [s]) for tpi, s in ((500, 10), (1000, 6), (2000, 2))]
    cb = critical_batch(rows)
    # 2 S_min = 4 lies between (1000, 6) and (2000, 2): log B = log 1000 + t log 2 with
    # t = log(4/6) / log(2/6).
    assert cb.kind == "interpolated" and cb.s_min == 2
    assert cb.tokens == pytest.approx(1000 * 2 ** (math.log(2 / 3) / math.log(1 / 3)))
    assert cb.tokens == pytest.approx(1291.5, abs=0.1)
    exact = critical_batch([_row("m", {}, tpi, [s]) for tpi, s in ((500, 8), (1000, 4))])
    assert (exact.kind, exact.tokens) == ("interpolated", 500)
    flat = critical_batch([_row("m", {}, tpi, [s]) for tpi, s in ((500, 6), (1000, 4), (2000, 4))])
    assert (flat.kind, flat.tokens) == ("below", 500) and fmt_critical(flat) == "≤ 500 (smallest)"
    unreached = [_row("m", {}, tpi, [s]) for tpi, s in ((500, INF), (1000, 3), (2000, 2))]
    assert critical_batch(unreached).kind == "between"  # B_crit in (500, 1000]: nothing to
    assert fmt_critical(critical_batch(unreached)) == "in (500, 1k]"  # interpolate from.
    assert critical_batch([_row("m", {}, 500, [INF])]).kind == "undefined"


def test_headline_numbers(scan):
    _, _, rows = scan
    heads = {h.method: h for h in headline(rows, exclude={"muon_optax"})}
    adamw, gn, muon = heads["adamw"], heads["gauss_newton"], heads["muon"]
    # Headline medians: adamw 8 it / 16 GFLOPs, GN 2 it / 20 GFLOPs, muon 4 it / 12 GFLOPs.
    assert adamw.ratio_gn == pytest.approx({"step": 4.0, "flops": 0.8})
    assert gn.ratio_gn == pytest.approx({"step": 1.0, "flops": 1.0})
    assert muon.ratio_gn == pytest.approx({"step": 2.0, "flops": 0.6})
    assert gn.speedup == pytest.approx({"step": 4.0, "flops": 0.8})
    assert muon.speedup == pytest.approx({"step": 2.0, "flops": 16 / 12})
    # [2, 2, 4] vs [6, 8, 10]: 1 split of 20; [4, 4, 6] vs [6, 8, 10]: U = 0.5, 2 splits of 20.
    assert adamw.p_value is None
    assert gn.p_value == pytest.approx(0.05) and muon.p_value == pytest.approx(0.1)
    # Critical batches: adamw (500: 10, 1000: 6, 2000: 6) never needs 12 -> ≤ smallest; GN
    # (10, 6, 2) -> 1000 * 2^(log(2/3)/log(1/3)); muon (10, 4, 6): 2 S_min = 8 between 500 and
    # 1000 -> 500 * 2^(log(8/10)/log(4/10)).
    assert adamw.critical.kind == "below"
    assert gn.critical.tokens == pytest.approx(1000 * 2 ** (math.log(2 / 3) / math.log(1 / 3)))
    assert muon.critical.tokens == pytest.approx(500 * 2 ** (math.log(0.8) / math.log(0.4)))


def test_variants_against_their_reference(scan):
    _, _, rows = scan
    (v,) = variant_rows(rows, {"muon_optax": "muon"})
    assert (v.row.scan_value, v.row.setting) == (8, {LR: 0.01})
    assert v.row.to_target["step"] == (6, 4, 6) and v.ref.to_target["step"] == (4, 4, 6)
    assert v.ratio_gn_ref == pytest.approx({"step": 2.0, "flops": 0.6})
    assert v.ratio_gn_variant == pytest.approx({"step": 3.0, "flops": 0.9})


def test_the_sweep_names_the_far_end_of_the_gap(tmp_path):
    # The same runs with muon as the sweep's full_gn: every ratio divides by muon's median.
    folder = write_headline_sweep(tmp_path / "h", full_gn="muon")
    assert report_main([str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert "ratio to muon at best batches" in text and "(adamw's − muon's)" in text
    assert "| muon | 1k |" in text and "| 1 [1, 1] |" in text  # muon over itself
    _, results = sweep_results(load_sweep(folder))
    heads = headline(summarize(results, seeds=[0]), exclude={"muon_optax"}, full_gn="muon")
    ratios = {h.method: h.ratio_gn["step"] for h in heads}
    assert ratios["muon"] == 1.0 and ratios["gauss_newton"] == pytest.approx(2 / 4)


def test_report_headline_variants_and_edges_sections(scan):
    folder, _, _ = scan
    assert report_main([str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert text.index("## Headline: each method at its own best batch size") < text.index(
        "## Tuning rule"
    )
    assert (
        "| adamw | 1k | learning_rate=0.003, weight_decay=0.1 | 3/3 | 8 [6, 10] | 8k [6k, 10k]"
        " | 16.00G [12.00G, 20.00G] | 16.0 [12.0, 20.0] | 4.00× / 0.80× | 1.00× / 1.00× | — "
        "| ≤ 500 (smallest) |"
    ) in text
    assert (
        "| gauss_newton | 2k | gn.inner_learning_rate=0.01 (edge: high) | 3/3 | 2 [2, 4]"
        " | 6k [6k, 12k] | 20.00G [20.00G, 40.00G] | 10.0 [10.0, 20.0] | 1.00× / 1.00×"
        " | 4.00× / 0.80× | 0.050 | 1.29k |"
    ) in text
    assert (
        "| muon | 1k | learning_rate=0.03 (edge: high) | 3/3 | 4 [4, 6] | 4k [4k, 6k]"
        " | 12.00G [12.00G, 18.00G] | 8.0 [8.0, 12.0] | 2.00× / 0.60× | 2.00× / 1.33× | 0.100"
        " | 592 |"
    ) in text
    assert "## Variants" in text
    assert (
        "| muon_optax | muon | 1k | learning_rate=0.01 (edge: low) | 6 [4, 6] | 3/3 | 4 [4, 6]"
        " | 3/3 | 1.50× | 2.00× → 3.00× | 0.60× → 0.90× |"
    ) in text
    assert "- gauss_newton at data.micro_batches = 16: gn.inner_learning_rate = 0.01" in text
    assert "- Seeds: tuning [0]; headline [1, 2]" in text
    assert (folder / "scan.png").stat().st_size > 1000


def test_no_edges_says_so_and_old_plans_tune_on_every_seed(tmp_path):
    runs = [("gn", s, seed, 4, 2.2, "finished") for s in (GN_X, GN_Y) for seed in (0, 1)]
    folder = write_sweep(tmp_path / "one", runs=runs, grids={"gn": {INNER: [0.003, 0.01, 0.03]}})
    assert report_main([str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert "none: every tuned setting is interior to its grid" in text
    assert "| gn | gn.inner_learning_rate=0.01 | 2/2 |" in text


def test_missing_flops_does_not_crash(tmp_path):
    folder = write_headline_sweep(tmp_path / "noflops", flops=False)
    _, results = sweep_results(load_sweep(folder))
    assert all(math.isnan(r.to_target["flops"]) for r in results)
    assert report_main([str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert (
        "| adamw | 1k | learning_rate=0.003, weight_decay=0.1 | 3/3 | 8 [6, 10] | 8k [6k, 10k]"
        " | — [—, —] |"
    ) in text
    assert "| 4.00× / — | 1.00× / — |" in text
    out = tmp_path / "both" / "report.md"
    plain = write_sweep(tmp_path / "plain", name="plain", flops=False)
    assert report_main([str(folder), str(plain), "--out", str(out)]) == 0
    assert (out.parent / "profile.png").exists()


def test_iteration_cost_table_splits_tokens_and_gives_flops_per_iteration():
    gn = _row("gauss_newton", {"lr": 0.003}, steps=[12, 13])
    # Seeds whose line search took its smallest step on 80% and 40% of iterations: median 60%.
    shares = zip(gn.runs, (0.8, 0.4), strict=True)
    gn.runs[:] = [dataclasses.replace(r, floor_share=f) for r, f in shares]
    old = _row("adamw", {"lr": 0.003}, steps=[40])  # A run from a trainer without the record.
    cost = dict(step_flops=1.5e11, fwd_bwd_flops=3e9, inner_tokens=8192, line_search_tokens=8192)
    summaries = {gn.runs[1].id: {"cost_per_iteration": cost}, old.runs[0].id: {}}
    lines = iteration_cost_table([gn, old], summaries).splitlines()
    assert lines[2] == "| gauss_newton | 8k | 8k | 150.00G | 50.0 | 60% |"
    assert lines[3] == "| adamw | — | — | — | — | — |"
    # At or above half the iterations, the line search's floor is an edge, like a grid's.
    (edge,) = grid_edges([gn], {})
    assert (edge.method, edge.side) == ("gauss_newton", "floor")
    assert edge.value == pytest.approx(0.6)
    assert "took its smallest step size on 60% of iterations" in edges_section([edge])
    gn.runs[:] = [dataclasses.replace(r, floor_share=0.3) for r in gn.runs]
    assert grid_edges([gn], {}) == []


def test_line_search_floor_share_from_training_records():
    from gnbench.report.results import line_search_floor_share

    alphas = [1.0, 0.25, 0.25, 0.5, 0.25000001]
    records = [{"kind": "train", "alpha": a, "alpha_min": 0.25} for a in alphas]
    records.append({"kind": "eval", "alpha": 0.25, "alpha_min": 0.25})  # not a step
    assert line_search_floor_share(records) == pytest.approx(3 / 5)
    # No line search (alpha_min 1) or a method that logs none: no share.
    assert line_search_floor_share([{"kind": "train", "alpha": 1.0, "alpha_min": 1.0}]) is None
    assert line_search_floor_share([{"kind": "train", "loss": 2.0}]) is None


def test_gap_closed_on_the_headline_fixture(scan):
    from gnbench.report.gap import GapRow, closed, gap_rows, gap_table

    _, _, rows = scan
    heads = headline(rows, exclude={"muon_optax"})
    gaps = {g.method: g for g in gap_rows(heads, summaries={})}
    # Headline medians (see test_headline_numbers): adamw 8 it / 16 GFLOPs, GN 2 / 20, muon
    # 4 / 12; muon's seeds [4, 4, 6]: (8-4)/(8-2) = 2/3.
    assert gaps["adamw"].gap["step"][0] == 0 and gaps["gauss_newton"].gap["step"][0] == 1
    value, lo, hi = gaps["muon"].gap["step"]
    assert value == pytest.approx(2 / 3)
    # The interval against the exact bootstrap distribution, enumerated: every resample of each
    # method's 3 seeds (27 each, equally likely), the fraction from the three medians.
    seeds = {h.method: [r.to_target["step"] for r in h.row.runs] for h in heads}
    medians = {
        m: [float(np.median(c)) for c in itertools.product(v, repeat=len(v))]
        for m, v in seeds.items()
    }
    exact = np.array(
        [
            (b - m) / (b - g)
            for b in medians["adamw"]
            for g in medians["gauss_newton"]
            for m in medians["muon"]
            if b > g
        ]
    )
    assert lo <= value <= hi and lo in exact and hi in exact
    assert np.mean(exact < lo) <= 0.05 and np.mean(exact > hi) <= 0.05
    assert np.mean(exact <= lo) >= 0.01 and np.mean(exact >= hi) >= 0.01
    # In FLOPs GN costs more than AdamW (20 G against 16 G): no gap to close, so no fraction.
    assert gaps["muon"].gap["flops"] == (None, None, None)
    assert closed(INF, 8.0, 2.0) == -INF and closed(3.0, INF, 2.0) is None
    assert closed(3.0, 2.0, 2.0) is None and closed(3.0, 2.0, 4.0) is None
    table = gap_table(list(gaps.values()))
    assert f"| muon | — | 0.67 [{lo:.2f}, {hi:.2f}] | — |" in table
    never = gap_table([GapRow("m", {"step": (-INF, -INF, -INF), "flops": (None,) * 3}, None)])
    assert "| m | — | −∞ [−∞, −∞] | — |" in never
    assert gap_rows([h for h in heads if h.method != "gauss_newton"], {}) == []


def test_gap_plot_draws_never_reaching_seeds_and_methods_at_minus_infinity(tmp_path):
    from gnbench.report.gap import GapRow, gap_figure, plot_gap

    none = (None, None, None)
    reached = GapRow("kfac", {"step": (0.4, -INF, 0.6), "flops": none}, 10.0)
    never = GapRow("diag_gn", {"step": (-INF, -INF, -INF), "flops": none}, 2.7)
    fig = gap_figure([reached, never])
    (ax,) = fig.axes
    # Each row with a −∞ (kfac's slowest seed, every diag_gn seed) gets a triangle at the floor,
    # below every finite value drawn, at its own cost per iteration.
    triangles = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert sorted(float(t.get_xdata()[0]) for t in triangles) == [2.7, 10.0]
    floors = {float(t.get_ydata()[0]) for t in triangles}
    assert len(floors) == 1 and floors.pop() < 0
    assert sum(t.get_text() == "−∞" for t in ax.texts) == 2
    path = plot_gap([never], tmp_path / "a.png")
    assert path is not None and path.stat().st_size > 0


def test_interval_rows_flag_an_unresolved_best_batch_and_bootstrap_the_ratios(scan):
    from gnbench.report.intervals import interval_rows, interval_table

    _, _, rows = scan
    heads = headline(rows, exclude={"muon_optax"})
    by = {r.method: r for r in interval_rows(heads, rows)}
    # GN's fewest iterations sit at the largest batch it was scanned at: not resolved.
    assert not by["gauss_newton"].interior and by["adamw"].interior
    steps = {h.method: [r.to_target["step"] for r in h.row.runs] for h in heads}
    ratio = by["muon"].ratio_gn
    assert ratio.value == pytest.approx(np.median(steps["muon"]) / np.median(steps["gauss_newton"]))
    possible = [a / b for a in steps["muon"] for b in steps["gauss_newton"]]
    assert min(possible) <= ratio.lo <= ratio.value <= ratio.hi <= max(possible)
    assert by["gauss_newton"].ratio_gn.value == 1.0
    assert by["muon"].seeds == len(steps["muon"])
    table = interval_table(list(by.values()))
    assert "| gauss_newton |" in table and "**no: largest scanned**" in table
