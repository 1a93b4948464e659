"""Which start-up path ``gnbench.distributed.detect`` picks from the environment."""

import pytest

from gnbench.distributed import detect, initialize_from_environment

EXPLICIT = {
    "GNBENCH_COORDINATOR": "10.0.0.1:1234",
    "GNBENCH_NUM_PROCESSES": "4",
    "GNBENCH_PROCESS_ID": "3",
}
# What srun exports to each task of a 2-task step (the ones the decision reads).
SLURM_STEP = {
    "SLURM_JOB_ID": "77",
    "SLURM_STEP_ID": "0",
    "SLURM_NTASKS": "2",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "node[01-02]",
}


def test_explicit_settings_with_local_devices_and_timeouts():
    env = {**EXPLICIT, "GNBENCH_LOCAL_DEVICE_IDS": "0,1", "GNBENCH_HEARTBEAT_TIMEOUT": "7"}
    launch = detect({**env, **SLURM_STEP})  # Explicit settings win over SLURM's.
    assert launch.how == "explicit"
    assert launch.kwargs == dict(
        coordinator_address="10.0.0.1:1234",
        num_processes=4,
        process_id=3,
        local_device_ids=[0, 1],
        heartbeat_timeout_seconds=7,
    )


def test_partial_or_malformed_settings_fail_naming_the_variable():
    with pytest.raises(ValueError, match="GNBENCH_PROCESS_ID"):
        detect({k: v for k, v in EXPLICIT.items() if k != "GNBENCH_PROCESS_ID"})
    with pytest.raises(ValueError, match="GNBENCH_NUM_PROCESSES='four'"):
        detect({**EXPLICIT, "GNBENCH_NUM_PROCESSES": "four"})
    with pytest.raises(ValueError, match="GNBENCH_DISTRIBUTED='yes'"):
        detect({"GNBENCH_DISTRIBUTED": "yes"})


def test_slurm_step_with_several_tasks_lets_jax_read_slurm():
    launch = detect({**SLURM_STEP, "GNBENCH_INIT_TIMEOUT": "60"})
    assert launch.how == "slurm" and launch.kwargs == {"initialization_timeout": 60}
    # A one-task step, or the batch script itself (no step id), is a single process.
    assert detect({**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}).how == "single"
    batch = {k: v for k, v in SLURM_STEP.items() if not k.startswith("SLURM_STEP")}
    assert detect(batch).how == "single"


def test_tpu_slice_auto_off_and_single():
    assert detect({"TPU_WORKER_HOSTNAMES": "t1v-a-0,t1v-a-1"}).how == "tpu"
    assert detect({"TPU_WORKER_HOSTNAMES": "t1v-a-0"}).how == "single"  # One-host slice.
    assert detect({"GNBENCH_DISTRIBUTED": "auto"}).how == "auto"
    assert detect({**SLURM_STEP, **EXPLICIT, "GNBENCH_DISTRIBUTED": "off"}).how == "single"
    assert detect({}) == initialize_from_environment({})
    assert detect({}).kwargs is None
