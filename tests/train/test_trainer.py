"""The trainer: data-parallel equivalence, FSDP, errors, target crossing, divergence, wandb."""

import glob
import json

import numpy as np
import optax
import pytest

from gnbench.cli import parse_train_config
from gnbench.model import get_model_config
from gnbench.model.sharding import FSDP, make_mesh
from gnbench.optim import BuildContext, build
from gnbench.train import train
from gnbench.train.state import create_state
from gnbench.train.validation import ConfigError
from tests.wandb_records import history_and_config


def read_metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def losses(records, kind="train", key="loss"):
    return [r[key] for r in records if r["kind"] == kind]


@pytest.mark.multidevice
def test_eight_devices_data_parallel_equals_one_device(make_config, tmp_path):
    one = train(make_config(tmp_path / "one", **{"mesh.num_devices": 1, "train.steps": 4}))
    eight = train(make_config(tmp_path / "eight", **{"mesh.num_devices": 8, "train.steps": 4}))
    assert one["status"] == eight["status"] == "finished"
    m1, m8 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "eight")
    np.testing.assert_allclose(losses(m1), losses(m8), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        losses(m1, "eval", "val_loss"), losses(m8, "eval", "val_loss"), rtol=0, atol=1e-5
    )
    assert len(losses(m1)) == 4


@pytest.mark.multidevice
def test_fsdp_shards_parameters_and_optimizer_state(make_config):
    cfg = make_config("unused")
    model_cfg = get_model_config("tiny")
    opt = build(cfg.optimizer, BuildContext(total_steps=4, micro_batches=2))
    mesh = make_mesh(data=2, fsdp=4)
    state, _ = create_state(model_cfg, opt.tx, mesh, seed=0)
    kernel = state.params["block_0"]["up"]["kernel"]
    assert FSDP in tuple(kernel.sharding.spec), kernel.sharding.spec
    mu_kernel = optax.tree_utils.tree_get(state.opt_state, "mu")["block_0"]["up"]["kernel"]
    assert mu_kernel.sharding == kernel.sharding
    assert kernel.addressable_shards[0].data.size * 4 == kernel.size


def test_loss_falls_and_target_crossing_is_first_eval_at_or_below(make_config, tmp_path):
    target = 4.5  # ln(256) = 5.55 at initialization; crossed after a few steps
    settings = {"train.steps": 6, "train.target_loss": target}
    summary = train(make_config(tmp_path, **settings, **{"train.count_flops": True}))
    records = read_metrics(tmp_path)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4, 6]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert summary["final_val_loss"] == pytest.approx(evals[-1]["val_loss"])
    expected = next(r for r in evals if r["val_loss"] <= target)
    assert expected["step"] > 0
    assert summary["reached"]["step"] == expected["step"]
    for unit in ("tokens", "flops", "grad_equivalents", "wall_clock"):
        assert summary["reached"][unit] == pytest.approx(expected[unit])
    assert expected["tokens"] == expected["step"] * 2 * 8 * 16  # iterations x K x b x T
    cost = summary["cost_per_iteration"]
    assert cost["source"] == "XLA cost analysis"
    assert expected["flops"] == pytest.approx(expected["step"] * cost["step_flops"])
    assert expected["grad_equivalents"] == pytest.approx(expected["flops"] / cost["fwd_bwd_flops"])
    # K=2 forward+backward passes, plus the gradient average and the AdamW update (which each
    # device repeats: XLA counts every device's program).
    assert 2.0 < expected["grad_equivalents"] / expected["step"] < 2.5
    assert all(r["val_bpb"] == pytest.approx(r["val_loss"] / np.log(2)) for r in evals)
    # Dense evaluation near the target: with a margin that step 2's loss is within (step 0's is
    # not), every iteration after step 2 is evaluated; training and the shared losses are the
    # same run's.
    margin = evals[1]["val_loss"] - target + 1e-3
    assert evals[0]["val_loss"] > target + margin
    dense = {"train.steps": 6, "train.target_loss": target, "train.eval_dense_margin": margin}
    train(make_config(tmp_path / "dense", **dense))
    dense_evals = [r for r in read_metrics(tmp_path / "dense") if r["kind"] == "eval"]
    assert [r["step"] for r in dense_evals] == [0, 2, 3, 4, 5, 6]
    by_step = {r["step"]: r["val_loss"] for r in dense_evals}
    for r in evals:
        assert by_step[r["step"]] == pytest.approx(r["val_loss"], abs=1e-6)

    # train.count_flops=False: the same run, the same losses, no FLOPs anywhere.
    uncounted = train(make_config(tmp_path / "uncounted", **settings))
    bare = read_metrics(tmp_path / "uncounted")
    assert [
        {k: v for k, v in r.items() if k not in ("flops", "grad_equivalents", "wall_clock")}
        for r in bare
    ] == [
        {k: v for k, v in r.items() if k not in ("flops", "grad_equivalents", "wall_clock")}
        for r in records
    ]
    assert not any("flops" in r or "grad_equivalents" in r for r in bare)
    assert uncounted["flops"] is uncounted["grad_equivalents"] is None
    assert uncounted["cost_per_iteration"] is None
    assert uncounted["reached"]["step"] == summary["reached"]["step"]
    assert uncounted["reached"]["flops"] is None


