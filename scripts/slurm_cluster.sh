#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (for CI and local tests of slurm/*.sbatch).
#
#   sudo scripts/slurm_cluster.sh          # install if missing, configure, start; a no-op when up
#   scripts/slurm_cluster.sh --status      # exit 0 when the cluster answers, 1 otherwise
#   scripts/slurm_cluster.sh --stop        # stop slurmctld, slurmd (munged keeps running)
#
# Needs root (apt-get, munge key, daemons).  Debian/Ubuntu packages: slurmctld slurmd slurm-client
# munge.  One node named after `hostname`, all its CPUs and 90% of its memory, one partition
# `debug` (default), no accounting (use squeue / scontrol show job, not sacct).  Idempotent:
# a second call returns at once when `sinfo` already shows the node idle or allocated.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
HOST=$(hostname -s)

log() { echo "[slurm_cluster] $*" >&2; }

node_up() {
    command -v sinfo >/dev/null 2>&1 || return 1
    local state
    state=$(timeout 5 sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -n1) || return 1
    case "$state" in idle*|alloc*|mix*|comp*) return 0 ;; *) return 1 ;; esac
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        if ((SECONDS >= deadline)); then log "timed out waiting for $what"; return 1; fi
        sleep 0.5
    done
}

case "${1:-}" in
    --status) node_up; exit $? ;;
    --stop)
        for daemon in slurmd slurmctld; do
            pid=$(pgrep -x "$daemon" || true)
            [ -n "$pid" ] && kill "$pid" && log "stopped $daemon ($pid)"
        done
        exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--status|--stop]" >&2; exit 2 ;;
esac

if node_up; then
    log "already up: node $HOST"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "not root: cannot install or start SLURM here (run as root, or use an existing cluster)"
    exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: a key shared by every daemon and client on the node.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged --force 2>/dev/null || munged --force
    else
        munged --force
    fi
fi
wait_for 10 "munged" bash -c 'munge -n | unmunge >/dev/null 2>&1'

CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
cat >"$CONF_DIR/slurm.conf.new" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node cluster for tests.
ClusterName=dawn
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
MessageTimeout=20
SlurmdTimeout=60
InactiveLimit=0
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
if ! cmp -s "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf" 2>/dev/null; then
    mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
    # a changed node definition needs fresh daemons
    for daemon in slurmd slurmctld; do
        pid=$(pgrep -x "$daemon" || true)
        [ -n "$pid" ] && kill "$pid" && log "restarting $daemon (slurm.conf changed)"
    done
    sleep 1
else
    rm -f "$CONF_DIR/slurm.conf.new"
fi

pgrep -x slurmctld >/dev/null || slurmctld || { log "slurmctld failed to start: see $LOG_DIR/slurmctld.log"; exit 1; }
wait_for 20 "slurmctld" bash -c 'timeout 5 scontrol ping 2>/dev/null | grep -q UP'
pgrep -x slurmd >/dev/null || slurmd || { log "slurmd failed to start: see $LOG_DIR/slurmd.log"; exit 1; }
wait_for 30 "node $HOST" node_up || {
    # a node left DOWN/DRAIN by an earlier run comes back with RESUME
    scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    wait_for 15 "node $HOST after RESUME" node_up
}
log "up: node $HOST, $CPUS CPUs, ${MEM_MB} MB, partition debug"
