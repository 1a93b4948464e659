"""Sweep planning, the dry-run and local executors, resume after SIGKILL, with a fake trainer."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnbench.sweep import SweepError, load_sweep_file, make_executor, make_plan
from gnbench.sweep.cli import main
from gnbench.sweep.plan import run_args

HERE = Path(__file__).parent
FAKE = [sys.executable, str(HERE / "fake_trainer.py")]


def write_sweep(tmp_path: Path, **fields) -> Path:
    sweep = dict(
        name="fake",
        base=str(HERE / "fake_base.py"),
        overrides={"train.steps": 10},
        methods={
            "adamw": {"grid": {"optimizer.learning_rate": [0.1, 0.3]}},
            "soap": {"overrides": {"optimizer.learning_rate": 0.5}},
        },
        seeds=[0, 1],
        target_loss=2.5,
    )
    sweep.update(fields)
    path = tmp_path / "sweep_fake.py"
    path.write_text(f"def get_sweep(quick=False):\n    return {sweep!r}\n")
    return path


def invocations(sweep_dir: Path) -> dict[str, list[str]]:
    return {
        d.name: (d / "invocations.txt").read_text().split()
        for d in (sweep_dir / "runs").iterdir()
        if (d / "invocations.txt").exists()
    }


def test_plan_ids_are_stable_distinct_and_independent_of_the_output_folder(tmp_path):
    path = write_sweep(tmp_path)
    plan1, plan2 = make_plan(load_sweep_file(path)), make_plan(load_sweep_file(path))
    ids = [r.id for r in plan1.runs]
    assert ids == [r.id for r in plan2.runs]
    assert len(ids) == len(set(ids)) == 2 * 2 + 1 * 2
    assert all(re.fullmatch(r"(adamw|soap)-[0-9a-f]{10}", i) for i in ids)
    run = plan1.runs[0]
    assert run.overrides == {
        "train.steps": 10,
        "train.target_loss": 2.5,
        "optimizer.name": "adamw",
        "optimizer.learning_rate": 0.1,
        "seed": 0,
    }
    assert run_args(plan1, run, tmp_path / "a") != run_args(plan1, run, tmp_path / "b")
    other = make_plan(load_sweep_file(write_sweep(tmp_path, target_loss=2.4)))
    assert not set(ids) & {r.id for r in other.runs}


def test_unknown_override_key_and_bad_value_fail_naming_them(tmp_path, capsys):
    bad = {"adamw": {"grid": {"optimizer.learnig_rate": [0.1]}}}
    with pytest.raises(SweepError, match="optimizer.learnig_rate"):
        load_sweep_file(write_sweep(tmp_path, methods=bad))
    with pytest.raises(SweepError, match="train.stepz"):
        load_sweep_file(write_sweep(tmp_path, overrides={"train.stepz": 3}))
    with pytest.raises(SweepError, match="train.steps"):
        load_sweep_file(write_sweep(tmp_path, overrides={"train.steps": "many"}))
    with pytest.raises(SweepError, match="data.micro_batchez"):
        load_sweep_file(write_sweep(tmp_path, scan={"key": "data.micro_batchez", "values": [1]}))
    assert main([str(write_sweep(tmp_path, methods=bad)), "--out", str(tmp_path)]) == 2
    assert "optimizer.learnig_rate" in capsys.readouterr().err


def test_unknown_executor_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"valid executors: \['dry-run', 'local'"):
        make_executor("slurmm")
    assert main([str(write_sweep(tmp_path)), "--executor", "nope", "--out", str(tmp_path)]) == 2
    assert "dry-run" in capsys.readouterr().err


def test_dry_run_prints_every_run_and_command_and_writes_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, warmup={"steps": 3})
    out = tmp_path / "out"
    assert main([str(path), "--executor", "dry-run", "--out", str(out)], trainer_cmd=FAKE) == 0
    text = capsys.readouterr().out
    plan = make_plan(load_sweep_file(path))
    assert plan.warmup is not None and plan.warmup.id.startswith("warmup-")
    for run in plan.all_runs():
        assert run.id in text
    assert text.count("$ ") == 1 + 6
    assert f"--config.train.init_from={(out / 'fake' / 'runs' / plan.warmup.id).resolve()}" in text
    assert "--config.wandb.group=fake" in text and "--config.optimizer.learning_rate=0.3" in text
    assert not out.exists()


def test_local_sweep_with_diverged_and_crashing_runs_goes_on_and_retries(tmp_path):
    methods = {
        "adamw": {"grid": {"optimizer.learning_rate": [0.1, 0.3]}},
        "soap": {"overrides": {"fake.diverge_at": 3, "optimizer.learning_rate": 1.0}},
        "muon": {"overrides": {"fake.crash": True}},
    }
    path = write_sweep(tmp_path, methods=methods, seeds=[0])
    out = tmp_path / "out"
    argv = [str(path), "--out", str(out), "--parallel", "2"]
    assert main(argv, trainer_cmd=FAKE) == 1  # One run failed.
    sweep_dir = out / "fake"
    status = json.loads((sweep_dir / "status.json").read_text())
    states = {e["method"] + str(e["attempts"]): e["state"] for e in status["runs"].values()}
    assert states == {"adamw1": "finished", "soap1": "diverged", "muon1": "failed"}
    report = (sweep_dir / "report.md").read_text()
    assert "| soap | (defaults) | 0/1 | ∞ [∞, ∞]" in report
    assert (sweep_dir / "curves.png").exists() and (sweep_dir / "to_target.png").exists()
    crashed = next(i for i, e in status["runs"].items() if e["method"] == "muon")
    assert "crashing as asked" in (sweep_dir / "runs" / crashed / "log.txt").read_text()
    # A rerun retries only the failed run.
    assert main(argv, trainer_cmd=FAKE) == 1
    calls = invocations(sweep_dir)
    assert calls[crashed] == ["start", "start"]
    assert all(v == ["start", "finish"] for k, v in calls.items() if k != crashed)


def _sweep_subprocess(path: Path, out: Path) -> subprocess.Popen:
    code = (
        "import sys; from gnbench.sweep.cli import main; "
        f"sys.exit(main(sys.argv[1:], trainer_cmd={FAKE!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path), "--out", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(tmp_path):
    methods = {
        "adamw": {
            "grid": {"optimizer.learning_rate": [0.1, 0.3, 0.5]},
            "overrides": {"fake.sleep": 0.08},
        }
    }
    path = write_sweep(tmp_path, methods=methods, seeds=[0, 1])
    out = tmp_path / "killed"
    proc = _sweep_subprocess(path, out)
    runs = out / "fake" / "runs"
    deadline = time.time() + 120

    def half_done() -> bool:  # At least two runs finished and one killed mid-way.
        done = len(list(runs.glob("*/summary.json")))
        partial = [
            d
            for d in runs.glob("*")
            if (d / "progress.txt").exists() and not (d / "summary.json").exists()
        ]
        return done >= 2 and bool(partial)

    while not half_done():
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before the kill"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {d.name for d in runs.iterdir() if (d / "summary.json").exists()}
    assert 2 <= len(finished_before) < 6
    rerun = _sweep_subprocess(path, out)
    assert rerun.wait(timeout=300) == 0
    calls = invocations(out / "fake")
    assert len(calls) == 6
    for run_id, lines in calls.items():
        assert lines.count("finish") == 1, run_id  # Every run completed exactly once.
        if run_id in finished_before:
            assert lines == ["start", "finish"]  # Finished runs were not launched again.
    resumed = [k for k, v in calls.items() if v.count("start") == 2]
    assert resumed, "the run killed mid-way was resumed"
    clean = tmp_path / "clean"
    assert _sweep_subprocess(path, clean).wait(timeout=300) == 0
    assert (out / "fake" / "report.md").read_text() == (clean / "fake" / "report.md").read_text()


def test_scan_with_sets_linked_keys_per_scan_value_and_checks_them(tmp_path):
    scan = {"key": "data.micro_batches", "values": [2, 8], "with": {"train.steps": [40, 10]}}
    plan = make_plan(load_sweep_file(write_sweep(tmp_path, scan=scan)))
    steps = {(r.scan_value, r.overrides["train.steps"]) for r in plan.runs}
    assert steps == {(2, 40), (8, 10)}
    assert len({r.id for r in plan.runs}) == len(plan.runs) == 2 * 3 * 2  # K x settings x seeds
    with pytest.raises(SweepError, match="2 values for 3 scan values"):
        load_sweep_file(write_sweep(tmp_path, scan={**scan, "values": [2, 4, 8]}))
    with pytest.raises(SweepError, match="train.stepz"):
        load_sweep_file(write_sweep(tmp_path, scan={**scan, "with": {"train.stepz": [1, 2]}}))
    with pytest.raises(SweepError, match="train.steps"):
        load_sweep_file(write_sweep(tmp_path, scan={**scan, "with": {"train.steps": ["a", 2]}}))


def test_grid_at_gives_a_method_its_own_grid_at_some_scan_values(tmp_path):
    scan = {"key": "data.micro_batches", "values": [2, 8]}
    methods = {
        "adamw": {
            "grid": {"optimizer.learning_rate": [0.1, 0.3]},
            "grid_at": {8: {"optimizer.learning_rate": [0.3, 1.0, 3.0]}},
        }
    }
    plan = make_plan(load_sweep_file(write_sweep(tmp_path, scan=scan, methods=methods)))
    lrs = {}
    for r in plan.runs:
        lrs.setdefault(r.scan_value, set()).add(r.setting["optimizer.learning_rate"])
    assert lrs == {2: {0.1, 0.3}, 8: {0.3, 1.0, 3.0}}
    assert plan.grids_at == {"adamw": {"8": {"optimizer.learning_rate": [0.3, 1.0, 3.0]}}}
    with pytest.raises(SweepError, match=r"grid_at names \[4\], not scan values"):
        bad = {"adamw": {**methods["adamw"], "grid_at": {4: {"optimizer.learning_rate": [1]}}}}
        load_sweep_file(write_sweep(tmp_path, scan=scan, methods=bad))
    with pytest.raises(SweepError, match="optimizer.learnig_rate"):
        bad = {"adamw": {"grid_at": {8: {"optimizer.learnig_rate": [1.0]}}}}
        load_sweep_file(write_sweep(tmp_path, scan=scan, methods=bad))


def test_a_method_scans_its_own_values_with_its_own_linked_keys(tmp_path):
    scan = {"key": "data.micro_batches", "values": [2, 4], "with": {"train.steps": [20, 10]}}
    methods = {
        "adamw": {"grid": {"optimizer.learning_rate": [0.1]}},
        "soap": {"scan": {"values": [4, 8], "with": {"train.steps": [7, 5]}}},
    }
    variants = {"soap2": {"of": "soap", "overrides": {"optimizer.name": "soap"}}}
    spec = load_sweep_file(write_sweep(tmp_path, scan=scan, methods=methods, variants=variants))
    plan = make_plan(spec)
    steps = {(r.method, r.scan_value): r.overrides["train.steps"] for r in plan.runs}
    assert steps == {("adamw", 2): 20, ("adamw", 4): 10, ("soap", 4): 7, ("soap", 8): 5}
    assert spec.all_scan_values() == [2, 4, 8]
    assert spec.scan_of("soap2") == spec.scan_of("soap")  # a variant scans as its reference
    # The same id as a sweep that gives soap these values globally: ids hash configs only.
    alone = {"soap": {}}
    scan8 = {"key": "data.micro_batches", "values": [8], "with": {"train.steps": [5]}}
    other = make_plan(load_sweep_file(write_sweep(tmp_path, scan=scan8, methods=alone)))
    assert {r.id for r in other.runs} <= {r.id for r in plan.runs}
    bad = {"soap": {"scan": {"values": [4, 8], "with": {"train.steps": [7]}}}}
    with pytest.raises(SweepError, match=r"'soap' scan with train.steps: 1 values for 2"):
        load_sweep_file(write_sweep(tmp_path, scan=scan, methods=bad))
    bad = {"soap": {"scan": {"values": [4], "with": {"train.stepz": [7]}}}}
    with pytest.raises(SweepError, match="train.stepz"):
        load_sweep_file(write_sweep(tmp_path, scan=scan, methods=bad))
    with pytest.raises(SweepError, match="has its own scan values but the sweep has no scan"):
        load_sweep_file(write_sweep(tmp_path, methods={"soap": {"scan": {"values": [4]}}}))
    bad = {"soap": {"scan": {"values": [8]}, "grid_at": {2: {"optimizer.learning_rate": [1]}}}}
    with pytest.raises(SweepError, match=r"grid_at names \[2\], not scan values"):
        load_sweep_file(write_sweep(tmp_path, scan=scan, methods=bad))


def test_reuse_copies_finished_runs_of_the_same_identity_and_reruns_the_rest(tmp_path):
    out = tmp_path / "out"
    first = write_sweep(tmp_path, seeds=[0])
    assert main([str(first), "--out", str(out)], trainer_cmd=FAKE) == 0
    plan = make_plan(load_sweep_file(first))
    for run in plan.runs:  # the real trainer writes identity.json; the fake one does not
        (out / "fake" / run.workdir / "identity.json").write_text(
            json.dumps({"hash": run.config_hash})
        )
    adamw = [r for r in plan.runs if r.method == "adamw"]
    (out / "fake" / adamw[0].workdir / "identity.json").write_text(json.dumps({"hash": "other"}))
    methods = {
        "adamw": {"grid": {"optimizer.learning_rate": [0.1, 0.3]}},
        "soap": {"overrides": {"optimizer.learning_rate": 0.5}},
        "muon": {"overrides": {"optimizer.learning_rate": 0.7}},
    }
    second = tmp_path / "second"
    second.mkdir()
    path = write_sweep(second, name="fake2", methods=methods, seeds=[0], reuse=["fake"])
    assert main([str(path), "--out", str(out)], trainer_cmd=FAKE) == 0
    calls = invocations(out / "fake2")
    plan2 = make_plan(load_sweep_file(path))
    by_method = {r.id: r.method for r in plan2.runs}
    assert {r.id for r in plan.runs} < set(by_method)  # the same identity, the same ids
    for rid, method in by_method.items():
        copied = (out / "fake2" / "runs" / rid / "identity.json").exists()
        # Reused: the shared runs whose identity matches; run anew: the new method and the
        # adamw run whose identity.json says another config.
        assert copied == (method != "muon" and rid != adamw[0].id), rid
        assert calls[rid] == ["start", "finish"]
    assert (out / "fake" / "runs").exists()  # the source is left as it was
    with pytest.raises(SweepError, match="reuse must be a list"):
        load_sweep_file(write_sweep(second, reuse="fake"))
