"""Report numbers against values worked out by hand from the fixture in fixture.py."""

import math

import numpy as np
import pytest

from gnbench.report import (
    UNITS,
    first_crossing,
    mann_whitney_less,
    median,
    select_best,
    spread,
    summarize,
    sweep_results,
)
from gnbench.report.cli import report_main
from gnbench.report.io import load_sweep
from gnbench.report.profile import profile
from tests.report.fixture import ADAMW_A, ADAMW_B, GN_X, GN_Y, RUNS, write_sweep

INF = math.inf


@pytest.fixture
def results(tmp_path):
    target, results = sweep_results(load_sweep(write_sweep(tmp_path / "fixture")))
    assert target == 2.5
    return results


def by(results, method, setting, seed):
    return next(
        r for r in results if r.method == method and r.setting == setting and r.seed == seed
    )


def test_first_crossing_is_the_first_eval_at_or_below_target():
    evals = [
        {"step": 4, "val_loss": 2.4},
        {"step": 0, "val_loss": 5.0},
        {"step": 2, "val_loss": 2.5},
        {"step": 6, "val_loss": float("nan")},
    ]
    assert first_crossing(evals, 2.5)["step"] == 2  # Equal counts; order by step.
    assert first_crossing(evals, 2.3) is None


def test_costs_to_target_in_every_unit(results):
    r = by(results, "adamw", ADAMW_B, 0)
    assert r.status == "finished" and r.reached
    assert r.to_target == {
        "step": 6,
        "tokens": 6000,
        "flops": 12e9,
        "grad_equivalents": 48,
        "wall_clock": 12,
    }
    assert r.final_val_loss == pytest.approx(2.30)
    assert r.tokens_per_iteration == 5 * 25 * 8
    r = by(results, "gn", GN_X, 2)
    assert r.to_target == {
        "step": 6,
        "tokens": 9000,
        "flops": 30e9,
        "grad_equivalents": 60,
        "wall_clock": 15,
    }
    unreached = by(results, "adamw", ADAMW_A, 2)
    assert not unreached.reached and unreached.to_target["step"] == INF
    assert unreached.final_val_loss == pytest.approx(2.55)


def test_diverged_runs_never_reach_the_target(results):
    r = by(results, "gn", GN_Y, 2)  # Crossed at step 2, then diverged.
    assert r.status == "diverged" and r.done and not r.reached
    assert r.to_target["step"] == INF and r.final_val_loss == INF


def test_unfinished_runs_are_incomplete_and_left_out(results):
    r = by(results, "adamw", ADAMW_B, 3)
    assert r.status == "incomplete" and not r.done
    best = select_best(results)
    assert sorted(x.seed for x in best[("adamw", None)]) == [0, 1, 2]


def test_median_and_spread_with_unreached_seeds():
    assert median([8, 10, INF]) == 10
    assert median([6, 8, 10, INF]) == 9
    assert median([4, INF]) == INF
    assert spread([8, 6, 10]) == (8, 6, 10)
    assert spread([2, 4, INF]) == (4, 2, INF)


def test_tuning_rule_lowest_median_iterations_then_final_loss(results):
    best = select_best(results)
    assert best[("adamw", None)][0].setting == ADAMW_B  # Median 8 beats 10.
    assert best[("gn", None)][0].setting == GN_X  # Median 4 both; final 2.20 beats 2.30.


def test_full_tie_goes_to_the_setting_listed_first(tmp_path):
    same = [("gn", GN_Y, s, 4, 2.2, "finished") for s in range(2)]
    same += [("gn", GN_X, s, 4, 2.2, "finished") for s in range(2)]
    _, results = sweep_results(load_sweep(write_sweep(tmp_path / "tie", runs=same)))
    assert select_best(results)[("gn", None)][0].setting == GN_Y


def test_rows_spreads_speedups_and_p_values(results):
    rows = {r.method: r for r in summarize(results)}
    adamw, gn = rows["adamw"], rows["gn"]
    assert adamw.to_target == {
        "step": (8, 6, 10),
        "tokens": (8000, 6000, 10000),
        "flops": (16e9, 12e9, 20e9),
        "grad_equivalents": (64, 48, 80),
        "wall_clock": (16, 12, 20),
    }
    assert gn.to_target == {
        "step": (4, 4, 6),
        "tokens": (6000, 6000, 9000),
        "flops": (20e9, 20e9, 30e9),
        "grad_equivalents": (40, 40, 60),
        "wall_clock": (10, 10, 15),
    }
    assert (adamw.reached, gn.reached) == (3, 3)
    assert adamw.final_loss == pytest.approx(2.35) and gn.final_loss == pytest.approx(2.20)
    assert adamw.speedup == {u: 1 for u in UNITS}
    assert not any(gn.speedup_bound.values())
    assert gn.speedup == pytest.approx(
        {
            "step": 2.0,
            "tokens": 8000 / 6000,
            "flops": 0.8,
            "grad_equivalents": 1.6,
            "wall_clock": 1.6,
        }
    )
    # Pooled [4,4,6 | 6,8,10]: mid-ranks give U = 0.5; 2 of the 20 splits have U <= 0.5.
    assert gn.p_value == pytest.approx(0.1) and adamw.p_value is None


