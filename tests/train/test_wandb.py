"""wandb runs that compare: every unit is an x-axis, the summary holds the cost to the target in
every unit, tags name method, sweep and model, and the config holds the method, the grid point
and only the optimizer sections the method reads. Read back from the offline run files."""

import glob
import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments.base import get_config
from gnbench.cli import parse_train_config
from gnbench.optim import BuildContext, build, known_optimizers
from gnbench.sweep import load_sweep_file, make_plan, run_args
from gnbench.sweep.spec import REPO_ROOT
from gnbench.tracking import STEP_AXIS, UNITS, wandb_summary
from gnbench.train import train
from gnbench.train.identity import (
    config_hash,
    flatten,
    init_from_identity,
    sections_read,
    wandb_config,
)
from tests.optim.test_registry_contract import (
    half_mse,
    linear_apply,
    loss_of,
    ls_slice,
    quadratic_problem,
)
from tests.train.test_trainer import read_metrics
from tests.wandb_records import read_run

GRID_POINT = {"optimizer.learning_rate": 0.003, "data.micro_batches": 2}


# (optimizer, target): AdamW crosses 5.0 within 4 iterations (from ln 256 = 5.55), Muon never
# reaches 1.0, so both branches of the summary are read back.
@pytest.mark.parametrize("name, target", [("adamw", 5.0), ("muon", 1.0)])
def test_offline_run_has_unit_axes_to_target_summary_tags_and_active_config(
    make_config, tmp_path, name, target
):
    cfg = make_config(
        tmp_path,
        **{
            "optimizer.name": name,
            "train.steps": 4,
            "train.eval_every": 1,
            "train.target_loss": target,
            "train.count_flops": True,  # Every unit, FLOPs included, is an axis.
            "wandb.mode": "offline",
            "wandb.group": "sweep-x",
            "wandb.grid_point": json.dumps(GRID_POINT),
        },
    )
    train(cfg)
    files = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "*.wandb"))
    assert len(files) == 1
    run = read_run(files[0])
    metrics = read_metrics(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())

    # Axes: the iteration is the default x-axis of train/* and eval/*; every unit is logged on
    # every row under one name, so each is selectable as x-axis for every metric.
    for glob_name in ("train/*", "eval/*"):
        assert run.metrics[glob_name]["step_metric"] == STEP_AXIS
    assert run.metrics["eval/val_loss"]["summary"] == ["last", "min"]
    assert set(UNITS) <= set(run.metrics)
    by_step = {}
    for m in metrics:
        by_step.setdefault(m["step"], {}).update(m)
    assert [r["_step"] for r in run.rows] == sorted(by_step) == list(range(5))
    for row in run.rows:
        assert row[STEP_AXIS] == row["_step"]
        for unit in UNITS:
            assert row[unit] == pytest.approx(by_step[row["_step"]][unit]), unit

    # Summary: the first evaluation at or below the target, recomputed from metrics.jsonl.
    evals = [m for m in metrics if m["kind"] == "eval"]
    crossing = next((m for m in evals if m["val_loss"] <= target), None)
    assert (crossing is not None) == (name == "adamw")
    assert run.summary["reached_target"] is (crossing is not None)
    assert run.summary["to_target/iterations"] == (crossing and crossing["step"])
    for unit in UNITS:
        want = crossing[unit] if crossing else None
        assert run.summary[f"to_target/{unit}"] == pytest.approx(want), unit
    assert run.summary["best_val_loss"] == pytest.approx(min(m["val_loss"] for m in evals))
    assert run.summary["final_val_loss"] == pytest.approx(evals[-1]["val_loss"])
    assert run.summary["best_val_loss"] == pytest.approx(summary["best_val_loss"])
    assert run.summary["status"] == summary["status"] == "finished"

    # Tags, group and config.
    assert run.tags == [name, "sweep-x", "tiny"] and run.group == "sweep-x"
    assert run.config["method"] == name and run.config["grid_point"] == GRID_POINT
    assert "grid_point" not in run.config["wandb"]
    sections = {k for k, v in run.config["optimizer"].items() if isinstance(v, dict)}
    assert sections == ({"muon"} if name == "muon" else set())
    assert run.config["optimizer"]["learning_rate"] == cfg.optimizer.learning_rate


