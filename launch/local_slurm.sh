#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on loopback, for tests and for trying the SLURM executor.
#
#   launch/local_slurm.sh start DIR   # writes DIR/slurm.conf, starts slurmctld + slurmd, waits idle
#   export SLURM_CONF=DIR/slurm.conf  # then sbatch / squeue / gnbench sweep --executor slurm
#   launch/local_slurm.sh stop DIR    # scontrol shutdown; waits until both daemons are gone
#
# Needs Debian's slurm-wlm (apt-get install -y slurm-wlm) and root (the daemons run as root).
# No munge: auth/none and cred/none trust anyone who can reach the ports, so this is for a
# disposable test machine only. Nothing is installed system-wide: state, spool, logs and pid
# files live under DIR. Env: SLURM_CPUS (default 4; may exceed the real cores), SLURM_CTLD_PORT
# and SLURMD_PORT (default: free ports, so several test clusters can share a machine).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  local mem_mb
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
  cat > "$conf" <<EOF
# Written by launch/local_slurm.sh: a one-node test cluster on loopback.
ClusterName=gnbench-local
SlurmctldHost=localhost
SlurmctldPort=${SLURM_CTLD_PORT:-$(free_port)}
SlurmdPort=${SLURMD_PORT:-$(free_port)}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SchedulerType=sched/backfill
MinJobAge=300
KillWait=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=localhost CPUs=${SLURM_CPUS:-4} RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Default=YES Nodes=localhost State=UP MaxTime=INFINITE
EOF
}

# A daemon counts as running when its pid file names a live, non-zombie process.
running() {
  local pidfile=$dir/$1.pid pid state
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

wait_for() {  # wait_for SECONDS COMMAND...: polls every 0.2 s; fails after SECONDS.
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

node_idle() { [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = idle ]; }
both_stopped() { ! running slurmctld && ! running slurmd; }

case $action in
  start)
    command -v slurmctld >/dev/null || { echo "$0: slurm-wlm is not installed" >&2; exit 1; }
    if running slurmctld && running slurmd && node_idle; then
      echo "SLURM_CONF=$conf (already running)"
      exit 0
    fi
    write_conf
    running slurmctld || slurmctld -f "$conf"
    running slurmd || slurmd -f "$conf" -N localhost
    if ! wait_for 60 node_idle; then
      echo "$0: the node did not become idle within 60 s; logs in $dir/log" >&2
      sinfo >&2 || true
      tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
      exit 1
    fi
    echo "SLURM_CONF=$conf"
    ;;
  stop)
    [ -f "$conf" ] || exit 0
    scontrol shutdown >/dev/null 2>&1 || true
    if ! wait_for 30 both_stopped; then
      for d in slurmctld slurmd; do
        if running $d; then kill "$(cat "$dir/$d.pid")" 2>/dev/null || true; fi
      done
      wait_for 10 both_stopped || { echo "$0: daemons still running" >&2; exit 1; }
    fi
    ;;
  status)
    sinfo
    ;;
  *)
    usage
    ;;
esac