def test_speedup_is_a_lower_bound_when_adamw_never_reaches(tmp_path):
    runs = [("adamw", ADAMW_A, s, None, 2.6, "finished") for s in range(3)]
    runs += [("gn", GN_X, s, 4, 2.2, "finished") for s in range(3)]
    _, results = sweep_results(load_sweep(write_sweep(tmp_path / "slow", runs=runs)))
    gn = {r.method: r for r in summarize(results)}["gn"]
    # AdamW spent its budget (10 iterations: 10000 tokens, 20 GFLOPs, 80 grad-eq, 20 s) without
    # reaching; GN reached at 4 (6000 tokens, 20 GFLOPs, 40 grad-eq, 10 s).
    assert gn.speedup == pytest.approx(
        {
            "step": 10 / 4,
            "tokens": 10000 / 6000,
            "flops": 1.0,
            "grad_equivalents": 2.0,
            "wall_clock": 2.0,
        }
    )
    assert all(gn.speedup_bound.values())
    report_main([str(tmp_path / "slow")])
    assert (
        ">2.50× / >1.67× / >1.00× / >2.00× / >2.00×"
        in (tmp_path / "slow" / "report.md").read_text()
    )


def test_exact_mann_whitney_against_hand_values_and_scipy():
    assert mann_whitney_less([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20)
    assert mann_whitney_less([4, 5, 6], [1, 2, 3]) == pytest.approx(1.0)
    # Pooled [1, ∞ | ∞, ∞] -> mid-ranks [1, 3 | 3, 3]: U = 1; the 3 of 6 splits holding 1 tie.
    assert mann_whitney_less([1, INF], [INF, INF]) == pytest.approx(0.5)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n, m in [(3, 3), (4, 5), (2, 6)]:
        x, y = rng.permutation(20)[:n] * 1.0, rng.permutation(20)[:m] + 0.5  # No ties.
        ref = stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue
        assert mann_whitney_less(x, y) == pytest.approx(ref)


def test_performance_profile_by_hand():
    p = profile({"a": [10.0, 30.0, INF], "b": [20.0, 15.0, 5.0]})
    taus, rho_a = p["a"]
    assert taus.tolist() == [1.0, 2.0, 2.1]
    assert rho_a.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert p["b"][1].tolist() == pytest.approx([2 / 3, 1.0, 1.0])


def test_report_markdown_and_figures(tmp_path):
    folder = write_sweep(tmp_path / "fixture")
    assert report_main([str(folder)]) == 0
    text = (folder / "report.md").read_text()
    # No grids in this plan: the values seen among the runs are the grids, so both tuned values
    # sit on an edge.
    assert (
        "| gn | gn.inner_learning_rate=0.01 (edge: low) | 3/3 | 4 [4, 6] | 6k [6k, 9k]"
        " | 20.00G [20.00G, 30.00G] | 40.0 [40.0, 60.0] | 10.0 [10.0, 15.0] | 2.200"
        " | 2.00× / 1.33× / 0.80× / 1.60× / 1.60× | 0.100 |"
    ) in text
    assert "| adamw | learning_rate=0.003 (edge: high) | 3/3 | 8 [6, 10] |" in text
    assert "Runs: 12/13 done (1 diverged, 0 collapsed" in text and "Tuning rule" in text
    for png in ("curves.png", "to_target.png"):
        assert (folder / png).stat().st_size > 1000


def test_scan_and_profile_over_several_sweeps(tmp_path):
    runs = [
        (
            m,
            {**s, "data.micro_batches": k},
            seed,
            reach and reach * 8 // k // 2 * 2 or reach,
            final,
            status,
        )
        for k in (4, 8)
        for (m, s, seed, reach, final, status) in RUNS
    ]
    scan = write_sweep(tmp_path / "scan", runs=runs, name="scan", scan_key="data.micro_batches")
    slow = write_sweep(tmp_path / "slow", name="slow", scale={"gn": 3.0})
    out = tmp_path / "all" / "report.md"
    assert report_main([str(scan), str(slow), "--out", str(out)]) == 0
    text = out.read_text()
    assert "at data.micro_batches = 4" in text and "at data.micro_batches = 8" in text
    assert "Performance profile" in text and "Over 3 problems" in text
    for png in ("profile.png", "scan_scan.png", "slow_curves.png"):
        assert (out.parent / png).exists(), png
    assert report_main([str(tmp_path / "nowhere")]) == 2


def test_ties_at_one_evaluation_go_to_the_earlier_interpolated_crossing():
    from gnbench.report.results import RunResult, interpolated_crossing

    def run(setting, losses):
        evals = [dict(step=i, val_loss=v) for i, v in enumerate(losses)]
        return RunResult(
            id=setting, method="m", setting={"lr": setting}, seed=0, scan_value=None,
            status="finished", to_target={"step": 2.0}, final_val_loss=losses[-1],
            evals=evals, tokens_per_iteration=None,
            crossing_step=interpolated_crossing(evals, 2.5),
        )  # fmt: skip

    fast = run("fast", [3.0, 2.55, 2.40, 2.45])  # Crosses 2.5 at 1.33; higher final loss.
    slow = run("slow", [3.0, 2.60, 2.49, 2.30])  # Crosses it at 1.91.
    assert fast.crossing_step == pytest.approx(1 + 0.05 / 0.15)
    assert slow.crossing_step == pytest.approx(1 + 0.10 / 0.11)
    assert select_best([slow, fast])[("m", None)][0].setting == {"lr": "fast"}
    assert interpolated_crossing([dict(step=0, val_loss=3.0)], 2.5) == math.inf
