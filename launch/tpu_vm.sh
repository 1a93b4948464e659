#!/usr/bin/env bash
# One gnbench run on a (multi-host) Cloud TPU VM slice: the same command on every worker.
#
#   launch/tpu_vm.sh setup NAME ZONE                 # clone/update the repo, install, on all workers
#   launch/tpu_vm.sh train NAME ZONE [OVERRIDES...]  # gnbench train on all workers at once
#
#   launch/tpu_vm.sh train gn-v4-32 us-central2-b --config.optimizer.name=soap
#   CONFIG=experiments/paper_150m.py launch/tpu_vm.sh train gn-v4-32 us-central2-b
#
# Each worker runs `python -m gnbench.cli train --config $CONFIG OVERRIDES...`; on a slice with
# several hosts (TPU_WORKER_HOSTNAMES lists them) the trainer calls jax.distributed.initialize(),
# which finds the coordinator, the process count and its own rank from the TPU environment
# (gnbench/distributed.py). All chips of the slice form one (data, fsdp) mesh; each host loads
# only its share of every batch; host 0 alone writes metrics, the summary and wandb.
#
# Env: PROJECT (gcloud project; default: gcloud's), CONFIG (default experiments/paper_45m.py),
# REPO_URL (for setup; default: this checkout's origin), REMOTE_DIR (default gnbench, in the
# workers' home), SHARED (a folder every worker sees at the same path, e.g. a Filestore/NFS or
# gcsfuse mount; default: none). train.workdir and data.dir go under SHARED when it is set:
# orbax checkpoints are written by all hosts together, so without a shared folder a resumed
# run can only use the checkpoints when the same hosts come back.
# wandb: run `wandb login` once on the workers (never put a key in a file or on a command line),
# or leave it offline and `wandb sync` later.
set -euo pipefail

usage() { echo "usage: $0 setup|train NAME ZONE [--config.KEY=VALUE ...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
action=$1 name=$2 zone=$3
shift 3

CONFIG=${CONFIG:-experiments/paper_45m.py}
REMOTE_DIR=${REMOTE_DIR:-gnbench}
project_args=()
[ -n "${PROJECT:-}" ] && project_args=(--project "$PROJECT")

on_all_workers() {  # on_all_workers COMMAND: runs COMMAND (one string) on every worker.
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" "${project_args[@]}" --worker=all \
    --command "$1"
}

case $action in
  setup)
    repo_url=${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin)}
    on_all_workers "set -e
      if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR pull --ff-only;
      else git clone $(printf '%q' "$repo_url") $REMOTE_DIR; fi
      cd $REMOTE_DIR && python3 -m venv .venv
      .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[bench]' 'jax[tpu]'"
    ;;
  train)
    overrides=("$@")
    if [ -n "${SHARED:-}" ]; then
      run=$(basename "$CONFIG" .py)
      overrides=(--config.train.workdir="$SHARED/runs/$run" --config.data.dir="$SHARED/data"
        "${overrides[@]}")
    fi
    cmd="cd $REMOTE_DIR && .venv/bin/python -m gnbench.cli train --config $(printf '%q' "$CONFIG")"
    for o in "${overrides[@]}"; do cmd+=" $(printf '%q' "$o")"; done
    echo "on every worker of $name: $cmd"
    on_all_workers "$cmd"
    ;;
  *)
    usage
    ;;
esac