def test_summary_of_a_run_that_missed_the_target():
    out = wandb_summary(
        dict(status="diverged", steps=3, target_loss=2.0, reached=None, best_val_loss=4.0)
    )
    assert out["reached_target"] is False and out["status"] == "diverged"
    assert all(out[f"to_target/{u}"] is None for u in ("iterations", *UNITS))
    assert out["final_val_loss"] is None and out["best_val_loss"] == 4.0


def _optimizer(name: str, inner: str | None = None) -> ml_collections.ConfigDict:
    cfg = get_config()
    cfg.optimizer.name = name
    if inner is not None:
        cfg.optimizer.gn.inner = inner
    return cfg


@pytest.mark.parametrize(
    "name, inner, want",
    [
        ("adamw", None, set()),
        ("soap", None, {"soap"}),
        ("muon", None, {"muon"}),
        ("muon_optax", None, {"muon"}),
        ("gauss_newton", "adamw", {"gn"}),
        ("gauss_newton", "muon", {"gn", "muon"}),
        ("layerwise_gn", "muon_optax", {"gn", "muon"}),
        ("gn_prox_linear", "adamw", {"gn"}),
    ],
)
def test_wandb_config_keeps_only_the_sections_the_method_reads(name, inner, want):
    config = wandb_config(_optimizer(name, inner))
    got = {k for k, v in config["optimizer"].items() if isinstance(v, dict)}
    assert got == want
    assert config["method"] == name and config["grid_point"] == {}


def test_a_method_not_in_the_table_keeps_every_section():
    opt = get_config().optimizer.to_dict()
    every = {k for k, v in opt.items() if isinstance(v, dict)}
    assert every >= {"soap", "muon", "gn"}
    assert sections_read({**opt, "name": "not_in_the_table"}) == every


def test_bad_grid_point_names_the_value_and_the_form():
    cfg = get_config()
    cfg.wandb.grid_point = "lr=3e-3"
    with pytest.raises(ValueError, match=r"wandb.grid_point='lr=3e-3' is not a JSON object"):
        wandb_config(cfg)


CASES = [(n, None) for n in known_optimizers()] + [
    ("gauss_newton", "muon"),
    ("gauss_newton", "muon_optax"),
]


@pytest.mark.parametrize("name, inner", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_optimizer_builds_and_steps_from_the_sections_wandb_keeps(name, inner):
    # The independent check of the table: a builder reading a dropped section fails here.
    kept = ml_collections.ConfigDict(wandb_config(_optimizer(name, inner))["optimizer"])
    params, batch, ls = quadratic_problem()
    ctx = BuildContext(
        total_steps=4,
        micro_batches=2,
        apply_fn=linear_apply,
        loss_fn=half_mse,
        example_micro_batch=jax.tree.map(lambda a: a[0], batch),
        loss_kind="squared_error",
    )
    opt = build(kept, ctx)
    state = opt.tx.init(params)
    grads = jax.grad(loss_of, argnums=1)(linear_apply, params, batch)
    updates, _ = opt.tx.update(grads, state, params, batch=batch, ls_batch=ls_slice(opt, ls))
    assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))


def test_sweep_passes_each_runs_grid_point_without_changing_its_identity(tmp_path):
    spec = load_sweep_file(REPO_ROOT / "experiments" / "critical_batch_tiny.py")
    plan = make_plan(spec)
    assert plan.scan_key == "data.micro_batches"
    for run in plan.runs[:: max(1, len(plan.runs) // 5)]:  # A few runs across the plan.
        cfg = parse_train_config(run_args(plan, run, tmp_path))
        point = wandb_config(cfg)["grid_point"]
        assert point == {**run.setting, plan.scan_key: run.scan_value}
        flat = flatten(cfg)  # The swept values are the config's own values.
        assert set(run.setting) and all(flat[k] == v for k, v in point.items())
        assert config_hash(cfg, init_from_identity(cfg.train.init_from)) == run.config_hash
