"""The sweep files in experiments/ plan without error, with keys the base config knows."""

import pytest

from gnbench.sweep import load_sweep_file, make_plan
from gnbench.sweep.spec import REPO_ROOT


@pytest.mark.parametrize("name", ["compare_tiny", "critical_batch_tiny"])
@pytest.mark.parametrize("quick", [False, True])
def test_experiment_sweeps_plan(name, quick):
    plan = make_plan(load_sweep_file(REPO_ROOT / "experiments" / f"{name}.py", quick=quick))
    ids = [r.id for r in plan.runs]
    assert len(ids) == len(set(ids)) > 0
    assert plan.target_loss is not None
    if name == "critical_batch_tiny":
        assert plan.scan_key == "data.micro_batches"
        assert plan.headline_seeds and set(plan.variants) == {"muon_optax"}
        # The same grid size for every method, and >= 4 batches spanning >= 8x when not quick.
        sizes = {len(next(iter(g.values()))) for g in plan.grids.values()}
        assert len(sizes) == 1
        values = sorted({r.scan_value for r in plan.runs})
        assert quick or (len(values) >= 4 and values[-1] >= 8 * values[0] and sizes == {3})
        assert quick or len(plan.headline_seeds) >= 2
    if name == "compare_tiny" and not quick:
        assert {r.method for r in plan.runs} == {
            "adamw",
            "muon",
            "soap",
            "gauss_newton",
            "gn_prox_linear",
            "layerwise_gn",
        }
        assert len(ids) == 27
