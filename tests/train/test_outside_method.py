"""The examples of examples/my_optimizers, which register nothing inside gnbench, train through
``gnbench train`` (FLOPs measured, state checkpointed, a crashed run resumed to the uninterrupted
losses) and appear in a sweep's report next to AdamW."""

import json

import numpy as np
import pytest

from gnbench.cli import main
from gnbench.data import ensure_prepared
from gnbench.optim.registry import known_optimizers
from gnbench.sweep.cli import main as sweep_main
from gnbench.sweep.spec import REPO_ROOT
from gnbench.train import checkpoint

EXAMPLES = REPO_ROOT / "examples" / "my_optimizers"
LION = "examples/my_optimizers/lion.py:lion"  # As lion_config.py names it: from the repo root.


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def _fast(corpus_dir, tmp_path, workdir, **extra):
    settings = {
        "data.source": str(corpus_dir),
        "data.dir": str(tmp_path / "data"),
        "data.seq_len": 16,
        "data.micro_batch": 8,
        "data.micro_batches": 2,
        "data.val_sequences": 16,
        "train.steps": 6,
        "train.eval_every": 2,
        "train.checkpoint_every": 100,
        "train.progress": False,
        "train.count_flops": False,
        "train.workdir": str(workdir),
        "wandb.mode": "disabled",
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in settings.items()]


def _train(config, corpus_dir, tmp_path, workdir, **extra):
    code = main(
        [
            "train",
            "--config",
            str(EXAMPLES / config),
            *_fast(corpus_dir, tmp_path, workdir, **extra),
        ]
    )
    return code


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(workdir):
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in _records(workdir)]


@pytest.mark.slow
def test_lion_trains_resumes_to_the_same_losses_and_counts_its_flops(
    corpus_dir, tmp_path, monkeypatch
):
    assert not any(":" in name or "lion" in name for name in known_optimizers())
    steps = {"train.steps": 6, "train.checkpoint_every": 3}
    reference = tmp_path / "reference"
    assert (
        _train(
            "lion_config.py",
            corpus_dir,
            tmp_path,
            reference,
            **steps,
            **{"train.count_flops": True},
        )
        == 0
    )
    identity = json.loads((reference / "identity.json").read_text())
    assert identity["config"]["optimizer.name"] == LION
    assert identity["config"]["optimizer.lion.b2"] == 0.99  # Its section is in its identity...
    assert not any(k.startswith("optimizer.soap") for k in identity["config"])  # ...no other.
    summary = json.loads((reference / "summary.json").read_text())
    cost = summary["cost_per_iteration"]
    assert cost["source"] == "XLA cost analysis" and cost["step_flops"] > cost["fwd_bwd_flops"]
    evals = [r["val_loss"] for r in _records(reference) if r["kind"] == "eval"]
    assert evals[-1] < evals[0]
    train = [r for r in _records(reference) if r["kind"] == "train"]
    assert all(0 <= r["learning_rate"] <= 1e-3 * (1 + 1e-6) for r in train)  # Logged (float32).

    # A crash right after the checkpoint of step 3, then the same command: it resumes there.
    save = checkpoint.Checkpointer.save

    def save_then_crash(self, step, state, meta):
        save(self, step, state, meta)
        if step == 3:
            self.wait()
            raise RuntimeError("crash after step 3")

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="crash after step 3"):
        _train("lion_config.py", corpus_dir, tmp_path, interrupted, **steps)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    assert not (interrupted / "summary.json").exists()
    assert _train("lion_config.py", corpus_dir, tmp_path, interrupted, **steps) == 0
    got, want = _losses(interrupted), _losses(reference)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # No step lost or repeated.
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_data_reading_example_trains_on_no_gradient_and_its_trials_are_counted(
    corpus_dir, tmp_path
):
    workdir = tmp_path / "line_search"
    assert (
        _train(
            "line_search_config.py", corpus_dir, tmp_path, workdir, **{"train.count_flops": True}
        )
        == 0
    )
    records = _records(workdir)
    train = [r for r in records if r["kind"] == "train"]
    # The trainer computed no gradient: the logged loss is the method's own true_loss, and its
    # line search's step (alpha, a fraction of the learning rate) is logged with it.
    assert all(np.isfinite(r["loss"]) and 0.125 <= r["alpha"] <= 1.0 for r in train)
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    assert evals[-1] < evals[0]
    cost = json.loads((workdir / "summary.json").read_text())["cost_per_iteration"]
    # One gradient (a forward+backward) per micro-batch plus 4 trial forwards per micro-batch:
    # ~K (1 + 4/3) passes at K = 2; without the trials it would be ~K.
    assert cost["step_flops"] / cost["fwd_bwd_flops"] > 1.5 * 2


@pytest.mark.slow
def test_lion_appears_in_a_sweep_report_next_to_adamw(corpus_dir, tmp_path):
    overrides = dict(
        [a.removeprefix("--config.").split("=", 1) for a in _fast(corpus_dir, tmp_path, "x")]
    )
    for key in ("train.workdir", "train.progress", "wandb.mode"):
        overrides.pop(key)
    overrides = {k: (int(v) if v.isdigit() else v) for k, v in overrides.items()}
    overrides.update({"train.steps": 4, "train.count_flops": False})
    ensure_prepared(str(corpus_dir), tokenizer="byte", base=overrides["data.dir"])
    sweep = {
        "name": "two_methods",
        "base": str(EXAMPLES / "lion_config.py"),
        "overrides": overrides,
        "methods": {
            "adamw": {"grid": {"optimizer.learning_rate": [3e-3]}},
            "lion": {
                "overrides": {"optimizer.name": LION},
                "grid": {"optimizer.learning_rate": [1e-3]},
            },
        },
        "seeds": [0],
        "target_loss": 5.0,
    }
    path = tmp_path / "sweep.py"
    path.write_text(f"def get_sweep():\n    return {sweep!r}\n")
    assert sweep_main([str(path), "--out", str(tmp_path / "out"), "--parallel", "2"]) == 0
    report = (tmp_path / "out" / "two_methods" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| adamw |", "| lion |"))]
    assert {r.split("|")[1].strip() for r in rows} == {"adamw", "lion"}
    lion_runs = list((tmp_path / "out" / "two_methods" / "runs").glob("lion-*"))
    assert len(lion_runs) == 1
    config = json.loads((lion_runs[0] / "config.json").read_text())
    assert config["optimizer"]["name"] == LION and config["optimizer"]["learning_rate"] == 1e-3
