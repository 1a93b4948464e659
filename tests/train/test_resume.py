"""Kill-and-resume: a run SIGKILLed mid-way and restarted reproduces the uninterrupted losses."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnbench.train import train
from gnbench.train.checkpoint import Checkpointer


def flat_overrides(cfg, prefix="config"):
    out = []
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out += flat_overrides(value, f"{prefix}.{key}")
        else:
            out.append(f"--{prefix}.{key}={value}")
    return out


def metric_pairs(workdir):
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in records]


def newest_checkpoint(workdir):
    ckpt = workdir / "ckpt"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.exists() else []
    return max(steps, default=0)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_losses(make_config, tmp_path):
    settings = {
        "train.steps": 12,
        "train.checkpoint_every": 3,
        "train.eval_every": 3,
        "data.micro_batches": 4,
    }
    reference = make_config(tmp_path / "reference", **settings)
    train(reference)

    interrupted = make_config(tmp_path / "interrupted", **settings)
    args = [
        sys.executable,
        "-m",
        "gnbench.cli",
        "train",
        "--config",
        "experiments/tiny.py",
        *flat_overrides(interrupted),
    ]
    proc = subprocess.Popen(
        args,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while newest_checkpoint(tmp_path / "interrupted") < 3 and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (tmp_path / "interrupted" / "summary.json").exists(), "run ended before the kill"

    summary = train(interrupted)  # same config, same workdir: resumes
    assert summary["status"] == "finished"
    got, want = metric_pairs(tmp_path / "interrupted"), metric_pairs(tmp_path / "reference")
    assert [g[:2] for g in got] == [w[:2] for w in want]  # no step lost or repeated
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-6)
    ref_summary = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert summary["tokens"] == ref_summary["tokens"]
    assert summary["final_val_loss"] == ref_summary["final_val_loss"]


def test_checkpointer_keeps_the_last_two(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    for step in (1, 2, 3):
        ckpt.save(step, {"w": jnp.full((2,), float(step))}, {"step": step})
    ckpt.wait()
    assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == [2, 3]
    state, meta = ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})
    assert meta == {"step": 3} and float(state["w"][0]) == 3.0
    ckpt.close()
