"""Two trainer processes on loopback (2 fake CPU devices each) through ``python -m gnbench.cli
train``: the same losses as one process with 4 devices, a dead peer ends the run in seconds, and
a run killed after its step-2 checkpoint resumes with 2 processes to the uninterrupted losses.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gnbench.sweep.spec import REPO_ROOT
from tests.launch.conftest import clean_env, free_port

HERE = Path(__file__).parent
TRAIN = [sys.executable, "-m", "gnbench.cli", "train"]
HELD_TRAIN = [sys.executable, str(HERE.parent / "hold_after_checkpoint.py"), "train"]
RUN_TIMEOUT = 300  # seconds; a healthy run takes 20-70 s on 2 busy cores
HEARTBEAT = 5  # seconds without heartbeats before a peer counts as dead


def start_processes(cmd, args, workdir, cache, n=2, **extra):
    """Starts ``n`` trainer processes joined through ``GNBENCH_*`` on a free loopback port."""
    port = free_port()
    procs = []
    for i in range(n):
        env = clean_env(
            2,
            cache,
            GNBENCH_COORDINATOR=f"127.0.0.1:{port}",
            GNBENCH_NUM_PROCESSES=str(n),
            GNBENCH_PROCESS_ID=str(i),
            GNBENCH_HEARTBEAT_TIMEOUT=str(HEARTBEAT),
            GNBENCH_INIT_TIMEOUT="120",
            GNBENCH_SHUTDOWN_TIMEOUT="30",
            **extra,
        )
        log = open(Path(str(workdir) + f".process{i}.log"), "w")
        procs.append(
            subprocess.Popen(
                cmd + args,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    return procs


def wait_all(procs, workdir, timeout=RUN_TIMEOUT):
    """Waits for every process (killing all on timeout); returns their exit codes."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"processes still running after {timeout} s; logs: {workdir}.process*.log")
    finally:
        kill_all(procs)
    return [p.returncode for p in procs]


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def logs(workdir):
    return "\n".join(
        f"--- {p.name}\n" + p.read_text()[-3000:]
        for p in sorted(Path(workdir).parent.glob(Path(workdir).name + ".process*.log"))
    )


def metric_pairs(workdir):
    records = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_args, compile_cache):
    """The uninterrupted 2-process run and a 1-process 4-device run, trained side by side."""
    folder = tmp_path_factory.mktemp("multiprocess")
    two, one = folder / "two_processes", folder / "one_process"
    procs = start_processes(TRAIN, train_args(two), two, compile_cache)
    single = subprocess.Popen(
        TRAIN + train_args(one),
        cwd=REPO_ROOT,
        env=clean_env(4, compile_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = single.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_all([single])
    assert single.returncode == 0, out.decode()[-3000:]
    codes = wait_all(procs, two)
    assert codes == [0, 0], logs(two)
    return {"two": two, "one": one}


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_two_processes_reach_the_losses_of_one_process_with_four_devices(runs):
    two, one = metric_pairs(runs["two"]), metric_pairs(runs["one"])
    assert [m[:2] for m in two] == [m[:2] for m in one]
    assert [m[:2] for m in two if m[0] == "train"] == [("train", s) for s in (1, 2, 3, 4)]
    np.testing.assert_allclose([m[2] for m in two], [m[2] for m in one], rtol=0, atol=1e-5)
    summary = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    # Process 0 alone writes files: one config, one record per step (no duplicates).
    assert "4 devices" in (Path(str(runs["two"]) + ".process0.log").read_text())
    assert not (Path(str(runs["two"]) + ".process1.log").read_text().count("gnbench: adamw"))


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_dead_peer_fails_fast_and_two_processes_resume_from_the_checkpoint(
    runs, train_args, compile_cache, tmp_path
):
    work = tmp_path / "interrupted"
    hold = tmp_path / "held"
    procs = start_processes(
        HELD_TRAIN,
        train_args(work),
        work,
        compile_cache,
        GNBENCH_TEST_HOLD_STEP="2",
        GNBENCH_TEST_HOLD_DIR=str(hold),
    )
    try:
        deadline = time.time() + RUN_TIMEOUT
        while not all((hold / f"held.{i}").exists() for i in (0, 1)):
            assert all(p.poll() is None for p in procs), "a process ended early:\n" + logs(work)
            assert time.time() < deadline, "no checkpoint at step 2 in time:\n" + logs(work)
            time.sleep(0.1)
        assert (work / "ckpt" / "2").is_dir()
        # Process 1 dies; process 0 (idle, waiting for nothing) must notice and exit by itself.
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed_at = time.time()
        try:
            procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("process 0 still alive 60 s after its peer died:\n" + logs(work))
        waited = time.time() - killed_at
    finally:
        kill_all(procs)
    assert procs[0].returncode != 0
    assert waited < 4 * HEARTBEAT + 10, waited
    assert "another task died" in logs(work) or "unhealthy" in logs(work)
    assert not (work / "summary.json").exists()

    procs = start_processes(TRAIN, train_args(work), work, compile_cache)
    assert wait_all(procs, work) == [0, 0], logs(work)
    got, want = metric_pairs(work), metric_pairs(runs["two"])
    assert [g[:2] for g in got] == [w[:2] for w in want]  # No step lost or repeated.
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-5)
    summary = json.loads((work / "summary.json").read_text())
    reference = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["tokens"] == reference["tokens"] == 4 * 2 * 8 * 16
    assert summary["final_val_loss"] == pytest.approx(reference["final_val_loss"], abs=1e-5)
