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


def test_full_study_plans_its_protocol():
    """critical_batch_full: warm start, per-method scans in tokens read, settings scaled with the
    budget, two tuning seeds and five at each headline point, three values per grid."""
    from experiments import critical_batch_full as full

    plan = make_plan(load_sweep_file(REPO_ROOT / "experiments" / "critical_batch_full.py"))
    assert plan.warmup is not None and all(r.init_from for r in plan.runs)
    assert len(plan.seeds) >= 2 and len(plan.seeds) + len(plan.headline_seeds) >= 5
    assert {len(v) for g in plan.grids.values() for v in g.values()} == {3}
    by_method: dict[str, set] = {}
    for r in plan.runs:
        by_method.setdefault(r.method, set()).add(r.scan_value)
        steps = r.overrides["train.steps"]
        if r.method in full.GN_FAMILY:
            # Tokens read per iteration: K for the inner solve and K fresh for the line search.
            gn_budgets = dict(
                zip(full.GN_SCAN["values"], full.GN_SCAN["with"]["train.steps"], strict=True)
            )
            assert steps == gn_budgets[r.scan_value]
        else:
            assert r.overrides["optimizer.warmup_steps"] == max(1, round(steps / 20))
        if r.method == "soap":
            assert r.overrides["optimizer.soap.precondition_frequency"] == max(1, round(steps / 40))
    tokens_read = {
        m: sorted(k * (2 if m in full.GN_FAMILY else 1) for k in ks) for m, ks in by_method.items()
    }
    for m, read in tokens_read.items():  # >= 8x range; GN reaches 128 micro-batches read (64k).
        assert read[-1] >= 8 * read[0], (m, read)
        assert read[-1] >= (128 if m in full.GN_FAMILY else 64), (m, read)
