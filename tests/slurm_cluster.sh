#!/bin/bash
# A real Slurm for the tests: one slurmctld and two slurmd (fake nodes node1, node2 on this host,
# 8 fake GPUs each), all state under one folder. See ../shared/slurm/NOTES.md for why each setting.
#
#   tests/slurm_cluster.sh install   apt-installs Slurm, munge and shellcheck where missing
#   tests/slurm_cluster.sh start     installs if needed, starts the cluster (idempotent), prints
#                                    `export SLURM_CONF=...` lines to eval
#   tests/slurm_cluster.sh stop      cancels every job and stops the daemons this script started
#
# State folder: $TUNESPEC_SLURM_DIR (default /tmp/tunespec-slurm).
set -euo pipefail

DIR="${TUNESPEC_SLURM_DIR:-/tmp/tunespec-slurm}"
CONF="$DIR/slurm.conf"
NODES=(node1 node2)

log() { echo "slurm_cluster: $*" >&2; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force
    touch "$DIR/munged.started"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "munged did not start"
    exit 1
}

write_config() {
    local host cpus memory
    host="$(hostname -s)"
    cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
    memory="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mkdir -p "$DIR/state" "$DIR/gpu"
    for i in $(seq 0 7); do
        ln -sfn /dev/null "$DIR/gpu/gpu$i"
    done
    cat >"$CONF" <<EOF
ClusterName=tunespec
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
EnforcePartLimits=ALL
MinJobAge=3600
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdSpoolDir=$DIR/spool-%n
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmdLogFile=$DIR/slurmd-%n.log
GresTypes=gpu
NodeName=node[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$cpus RealMemory=$memory Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=node[1-2] Name=gpu File=$DIR/gpu/gpu[0-7]" >"$DIR/gres.conf"
}

wait_idle() {
    for _ in $(seq 150); do
        if [[ "$(SLURM_CONF="$CONF" sinfo -h -o '%T' 2>/dev/null | sort -u)" == idle ]]; then
            return
        fi
        sleep 0.2
    done
    log "nodes did not become idle; logs under $DIR"
    SLURM_CONF="$CONF" sinfo >&2 || true
    exit 1
}

stop_daemons() {
    local pids=() file
    for file in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid"; do
        if pid_alive "$file"; then
            pids+=("$(cat "$file")")
        fi
    done
    if ((${#pids[@]})); then
        kill "${pids[@]}"
        # Each daemon takes ~2 s to exit after SIGTERM; they stop in parallel.
        for _ in $(seq 100); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

start() {
    install_packages
    mkdir -p "$DIR"
    if pid_alive "$DIR/slurmctld.pid" && [[ -f "$CONF" ]]; then
        echo "export SLURM_CONF=$CONF"
        return
    fi
    stop_daemons
    rm -rf "$DIR/state" "$DIR"/spool-*
    start_munge
    write_config
    slurmctld -f "$CONF"
    for node in "${NODES[@]}"; do
        slurmd -f "$CONF" -N "$node"
    done
    wait_idle
    log "cluster up: ${NODES[*]} (state in $DIR)"
    echo "export SLURM_CONF=$CONF"
}

stop() {
    if pid_alive "$DIR/slurmctld.pid"; then
        # Running jobs first: an orphan slurmstepd can outlive the daemons.
        SLURM_CONF="$CONF" scancel --full --signal=KILL --state=RUNNING --user="$(id -un)" 2>/dev/null || true
        SLURM_CONF="$CONF" scancel --user="$(id -un)" 2>/dev/null || true
        sleep 1
    fi
    stop_daemons
    if [[ -f "$DIR/munged.started" ]] && [[ -f /run/munge/munged.pid ]]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$DIR/munged.started"
    fi
    log "stopped"
}

case "${1:-}" in
install) install_packages ;;
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 install|start|stop" >&2
    exit 2
    ;;
esac
