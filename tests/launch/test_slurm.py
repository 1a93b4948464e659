"""The ``slurm`` executor on a real one-node SLURM cluster (``launch/local_slurm.sh``): array
tasks run the fake trainer and the report is written; ``scancel`` mid-sweep and a rerun lose and
repeat nothing; a rerun while the job runs follows it; a 2-task run trains with ``srun`` +
``jax.distributed`` through ``gnbench train``.
The script-rendering tests need no cluster.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnbench.sweep import make_executor, make_plan
from gnbench.sweep.cli import main
from gnbench.sweep.spec import REPO_ROOT, load_sweep_file
from tests.launch.conftest import TINY, clean_env
from tests.sweep.test_sweep import FAKE, invocations, write_sweep

SWEEP = [sys.executable, "-m", "gnbench.cli", "sweep"]


def slurm_env(monkeypatch, conf, devices=1, cache=None, **extra):
    """Points this process (and, through sbatch's exported environment, the jobs) at ``conf``."""
    env = clean_env(devices, cache, SLURM_CONF=conf, **extra)
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_slurm_dry_run_prints_the_array_script_and_submits_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    argv = [str(path), "--executor", "slurm", "--slurm-dry-run", "--out", str(out)]
    argv += ["--partition", "gpu", "--time", "01:30:00", "--mem", "8G", "--parallel", "2"]
    argv += ["--nodes", "2", "--ntasks-per-node", "4", "--sbatch-arg=--gpus-per-node=4"]
    assert main(argv, trainer_cmd=FAKE) == 0
    text = capsys.readouterr().out
    for line in (
        "#SBATCH --array=0-5%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=01:30:00",
        "#SBATCH --mem=8G",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
    ):
        assert line + "\n" in text, line
    assert 'eval "srun --kill-on-bad-exit=1' in text
    plan = make_plan(load_sweep_file(path))
    assert all(run.id in text for run in plan.runs)
    assert "{{" not in text and not out.exists()
    # One task per run: no srun; flags of another executor are refused.
    assert main([str(path), "--executor", "slurm", "--slurm-dry-run", "--out", str(out)]) == 0
    assert 'eval "$CMD"' in capsys.readouterr().out
    assert main([str(path), "--executor", "local", "--partition", "gpu"]) == 2
    assert "--partition only apply to --executor slurm" in capsys.readouterr().err


def test_dry_run_lists_only_unfinished_runs(tmp_path, capsys):
    plan = make_plan(load_sweep_file(write_sweep(tmp_path)))
    sweep_dir = tmp_path / "out" / "fake"
    done = sweep_dir / plan.runs[0].workdir
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"status": "finished"}))
    make_executor("slurm", trainer_cmd=FAKE, dry_run=True).execute(plan, sweep_dir)
    text = capsys.readouterr().out
    assert "#SBATCH --array=0-4\n" in text and plan.runs[0].id not in text


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_slurm_sweep_runs_every_task_and_writes_the_report(slurm_cluster, tmp_path, monkeypatch):
    slurm_env(monkeypatch, slurm_cluster)
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    argv = [str(path), "--executor", "slurm", "--out", str(out), "--poll-seconds", "0.3"]
    assert main(argv + ["--time", "00:05:00"], trainer_cmd=FAKE) == 0
    sweep_dir = out / "fake"
    calls = invocations(sweep_dir)
    assert len(calls) == 6 and all(v == ["start", "finish"] for v in calls.values())
    status = json.loads((sweep_dir / "status.json").read_text())["runs"]
    assert {e["state"] for e in status.values()} == {"finished"}
    assert {e["slurm_state"] for e in status.values()} == {"COMPLETED"}
    assert len({e["slurm_job"] for e in status.values()}) == 1
    assert "--time=00:05:00" in (sweep_dir / "slurm" / "sweep.sbatch").read_text()
    assert "| adamw |" in (sweep_dir / "report.md").read_text()
    log = next((sweep_dir / "runs").iterdir()) / "log.txt"
    assert "=== gnbench sweep: slurm task" in log.read_text()
    # Nothing left to do: a rerun submits nothing.
    job = (sweep_dir / "slurm" / "job.json").read_text()
    assert main(argv + ["--no-report"], trainer_cmd=FAKE) == 0
    assert (sweep_dir / "slurm" / "job.json").read_text() == job
    assert all(v == ["start", "finish"] for v in invocations(sweep_dir).values())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scancel_mid_sweep_then_rerun_loses_and_repeats_nothing(
    slurm_cluster, tmp_path, monkeypatch
):
    env = slurm_env(monkeypatch, slurm_cluster)
    methods = {
        "adamw": {
            "grid": {"optimizer.learning_rate": [0.1, 0.3, 0.5]},
            "overrides": {"fake.sleep": 0.2},
        }
    }
    path = write_sweep(tmp_path, methods=methods, seeds=[0, 1])
    out = tmp_path / "out"
    sweep_dir, runs = out / "fake", out / "fake" / "runs"
    argv = [str(path), "--executor", "slurm", "--out", str(out), "--parallel", "2"]
    argv += ["--poll-seconds", "0.3", "--trainer-cmd", shlex.join(FAKE)]
    proc = subprocess.Popen(SWEEP + argv, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120

        def partial():
            return [
                d
                for d in runs.glob("*")
                if (d / "progress.txt").exists() and not (d / "summary.json").exists()
            ]

        while not (len(list(runs.glob("*/summary.json"))) >= 2 and partial()):
            assert proc.poll() is None, "the sweep ended before the cancel"
            assert time.time() < deadline, "no run finished within 120 s"
            time.sleep(0.05)
        job = json.loads((sweep_dir / "slurm" / "job.json").read_text())["job_id"]
        subprocess.run(["scancel", job], check=True, timeout=30)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 1, err.decode()[-2000:]  # Cancelled runs are failed for now.
    finished_before = {d.name for d in runs.iterdir() if (d / "summary.json").exists()}
    assert 2 <= len(finished_before) < 6
    status = json.loads((sweep_dir / "status.json").read_text())["runs"]
    assert {e["slurm_state"] for e in status.values() if e["state"] == "failed"} == {"CANCELLED"}

    rerun = subprocess.run(SWEEP + argv, cwd=REPO_ROOT, env=env, timeout=180, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    calls = invocations(sweep_dir)
    assert len(calls) == 6
    for run_id, lines in calls.items():
        assert lines.count("finish") == 1, (run_id, lines)  # Every run completed exactly once.
        if run_id in finished_before:
            assert lines == ["start", "finish"]  # Finished runs were not launched again.
    assert any(v.count("start") == 2 for v in calls.values()), "a cancelled run was resumed"
    new_job = json.loads((sweep_dir / "slurm" / "job.json").read_text())
    assert new_job["job_id"] != job and set(new_job["run_ids"]).isdisjoint(finished_before)
    assert (sweep_dir / "report.md").exists()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_task_run_trains_with_srun_and_jax_distributed(
    slurm_cluster, tiny_data, compile_cache, tmp_path, monkeypatch
):
    slurm_env(monkeypatch, slurm_cluster, 2, compile_cache, GNBENCH_HEARTBEAT_TIMEOUT="5")
    sweep = dict(
        name="srun",
        base=str(REPO_ROOT / "experiments" / "tiny.py"),
        overrides={**TINY, **tiny_data},
        methods={"adamw": {}},
        seeds=[0],
    )
    path = tmp_path / "sweep_srun.py"
    path.write_text(f"def get_sweep():\n    return {sweep!r}\n")
    out = tmp_path / "out"
    argv = [str(path), "--executor", "slurm", "--out", str(out), "--ntasks-per-node", "2"]
    assert main(argv + ["--poll-seconds", "0.5", "--time", "00:06:00"]) == 0
    run = next((out / "srun" / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["tokens"] == 4 * 2 * 8 * 16
    log = (run / "log.txt").read_text()
    assert "srun --kill-on-bad-exit=1" in log
    assert "4 devices" in log  # 2 processes x 2 fake devices joined into one mesh.
    assert log.count("gnbench: finished after 4 iterations") == 1  # Process 0 reports alone.
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert Path(out / "srun" / "report.md").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rerun_while_the_job_runs_follows_it_instead_of_submitting_again(
    slurm_cluster, tmp_path, monkeypatch
):
    env = slurm_env(monkeypatch, slurm_cluster)
    methods = {"adamw": {"grid": {"optimizer.learning_rate": [0.1, 0.3]}}}
    path = write_sweep(tmp_path, methods=methods, overrides={"fake.sleep": 0.2})
    out = tmp_path / "out"
    sweep_dir = out / "fake"
    argv = [str(path), "--executor", "slurm", "--out", str(out), "--parallel", "2"]
    argv += ["--poll-seconds", "0.3"]
    follower = subprocess.Popen(
        SWEEP + argv + ["--trainer-cmd", shlex.join(FAKE)],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while not list((sweep_dir / "runs").glob("*/progress.txt")):
            assert follower.poll() is None and time.time() < deadline, "no run started"
            time.sleep(0.05)
    finally:
        os.killpg(follower.pid, signal.SIGKILL)  # The follower dies; the SLURM job goes on.
        follower.wait(timeout=30)
    job = json.loads((sweep_dir / "slurm" / "job.json").read_text())["job_id"]
    assert main(argv, trainer_cmd=FAKE) == 0
    assert json.loads((sweep_dir / "slurm" / "job.json").read_text())["job_id"] == job
    calls = invocations(sweep_dir)
    assert len(calls) == 4 and all(v == ["start", "finish"] for v in calls.values()), calls
