"""Every registered optimizer trains the tiny model through the trainer and survives a resume."""

import shutil

import numpy as np
import pytest

from gnbench.optim import known_optimizers
from gnbench.train import train
from tests.train.test_trainer import read_metrics

# K-FAC's and SOAP's eigendecompositions run replicated on every device, so on the 8 fake CPU
# devices they do 8x the work of one (SOAP: 110 s against 30 s on 2 devices, warm compilation
# cache, slow machine). K-FAC runs on one device; SOAP on two, which keeps it data-parallel
# through the trainer and the checkpoint.
FEWER_DEVICES = {"kfac": 1, "soap": 2}


@pytest.mark.parametrize("name", known_optimizers())
def test_optimizer_trains_and_resumes_from_its_checkpoint(name, make_config, tmp_path):
    cfg = make_config(
        tmp_path,
        **{
            "optimizer.name": name,
            "train.steps": 4,
            "train.checkpoint_every": 2,
            "optimizer.soap.precondition_frequency": 2,  # a basis refresh inside the run
            **({"mesh.num_devices": FEWER_DEVICES[name]} if name in FEWER_DEVICES else {}),
        },
    )
    summary = train(cfg)
    assert summary["status"] == "finished", summary
    first = read_metrics(tmp_path)
    evals = [r["val_loss"] for r in first if r["kind"] == "eval"]
    assert evals[-1] < evals[0] - 0.3, evals

    # Lose everything after step 2: the rerun restores parameters, optimizer state (SOAP bases,
    # GN warm start) and data position from the step-2 checkpoint and must retrace the run.
    shutil.rmtree(tmp_path / "ckpt" / "4")
    (tmp_path / "summary.json").unlink()
    again = train(cfg)
    second = read_metrics(tmp_path)
    assert [(r["kind"], r["step"]) for r in second] == [(r["kind"], r["step"]) for r in first]
    key = lambda r: r.get("loss", r.get("val_loss"))  # noqa: E731
    np.testing.assert_allclose([key(r) for r in second], [key(r) for r in first], rtol=0, atol=1e-5)
    assert again["final_val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)