def test_stop_at_target_stops_early(make_config, tmp_path):
    summary = train(
        make_config(tmp_path, **{"train.target_loss": 100.0, "train.stop_at_target": True})
    )
    assert summary["reached"]["step"] == 0
    assert summary["steps"] == 0  # reached before any training: nothing to do


def test_diverging_run_is_marked_diverged(make_config, tmp_path):
    summary = train(
        make_config(
            tmp_path,
            **{
                "optimizer.learning_rate": 1e9,
                "optimizer.grad_clip": 0.0,
                "optimizer.warmup_steps": 0,
                "optimizer.schedule": "constant",
                "train.steps": 6,
            },
        )
    )
    assert summary["status"] == "diverged"
    assert summary["reached"] is None


def test_finished_run_returns_at_once(make_config, tmp_path):
    cfg = make_config(tmp_path, **{"train.steps": 2})
    first = train(cfg)
    before = (tmp_path / "metrics.jsonl").read_text()
    assert train(cfg) == first
    assert (tmp_path / "metrics.jsonl").read_text() == before


@pytest.mark.multidevice
def test_batch_not_divisible_by_devices_fails(make_config, tmp_path):
    with pytest.raises(ValueError, match=r"data.micro_batch=12 is not divisible by the 8 devices"):
        train(make_config(tmp_path, **{"data.micro_batch": 12}))


def test_unknown_model_fails_listing_models(make_config, tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'gpt5'; known models: tiny"):
        train(make_config(tmp_path, **{"model.name": "gpt5"}))


def test_unknown_optimizer_fails_listing_optimizers(make_config, tmp_path):
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'; known optimizers: .*adamw"):
        train(make_config(tmp_path, **{"optimizer.name": "lion"}))


def test_unknown_config_key_fails_naming_it():
    with pytest.raises(ConfigError, match="'optimizer.learning_rat' .*'optimizer.learning_rate'"):
        parse_train_config(
            ["--config", "experiments/tiny.py", "--config.optimizer.learning_rat=1.0"]
        )


def test_config_overrides_are_typed():
    cfg = parse_train_config(
        [
            "--config",
            "experiments/tiny.py",
            "--config.train.steps=7",
            "--config.optimizer.learning_rate=0.01",
        ]
    )
    assert cfg.train.steps == 7 and cfg.optimizer.learning_rate == 0.01


def test_wandb_offline_run_holds_config_group_and_metrics(make_config, tmp_path):
    cfg = make_config(
        tmp_path, **{"wandb.mode": "offline", "wandb.group": "sweep-x", "train.steps": 2}
    )
    train(cfg)
    files = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "*.wandb"))
    assert len(files) == 1
    rows, config, group = history_and_config(files[0])
    assert group == "sweep-x"
    assert config["optimizer"]["name"] == "adamw"
    train_rows = [r for r in rows if "train/loss" in r]
    metrics = read_metrics(tmp_path)
    np.testing.assert_allclose([r["train/loss"] for r in train_rows], losses(metrics), rtol=1e-6)
    assert [r["tokens"] for r in train_rows] == [  # Units are unprefixed: one x-axis for all.
        r["tokens"] for r in metrics if r["kind"] == "train"
    ]
    assert any("eval/val_loss" in r for r in rows)
