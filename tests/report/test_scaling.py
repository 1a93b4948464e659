"""The batch-scaling fit, the bootstrap intervals, the fractional crossing and the collapse rule,
on synthetic data whose answers are known in closed form."""

import math

import numpy as np
import pytest

from gnbench.report.io import RunFiles
from gnbench.report.results import interpolated_cost, run_result
from gnbench.report.scaling import bootstrap_ratio, bootstrap_scaling, fit_scaling

BATCHES = [1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0]


def _curve(s_min, b_noise, batches=BATCHES):
    return [s_min * (1 + b_noise / b) for b in batches]


def test_fit_recovers_s_min_and_b_noise_from_an_exact_curve():
    fit = fit_scaling(BATCHES, _curve(12.0, 20_000.0))
    assert fit.ok and fit.points == len(BATCHES)
    np.testing.assert_allclose([fit.s_min, fit.b_noise], [12.0, 20_000.0], rtol=1e-10)
    assert fit.predict(20_000.0) == pytest.approx(24.0)


def test_fit_leaves_out_unreached_points_and_refuses_a_curve_that_never_bends():
    steps = _curve(12.0, 3000.0)
    steps[0] = math.inf  # The smallest batch never reached the target.
    fit = fit_scaling(BATCHES, steps)
    assert fit.points == len(BATCHES) - 1
    np.testing.assert_allclose([fit.s_min, fit.b_noise], [12.0, 3000.0], rtol=1e-10)
    # Perfect scaling (S ∝ 1/B) has no S_min: not measured, not a number from the scan's end.
    assert not fit_scaling(BATCHES[:4], [74.0 * 1024 / b for b in BATCHES[:4]]).ok
    # Flat (more batch buys nothing, noise makes the slope negative): B_noise = 0.
    assert fit_scaling([1e3, 2e3, 4e3], [50.0, 51.0, 52.0]).b_noise == 0.0
    assert not fit_scaling([1e3], [50.0]).ok


def _noisy(s_min, b_noise, batches, seeds, sigma, rng):
    return {
        b: list(s * np.exp(sigma * rng.standard_normal(seeds)))
        for b, s in zip(batches, _curve(s_min, b_noise, batches), strict=True)
    }


def test_bootstrap_interval_holds_the_truth_and_tells_resolved_from_not():
    rng = np.random.default_rng(1)
    inside = bootstrap_scaling(_noisy(12.0, 8000.0, BATCHES, 8, 0.05, rng), replicates=500)
    assert inside.s_min.contains(12.0) and inside.b_noise.contains(8000.0)
    assert inside.s_min.hi - inside.s_min.lo < 3.0 and inside.resolved
    # The same method scanned only up to 8k tokens, with B_noise at 20k (gnbench's GN in the
    # 2026-12-01 scan): the interval of B_noise runs past the scan, so the fit is not resolved.
    short = bootstrap_scaling(_noisy(3.5, 20_000.0, BATCHES[:4], 5, 0.05, rng), replicates=500)
    assert short.b_noise.hi > BATCHES[3] and not short.resolved
    # More seeds narrow the interval.
    more = bootstrap_scaling(_noisy(12.0, 8000.0, BATCHES, 64, 0.05, rng), replicates=500)
    assert more.s_min.hi - more.s_min.lo < inside.s_min.hi - inside.s_min.lo
    assert more.replicates.shape == (500, 2)


def test_bootstrap_ratio_covers_the_true_ratio_of_medians():
    rng = np.random.default_rng(0)
    # Constant samples: no spread, the interval is the point.
    r = bootstrap_ratio([20.0] * 5, [10.0] * 5)
    assert (r.value, r.lo, r.hi) == (2.0, 2.0, 2.0)
    # Log-normal iterations with true medians 60 and 12 (ratio 5), 5 seeds each: the 95%
    # percentile interval holds 5 in most of 200 repeated experiments (the percentile bootstrap
    # undercovers a little at 5 seeds; it must not fail often).
    hits = 0
    for i in range(200):
        x = 60.0 * np.exp(0.1 * rng.standard_normal(5))
        y = 12.0 * np.exp(0.1 * rng.standard_normal(5))
        hits += bootstrap_ratio(x, y, replicates=400, seed=i).contains(5.0)
    assert hits >= 160
    # A numerator that never reached the target: the ratio is unbounded.
    never = bootstrap_ratio([math.inf] * 3, [10.0, 11.0, 12.0])
    assert never.value == math.inf and never.hi == math.inf
    assert math.isnan(bootstrap_ratio([10.0], [math.inf]).value)


def test_fractional_crossing_on_a_linear_loss_curve():
    # L(s) = 5 - 0.1 s, evaluated every 3 iterations; 100 tokens and 0.5 s per iteration:
    # L crosses 2.55 at s = 24.5 exactly, between the evaluations at 24 (2.6) and 27 (2.3).
    evals = [
        dict(step=s, tokens=100 * s, wall_clock=0.5 * s, val_loss=5 - 0.1 * s)
        for s in range(0, 40, 3)
    ]
    assert interpolated_cost(evals, 2.55, "step") == pytest.approx(24.5)
    assert interpolated_cost(evals, 2.55, "tokens") == pytest.approx(2450.0)
    assert interpolated_cost(evals, 2.55, "wall_clock") == pytest.approx(12.25)
    assert math.isnan(interpolated_cost(evals, 2.55, "flops"))  # Not recorded: unknown.
    assert interpolated_cost(evals, 0.5, "step") == math.inf  # Never reached.
    assert interpolated_cost(evals, 6.0, "step") == 0.0  # Already there at the first evaluation.


def _run(losses, status="finished", vocab=256):
    records = [dict(kind="eval", step=s, tokens=10 * s, val_loss=v) for s, v in enumerate(losses)]
    entry = dict(id="r", method="m", setting={}, seed=0, scan_value=None)
    config = {"data": {"vocab_size": vocab, "micro_batch": 1, "seq_len": 10, "micro_batches": 1}}
    return run_result(RunFiles(entry, config, {"status": status}, records), target=3.0)


def test_a_collapsed_run_is_a_failure_even_after_reaching_the_target():
    fine = _run([5.6, 4.0, 2.9, 2.5])
    assert fine.status == "finished" and fine.to_target["step"] == pytest.approx(1 + 1 / 1.1)
    # Reached 2.9 <= 3.0, then fell back to uniform predictions over 256 bytes (ln 256).
    uniform = _run([5.6, 4.0, 2.9, math.log(256)])
    assert uniform.status == "collapsed" and uniform.failed and not uniform.reached
    assert all(v == math.inf for v in uniform.to_target.values())
    # Ended worse than it started (a loss that blew up but stayed finite).
    worse = _run([5.6, 2.9, 2.9e10])
    assert worse.status == "collapsed" and worse.to_target["tokens"] == math.inf
    # ln V of another vocabulary is not a collapse at V = 256.
    assert _run([12.0, 4.0, math.log(50257)]).status == "finished"
    assert _run([5.6, 2.9, math.nan], status="diverged").status == "diverged"
