"""Every registered optimizer trains the tiny model through the trainer and survives a resume
(1 device); two of them also on several devices (data-parallel, sharded state, checkpoint)."""

import shutil

import numpy as np
import pytest

from gnbench.optim import known_optimizers
from gnbench.train import train
from tests.train.test_trainer import read_metrics


def train_and_resume(make_config, tmp_path, name, **overrides):
    """Trains 4 iterations (checkpoints at 2 and 4), checks the loss falls, deletes everything
    after iteration 2 and reruns: the rerun restores parameters, optimizer state (SOAP bases, GN
    warm start) and data position from the step-2 checkpoint and must retrace the run. The
    first run is the uninterrupted reference and the source of the step-2 checkpoint at once."""
    cfg = make_config(
        tmp_path,
        **{
            "optimizer.name": name,
            "train.steps": 4,
            "train.checkpoint_every": 2,
            "optimizer.soap.precondition_frequency": 2,  # a basis refresh inside the run
            **overrides,
        },
    )
    summary = train(cfg)
    assert summary["status"] == "finished", summary
    first = read_metrics(tmp_path)
    evals = [r["val_loss"] for r in first if r["kind"] == "eval"]
    assert evals[-1] < evals[0] - 0.3, evals

    shutil.rmtree(tmp_path / "ckpt" / "4")
    (tmp_path / "summary.json").unlink()
    again = train(cfg)
    second = read_metrics(tmp_path)
    assert [(r["kind"], r["step"]) for r in second] == [(r["kind"], r["step"]) for r in first]
    key = lambda r: r.get("loss", r.get("val_loss"))  # noqa: E731
    np.testing.assert_allclose([key(r) for r in second], [key(r) for r in first], rtol=0, atol=1e-5)
    assert again["final_val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", known_optimizers())
def test_optimizer_trains_and_resumes_from_its_checkpoint(name, make_config, tmp_path):
    train_and_resume(make_config, tmp_path, name)


@pytest.mark.slow
# AdamW on all 8 devices with its state sharded (fsdp=2 x data=4); SOAP data-parallel on 2 (its
# eigendecompositions run replicated on every device: 8 would cost 4x the work of 2).
@pytest.mark.multidevice
@pytest.mark.parametrize(
    "name, mesh",
    [("adamw", {"mesh.fsdp": 2}), ("soap", {"mesh.num_devices": 2})],
    ids=["adamw-fsdp2x4", "soap-2"],
)
def test_optimizer_trains_and_resumes_on_several_devices(name, mesh, make_config, tmp_path):
    train_and_resume(make_config, tmp_path, name, **mesh)
