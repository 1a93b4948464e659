"""The approximation ladder (``make ladder``): how much of the AdamW-to-full-GN gap each structured
approximation of the same Gauss-Newton matrix closes, each rung at its own critical batch.

    gnbench sweep experiments/ladder_tiny.py --parallel 2           # make ladder
    gnbench sweep experiments/ladder_tiny.py --quick --parallel 2   # make ladder-quick

Rungs (docs/METHOD.md, "The approximation ladder"): AdamW (no curvature) → ``diag_gn`` (the
diagonal of G = Jᵀ H_z J, sampled-label estimate) → ``kfac`` (Kronecker-factored G, kfac-jax) →
``layerwise_gn`` (exact G per block) → ``gauss_newton`` (all of G); controls: SOAP (Kronecker
structure of gradient statistics, not of G) and ``gn_kfac`` (full GN whose inner solver is
K-FAC-preconditioned: how much of what remains is the inner solver rather than the curvature;
its factors of G at θ_t are refreshed once per outer step, ``gn.inner_kfac_refresh='outer'``).

The protocol is ``make bench``'s (experiments/critical_batch_tiny.py): the same scan of K, the
same budgets, target and data, every rung tuned at every batch on a grid of three learning rates,
seeds 1 and 2 at each rung's headline point. AdamW, SOAP, full GN and layerwise GN are the very
runs of ``make bench`` (same identity), so with ``reuse`` they are copied from
``runs/critical_batch_tiny`` when it holds them, not rerun.
"""

from experiments import critical_batch_tiny as bench

INNER_LR, LR = bench.INNER_LR, bench.LR
SHARED = ("adamw", "soap", "gauss_newton", "layerwise_gn")
# Pilots at K=8 (seed 0, budget 80, target 2.5, 2026-12-01). diag_gn on [1e-3, 3e-3, 1e-2] was
# best at the top edge (2.73 at 80 iterations, target not reached), so its grid moved up one
# decade; on the new grid 3e-2 is interior (2.73 at iteration 53, ahead of 1e-2 and 1e-1).
# kfac: exact inverses of the damped blocks reached 2.5 at 3e-3 in 48 iterations; factored
# (π-adjusted) damping, classic K-FAC, reached it at 1e-2 in 46 (3e-3: 2.51 at 67) at half the
# CPU time per iteration (its eigendecompositions of 50 factors dominate the exact variant), so
# the ladder runs factored damping. Refreshing the inverses every 5 or 20 steps instead of every
# step diverged (val 5.6 -> 37 from step 3 on): the factors change fastest at the start.
NEW_GRIDS = {
    "diag_gn": {LR: [1e-2, 3e-2, 1e-1]},
    "kfac": {LR: [3e-3, 1e-2, 3e-2]},
    "gn_kfac": {INNER_LR: [3e-3, 1e-2, 3e-2]},
}
# Where a full scan (2026-12-01, seed 0, the grids above) tuned a new rung to a grid edge, its
# grid moves one step that way at that batch. First scan: kfac at K=8 (3e-2: 40 iterations, the
# top), gn_kfac at K=2 and 4 (3e-3, the bottom: 52 and 66 iterations). Second: kfac at K=16
# (3e-2, the top: 36), gn_kfac at K=4 again (1e-3, the new bottom: 36). Third (gn_kfac
# refreshing its factors once per outer step): gn_kfac reached the target at no rate of
# [3e-3, 1e-2, 3e-2] at K=8 and 16 (all three stalled or diverged, as 3e-3 did at K=4), so
# those grids moved down to K=4's; there 3e-4 won at both (35 and 20 iterations), the bottom,
# so they moved down once more.
LOWER = {INNER_LR: [1e-4, 3e-4, 1e-3]}
NEW_GRID_AT = {
    "kfac": {8: {LR: [1e-2, 3e-2, 1e-1]}, 16: {LR: [1e-2, 3e-2, 1e-1]}},
    "gn_kfac": {
        2: {INNER_LR: [1e-3, 3e-3, 1e-2]},
        4: {INNER_LR: [3e-4, 1e-3, 3e-3]},
        8: LOWER,
        16: LOWER,
    },
}
FACTORED = {"optimizer.kfac.exact_inverses": False}
OVERRIDES = {
    "kfac": FACTORED,
    "gn_kfac": {"optimizer.name": "gauss_newton", "optimizer.gn.inner": "kfac", **FACTORED},
}


def _methods(grids: dict) -> dict:
    return {
        m: {
            "grid": g,
            "grid_at": {**bench.GRID_AT, **NEW_GRID_AT}.get(m, {}),
            "overrides": OVERRIDES.get(m, {}),
        }
        for m, g in grids.items()
    }


def get_sweep(quick: bool = False) -> dict:
    grids = {**{m: bench.GRIDS[m] for m in SHARED}, **NEW_GRIDS}
    spec = bench.get_sweep(quick)
    if quick:
        methods = {
            m: {"grid": {k: [v[1]] for k, v in g.items()}, "overrides": OVERRIDES.get(m, {})}
            for m, g in grids.items()
        }
        name = "ladder_tiny_quick"
    else:
        methods = _methods(grids)
        name = "ladder_tiny"
    spec.update(name=name, methods=methods, variants={}, reuse=[bench.get_sweep(quick)["name"]])
    return spec
