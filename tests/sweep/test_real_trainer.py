"""End to end: a 2-run sweep with the real trainer (`gnbench train`), 2 iterations each, from a
shared AdamW warm-up run, logging to wandb offline: both runs start from the warm-up's
parameters, share the sweep's group and carry the config and every unit."""

import glob
import json

import pytest

from gnbench.sweep.cli import main
from gnbench.sweep.spec import REPO_ROOT
from tests.train.test_trainer import read_metrics
from tests.wandb_records import history_and_config

UNITS = ("step", "tokens", "grad_equivalents", "wall_clock")


# About 25 s on a quiet 2-core machine, 2 min under load: deselect with -m "not slow".
@pytest.mark.slow
def test_two_run_sweep_with_the_real_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # One CPU device per run, whatever the tier runs on.
    monkeypatch.delenv("WANDB_MODE", raising=False)  # The config's mode decides.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    sweep = dict(
        name="e2e",
        base=str(REPO_ROOT / "experiments" / "tiny.py"),
        overrides={
            "train.steps": 2,
            "train.eval_every": 1,
            "data.micro_batches": 2,
            "data.val_sequences": 16,
            "wandb.mode": "offline",
            "data.dir": str(REPO_ROOT / "data"),
        },
        methods={"adamw": {"grid": {"optimizer.learning_rate": [3e-3, 1e-2]}}},
        seeds=[0],
        target_loss=5.9,
        warmup={"steps": 2},
    )
    path = tmp_path / "sweep_e2e.py"
    path.write_text(f"def get_sweep():\n    return {sweep!r}\n")
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--parallel", "1"]) == 0
    folders = sorted((out / "e2e" / "runs").iterdir())
    warmup = next(p for p in folders if p.name.startswith("warmup-"))
    runs = [p for p in folders if p != warmup]
    assert len(runs) == 2
    warm_evals = read_metrics(warmup)
    warm_final = [r["val_loss"] for r in warm_evals if r["kind"] == "eval"][-1]
    for run in folders:  # The trainer's identity is the planner's: the id ends with its hash.
        identity = json.loads((run / "identity.json").read_text())
        assert run.name.endswith("-" + identity["hash"][:10])
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 2
        assert config["wandb"]["group"] == "e2e" and config["wandb"]["name"] == run.name
        assert config["train"]["init_from"] == str(warmup.resolve())
        files = glob.glob(str(run / "wandb" / "offline-run-*" / "*.wandb"))
        assert len(files) == 1, files
        rows, wb_config, group = history_and_config(files[0])
        assert group == "e2e"
        assert wb_config["optimizer"]["learning_rate"] == config["optimizer"]["learning_rate"]
        metrics = read_metrics(run)
        first_eval = next(m for m in metrics if m["kind"] == "eval")
        assert first_eval["step"] == 0  # Fresh counters and optimizer, warmed-up parameters:
        assert first_eval["val_loss"] == pytest.approx(warm_final, abs=1e-5)
        for kind in ("train", "eval"):
            logged = [r for r in rows if any(k.startswith(f"{kind}/") for k in r)]
            want = [m for m in metrics if m["kind"] == kind]
            assert len(logged) == len(want) > 0
            for unit in UNITS:
                # The iteration is wandb's own step axis; the other units are logged series,
                # unprefixed (train and eval rows share them).
                got = [r["_step" if unit == "step" else unit] for r in logged]
                assert got == pytest.approx([m[unit] for m in want]), (kind, unit)
    report = (out / "e2e" / "report.md").read_text()
    assert "| adamw | learning_rate=" in report
    # A rerun finds everything done and launches nothing.
    before = {r: (r / "log.txt").read_text() for r in runs}
    assert main([str(path), "--out", str(out), "--no-report"]) == 0
    assert before == {r: (r / "log.txt").read_text() for r in runs}
