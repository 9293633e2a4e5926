#!/usr/bin/env bash
# Install and start a real one-node SLURM cluster on this machine, for the tests of slurm/*.sbatch.
#
#   slurm/ci/start-cluster.sh     # as root; prints "SLURM cluster ...: <partition> <state>" and exits 0
#
# What it sets up: Debian's slurm-wlm (apt-get), no munge (auth/none, cred/none), no cgroups or
# systemd (proctrack/linuxproc, task/none, daemons started directly), one node named after this
# host with CPUs=2 in the default partition "debug", JobRequeue=1, KillWait=5 and a requeue delay
# of ~10 s instead of 120 (AuthInfo=cred_expire=10), so a requeued job restarts quickly.
#
# Idempotent: if the cluster is up with this script's current config it does nothing. It writes
# /etc/slurm/slurm.conf only where there is none or the one there is its own (it never overwrites
# another cluster's config: if that cluster answers it is used as it is, else the script fails),
# and restarts its own daemons only when its config changed. State and logs are kept under
# /var/lib/vaelab-slurm (log/slurmctld.log, log/slurmd.log).
#
# Only for throwaway CI machines and containers: auth/none lets any local user act as anyone.
# Exit status 0: up. 1: could not be started; the reason and the daemons' last log lines on stderr.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # slurmctld and slurmd live in /usr/sbin

CONF=/etc/slurm/slurm.conf
MARK="# vaelab CI cluster: written by slurm/ci/start-cluster.sh"
BASE=/var/lib/vaelab-slurm
WAIT_S="${VAELAB_SLURM_START_TIMEOUT:-60}"

say() { echo "start-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

node_usable() { # the controller answers and a node is idle, mixed or allocated (not down or drained)
  local state
  command -v sinfo >/dev/null 2>&1 || return 1
  state=$(timeout 10 sinfo --noheader --responding --format=%T 2>/dev/null | head -n1) || return 1
  case "$state" in
    idle* | mix* | alloc* | completing*) return 0 ;;
    *) return 1 ;;
  esac
}
pid_of() { # pid_of NAME: the pid of this script's daemon NAME if it is running (else fails)
  local pid
  pid=$(cat "$BASE/run/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "$pid"
}
ours() { [ -f "$CONF" ] && head -n1 "$CONF" | grep -qxF "$MARK"; }
slurmd_listens() { timeout 2 bash -c '</dev/tcp/127.0.0.1/6818' 2>/dev/null; }
cluster_ok() { # usable; and if the cluster is this script's, both its daemons are alive
  # (slurmctld notices a dead slurmd only minutes later, and says "idle" meanwhile)
  node_usable || return 1
  ours || return 0
  pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && slurmd_listens
}
up() { # print the one-line status and exit 0
  echo "SLURM cluster $1: $(sinfo --noheader --format='partition %P, %D node(s) %N %T, CPUs %C (alloc/idle/other/total)')"
  exit 0
}

if [ "$(id -u)" -ne 0 ]; then
  cluster_ok && up "already up"
  die "not root: cannot install or start slurmctld/slurmd (run this as root, or start a cluster yourself)"
fi

# --- install -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
  say "installing slurm-wlm with apt-get (log: /tmp/vaelab-slurm-apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends slurm-wlm >/tmp/vaelab-slurm-apt.log 2>&1; then
    apt-get update >>/tmp/vaelab-slurm-apt.log 2>&1 || true
    apt-get install -y --no-install-recommends slurm-wlm >>/tmp/vaelab-slurm-apt.log 2>&1 || {
      tail -n 20 /tmp/vaelab-slurm-apt.log >&2
      die "apt-get install slurm-wlm failed"
    }
  fi
fi

# --- configure ---------------------------------------------------------------------------------
HOST=$(hostname -s)
NEW_CONF=$(mktemp)
trap 'rm -f "$NEW_CONF"' EXIT
cat >"$NEW_CONF" <<EOF
$MARK
# A throwaway one-node cluster for tests. Do not use auth/none on a shared machine.
ClusterName=vaelab-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (defaults 60 and 30): a requeued job starts as soon as it may.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Batch jobs may be requeued (Lightning runs "scontrol requeue" on SIGUSR1).
JobRequeue=1
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or runs out of time.
KillWait=5
# Finished jobs stay visible to scontrol and squeue for 10 minutes (there is no accounting database).
MinJobAge=600
ReturnToService=2
# The node has the CPUs configured here even where the machine reports fewer.
SlurmdParameters=config_overrides
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

if [ -e "$CONF" ] && ! ours; then
  node_usable && up "already up (not this script's config: $CONF)"
  die "$CONF exists and was not written by this script: refusing to overwrite another cluster's config"
fi
if cmp -s "$NEW_CONF" "$CONF"; then
  cluster_ok && up "already up"
else
  for name in slurmd slurmctld; do
    if pid=$(pid_of "$name"); then
      say "stopping $name (pid $pid) to apply the changed $CONF"
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  say "writing $CONF"
  mkdir -p "$(dirname "$CONF")"
  install -m 0644 "$NEW_CONF" "$CONF"
fi

# --- start -------------------------------------------------------------------------------------
mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/run"
for name in slurmctld slurmd; do
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid)"
  else
    say "starting $name"
    # Both daemonize; setsid and /dev/null keep them off the caller's terminal and pipes.
    setsid "$name" </dev/null >>"$BASE/log/$name.stdout" 2>&1 ||
      die "$name failed to start: $(tail -n 20 "$BASE/log/$name.log" "$BASE/log/$name.stdout" 2>/dev/null)"
  fi
done

deadline=$((SECONDS + WAIT_S))
until node_usable && slurmd_listens; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "the node did not become usable within ${WAIT_S}s:"
    sinfo --Node --long >&2 || true
    for name in slurmctld slurmd; do
      say "--- last lines of $BASE/log/$name.log"
      tail -n 15 "$BASE/log/$name.log" >&2 || true
    done
    exit 1
  fi
  # A node left DOWN or DRAINED by an earlier life of the cluster: bring it back.
  if timeout 5 sinfo --noheader --responding --format=%T 2>/dev/null | grep -qE '^(down|drain)'; then
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  fi
  sleep 0.5
done
up "started"
