"""Fixtures for multi-process and SLURM tests: a prepared tiny corpus, trainer arguments, a clean
subprocess environment with N fake CPU devices, a shared compilation cache, and a local SLURM
cluster (the one in ``SLURM_CONF`` if it answers, else one started here and stopped at the end).
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gnbench.data import ensure_prepared
from gnbench.sweep.spec import REPO_ROOT
from tests.english_corpus import write_corpus

LOCAL_SLURM = REPO_ROOT / "launch" / "local_slurm.sh"
# The tiny fast run every test here trains (4 iterations of 2 micro-batches of 8 x 16 tokens).
TINY = {
    "model.name": "tiny",
    "data.seq_len": 16,
    "data.micro_batch": 8,
    "data.micro_batches": 2,
    "data.val_sequences": 16,
    "train.steps": 4,
    "train.eval_every": 2,
    "train.checkpoint_every": 2,
    "train.progress": False,
    "train.count_flops": False,  # No test here reads FLOPs: 3 compiles fewer per process.
    "wandb.mode": "disabled",
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``{"data.source": ..., "data.dir": ...}`` of a small corpus, prepared once (byte-level)."""
    folder = write_corpus(tmp_path_factory.mktemp("launch_corpus"))
    data_dir = tmp_path_factory.mktemp("launch_data")
    ensure_prepared(str(folder), tokenizer="byte", base=data_dir)
    return {"data.source": str(folder), "data.dir": str(data_dir)}


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    """The persistent JAX compilation cache of the suite (tests/conftest.py), else a fresh one:
    the subprocesses here compile the same programs, so only the first run compiles."""
    shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="session")
def train_args(tiny_data):
    """``train_args(workdir, **overrides)``: the ``--config ...`` arguments of the tiny run."""

    def make(workdir, **overrides):
        settings = {**TINY, **tiny_data, "train.workdir": str(workdir), **overrides}
        return ["--config", str(REPO_ROOT / "experiments" / "tiny.py")] + [
            f"--config.{k}={v}" for k, v in settings.items()
        ]

    return make


def clean_env(devices: int, cache: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without JAX/SLURM/gnbench start-up variables, with ``devices`` fake CPU
    devices, the repo on ``PYTHONPATH``, wandb off, and ``extra`` on top."""
    drop = ("SLURM_", "GNBENCH_", "JAX_", "XLA_", "TPU_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) or k == "SLURM_CONF"}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        WANDB_MODE="disabled",
        PYTHONUNBUFFERED="1",
    )
    if cache is not None:
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sinfo_answers(env: dict[str, str]) -> bool:
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=15
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    states = proc.stdout.split() if proc.returncode == 0 else []
    return any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """``SLURM_CONF`` of a live one-node cluster: the one already configured, or one started by
    ``launch/local_slurm.sh`` for this session. Without SLURM installed: fails under ``CI``,
    skips on a developer machine."""
    conf = os.environ.get("SLURM_CONF")
    if conf and _sinfo_answers(dict(os.environ)):
        yield conf
        return
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        message = "SLURM is not installed (apt-get install -y slurm-wlm; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_CPUS="4")  # The script picks free ports.
    start = subprocess.run(
        ["bash", str(LOCAL_SLURM), "start", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert start.returncode == 0, f"local SLURM cluster did not start:\n{start.stderr}"
    try:
        yield str(folder / "slurm.conf")
    finally:
        subprocess.run(
            ["bash", str(LOCAL_SLURM), "stop", str(folder)],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
