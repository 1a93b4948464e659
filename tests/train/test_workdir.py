"""A workdir holds one run: another config fails naming the keys, a finished run prints its
summary, overwrite deletes only the run's files, a corrupt checkpoint is one line, and a second
concurrent run fails at once while the first finishes intact."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnbench.cli import main
from gnbench.sweep.spec import REPO_ROOT
from gnbench.train import train
from gnbench.train.identity import config_hash
from gnbench.train.validation import ConfigError
from gnbench.train.workdir import LOCK_FILE, STALE_AFTER_S, WorkdirLock
from tests.train.test_resume import flat_overrides

HERE = Path(__file__).parent


def cli_args(cfg):
    return ["train", "--config", str(REPO_ROOT / "experiments" / "tiny.py"), *flat_overrides(cfg)]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gnbench train: ") and "Traceback" not in err
    return lines[0]


def test_other_config_fails_naming_keys_finished_prints_summary_overwrite_replaces(
    make_config, tmp_path, capsys
):
    work = tmp_path / "w"
    first = make_config(work, **{"train.steps": 2, "train.target_loss": 100.0})
    train(first)
    metrics = (work / "metrics.jsonl").read_text()
    stored = json.loads((work / "identity.json").read_text())
    assert stored["hash"] == config_hash(first)
    capsys.readouterr()

    # A finished workdir: the same config prints the summary; another optimizer fails (the
    # user must not believe SOAP ran).
    assert main(cli_args(first)) == 0
    out = capsys.readouterr().out
    assert "holds this run, already finished after 2 iterations" in out
    assert "target 100 reached at iteration 0" in out and str(work / "summary.json") in out
    soap = make_config(work, **{"train.steps": 2, "optimizer.name": "soap"})
    assert main(cli_args(soap)) == 2
    line = one_line(capsys.readouterr().err)
    assert "optimizer.name: 'adamw' → 'soap'" in line and "--config.train.overwrite=true" in line

    # Unfinished (summary gone): another lr and step count does not resume; nothing changes.
    (work / "summary.json").unlink()
    other = make_config(work, **{"train.steps": 4, "optimizer.learning_rate": 0.01})
    with pytest.raises(ConfigError, match=r"optimizer.learning_rate: 0.003 → 0.01") as e:
        train(other)
    assert "train.steps: 2 → 4" in str(e.value) and "train.target_loss" in str(e.value)
    assert (work / "metrics.jsonl").read_text() == metrics
    assert json.loads((work / "identity.json").read_text()) == stored

    # overwrite: the other run's files go, the user's stay, the new run starts from scratch.
    (work / "notes.txt").write_text("mine")
    other.train.overwrite = True
    summary = train(other)
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert "deleted the files of the other run" in capsys.readouterr().err
    assert (work / "notes.txt").read_text() == "mine"
    assert json.loads((work / "config.json").read_text())["optimizer"]["learning_rate"] == 0.01
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert not (work / LOCK_FILE).exists()

    # A corrupt checkpoint: one line naming it and the way out; the files stay as they were.
    (work / "summary.json").unlink()
    for f in (work / "ckpt").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    other.train.overwrite = False
    assert main(cli_args(other)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"the checkpoint {work / 'ckpt' / '4'} cannot be read" in line
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    lock = WorkdirLock.acquire(tmp_path)
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(ConfigError, match=f"in use by another run \\(pid {os.getpid()} on "):
        WorkdirLock.acquire(tmp_path)
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    # Dead pid on this host: stale, taken over with a note.
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"host": socket.gethostname(), "pid": _dead_pid()})
    )
    WorkdirLock.acquire(tmp_path).release()
    assert "taking over the stale lock" in capsys.readouterr().err
    # Another host: held while its heartbeat is fresh, stale once it stopped long ago.
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(ConfigError, match="pid 1 on elsewhere"):
        WorkdirLock.acquire(tmp_path)
    old = time.time() - STALE_AFTER_S - 10
    os.utime(tmp_path / LOCK_FILE, (old, old))
    WorkdirLock.acquire(tmp_path).release()


def test_second_concurrent_run_fails_fast_and_the_first_finishes_intact(
    make_config, tmp_path, capsys
):
    work = tmp_path / "w"
    cfg = make_config(work, **{"train.steps": 4, "train.checkpoint_every": 2})
    hold = tmp_path / "hold"
    env = dict(
        os.environ,
        XLA_FLAGS="",  # One CPU device: faster start-up.
        GNBENCH_TEST_HOLD_STEP="2",
        GNBENCH_TEST_HOLD_DIR=str(hold),
        PYTHONPATH=str(REPO_ROOT),
    )
    first = subprocess.Popen(
        [sys.executable, str(HERE.parent / "hold_after_checkpoint.py"), *cli_args(cfg)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 240
        while not (hold / "held.0").exists():
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the first run never reached its step-2 checkpoint"
            time.sleep(0.05)
        files = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
        tic = time.time()
        assert main(cli_args(cfg)) == 2
        assert time.time() - tic < 10  # At once: before any data, model or compilation work.
        line = one_line(capsys.readouterr().err)
        assert f"in use by another run (pid {first.pid} on {socket.gethostname()}" in line
        assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == files
        (hold / "go").write_text("")
        assert first.wait(timeout=240) == 0, first.stdout.read().decode()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    summary = json.loads((work / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [
        ("eval", 0),
        ("train", 1),
        ("train", 2),
        ("eval", 2),
        ("train", 3),
        ("train", 4),
        ("eval", 4),
    ]
    assert not (work / LOCK_FILE).exists()


def test_sigterm_releases_the_lock(tmp_path):
    code = (
        "import os, signal, sys, time\n"
        "from gnbench.cli import _on_sigterm\n"
        "from gnbench.train.workdir import WorkdirLock\n"
        "WorkdirLock.acquire(sys.argv[1])\n"
        "signal.signal(signal.SIGTERM, _on_sigterm)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == -15  # Still dies of SIGTERM, as without the handler...
    assert not (tmp_path / LOCK_FILE).exists()  # ...but the next run finds the workdir free.
