#!/usr/bin/env bash
# A single-node Slurm cluster in one directory, started as root without
# systemd: munged, slurmctld and slurmd with a minimal slurm.conf, state,
# spool, logs and sockets all under DIR, on two free ports. Sourced by
# run.sh; also a command for trying the sbatch scripts by hand:
#
#   tests/slurm/cluster.sh start DIR    # then: export SLURM_CONF=DIR/slurm.conf
#   tests/slurm/cluster.sh stop DIR
#
# No cgroups (proctrack/linuxproc, task/none), no accounting database, and
# two fake GPUs (gres gpu, character devices under DIR/dev) so that
# --gpus-per-node in the sbatch scripts means what it means on a cluster.
# Every process of the cluster, daemons and jobs alike, carries
# FPTQ_SLURM_TEST=DIR in its environment; stop finds leftovers by it.

# start DIR: prints nothing on success; on failure the logs, status 1
slurm_cluster_start() {
    local dir=$1 host ports port_ctld port_d i
    host=$(hostname -s)
    mkdir -p "$dir"/{munge,state,spool,log,dev} || return 1
    # munged refuses a socket whose directories (DIR and every one above it)
    # not everyone may traverse
    chmod 755 "$dir" "$dir/munge" || return 1
    : >"$dir/pids"

    # --- munge: its own key, socket, pid and seed files ---
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$dir/munge/munge.key" ||
        return 1
    FPTQ_SLURM_TEST=$dir munged -F --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" --log-file="$dir/log/munged.log" \
        >"$dir/log/munged.out" 2>&1 </dev/null &
    echo "munged $!" >>"$dir/pids"
    for i in $(seq 50); do
        munge -S "$dir/munge/munge.socket" -n </dev/null 2>/dev/null | unmunge -S "$dir/munge/munge.socket" \
            >/dev/null 2>&1 && break
        sleep 0.1
    done
    if [ "$i" -eq 50 ]; then
        echo "munged did not start:"; cat "$dir/log/munged.out"
        return 1
    fi

    # --- two ports nobody listens on now ---
    ports=$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])') || return 1
    read -r port_ctld port_d <<<"$ports"

    # --- two fake GPUs: gres needs character devices; these are /dev/null's ---
    for i in 0 1; do
        mknod "$dir/dev/gpu$i" c 1 3 2>/dev/null || : >"$dir/dev/gpu$i"
    done
    echo "NodeName=$host Name=gpu File=$dir/dev/gpu[0-1]" >"$dir/gres.conf"
    : >"$dir/plugstack.conf"

    cat >"$dir/slurm.conf" <<EOF
# written by tests/slurm/cluster.sh: one node, root, no cgroups, no accounting
ClusterName=fptqtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port_ctld
SlurmdPort=$port_d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (120 s by default)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    # --- the daemons, in the foreground of their own background jobs: their PIDs are known ---
    SLURM_CONF=$dir/slurm.conf FPTQ_SLURM_TEST=$dir slurmctld -D -f "$dir/slurm.conf" \
        >"$dir/log/slurmctld.out" 2>&1 </dev/null &
    echo "slurmctld $!" >>"$dir/pids"
    SLURM_CONF=$dir/slurm.conf FPTQ_SLURM_TEST=$dir slurmd -D -f "$dir/slurm.conf" \
        >"$dir/log/slurmd.out" 2>&1 </dev/null &
    echo "slurmd $!" >>"$dir/pids"

    for i in $(seq 150); do
        [ "$(SLURM_CONF=$dir/slurm.conf sinfo -h -o %T 2>/dev/null)" = idle ] && return 0
        sleep 0.2
    done
    echo "the node did not come up (sinfo: $(SLURM_CONF=$dir/slurm.conf sinfo -h -o '%T %E' 2>&1))"
    tail -n 20 "$dir/log/slurmctld.out" "$dir/log/slurmd.out"
    return 1
}

# PIDs of processes whose environment has FPTQ_SLURM_TEST=DIR (jobs, steps, daemons)
slurm_cluster_marked_pids() {
    local dir=$1 p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] && continue
        tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "FPTQ_SLURM_TEST=$dir" && echo "$p"
    done
}

# stop DIR: jobs cancelled, then every process of the cluster ended by its PID
slurm_cluster_stop() {
    local dir=$1 pid munged_pid i left
    [ -f "$dir/pids" ] || return 0
    munged_pid=$(awk '$1 == "munged" { print $2 }' "$dir/pids")
    if [ -f "$dir/slurm.conf" ]; then
        SLURM_CONF=$dir/slurm.conf scancel --quiet --user=root 2>/dev/null
        for i in $(seq 50); do
            [ -z "$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # what is left of jobs (batch shells, steps, ranks), then the slurm daemons;
    # munged last, since slurmd and slurmctld authenticate through it to the end
    for pid in $(slurm_cluster_marked_pids "$dir"); do
        [ "$pid" = "$munged_pid" ] || kill -TERM "$pid" 2>/dev/null
    done
    for i in $(seq 50); do
        left=$(slurm_cluster_marked_pids "$dir" | grep -vx "${munged_pid:-none}")
        [ -z "$left" ] && break
        sleep 0.2
    done
    for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    while read -r _ pid; do
        # the daemons by the PIDs recorded at start, should their environment be unreadable
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done < <(grep -v '^munged ' "$dir/pids")
    if [ -n "$munged_pid" ]; then
        kill -TERM "$munged_pid" 2>/dev/null
        for i in $(seq 50); do
            kill -0 "$munged_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$munged_pid" 2>/dev/null
    fi
    # reap them where they are this shell's children
    wait 2>/dev/null
    rm -f "$dir/pids"
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case ${1:-} in
        start) [ $# -eq 2 ] && slurm_cluster_start "$(realpath -m "$2")" && { disown -a; echo "SLURM_CONF=$(realpath "$2")/slurm.conf"; } ;;
        stop) [ $# -eq 2 ] && slurm_cluster_stop "$(realpath -m "$2")" ;;
        *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
    esac
fi
