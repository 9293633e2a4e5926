#!/usr/bin/env bash
# Install and start a real SLURM cluster on this machine, for the tests of slurm/*.sbatch.
#
#   slurm/ci/start-cluster.sh     # as root; prints "SLURM cluster ...: <partitions> <states>" and exits 0
#   slurm/ci/stop-cluster.sh      # stops it and removes its namespaces, bridge and /etc/netns files
#
# Three nodes, two partitions:
#   debug (default)  one node named after this host, CPUs=2, its slurmd on 127.0.0.1 (the one-node
#                    jobs of tests/test_slurm.py);
#   twonode          vaelab-n1 and vaelab-n2, CPUs=2 each: two slurmd daemons, each in its own network
#                    and UTS namespace (own hostname; own address 10.234.77.11 / .12 on a veth
#                    link to the bridge vaelab-br0), with its own spool directory, pid and log file.
#                    A job there runs on two "machines" that share only the file system.
# slurmctld runs on the host, on the bridge's host side (10.234.77.1), so both the host's commands
# (sbatch, squeue, ...) and the namespaced nodes reach it. The namespaces get no default route:
# from them, only the bridge's /24 and their own loopback can be reached, and nothing else on the
# host's networks. Each slurmd sees /etc/netns/<node>/hosts as /etc/hosts (bound in a mount
# namespace of its own), which names the nodes, so Lightning's MASTER_ADDR (the first node's
# name) resolves in its jobs.
# Choose another /24 with VAELAB_SLURM_SUBNET=10.x.y if 10.234.77 is taken on this machine.
#
# What it sets up: Debian's slurm-wlm (apt-get), no munge (auth/none, cred/none), no cgroups or
# systemd (proctrack/linuxproc, task/none, daemons started directly), JobRequeue=1, KillWait=5 and
# a requeue delay of ~10 s instead of 120 (AuthInfo=cred_expire=10), so a requeued job restarts quickly.
#
# Idempotent: if the cluster is up with this script's current config it does nothing. It writes
# /etc/slurm/slurm.conf only where there is none or the one there is its own (it never overwrites
# another cluster's config: if that cluster answers it is used as it is, else the script fails),
# and restarts its own daemons only when its config changed. State and logs are kept under
# /var/lib/vaelab-slurm (log/slurmctld.log, log/slurmd-<node>.log; spool/<node>; run/*.pid).
#
# Only for throwaway CI machines and containers: auth/none lets any local user act as anyone.
# Exit status 0: up. 1: could not be started; the reason and the daemons' last log lines on stderr.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # slurmctld and slurmd live in /usr/sbin

CONF=/etc/slurm/slurm.conf
MARK="# vaelab CI cluster: written by slurm/ci/start-cluster.sh"
BASE=/var/lib/vaelab-slurm
WAIT_S="${VAELAB_SLURM_START_TIMEOUT:-60}"
SUBNET="${VAELAB_SLURM_SUBNET:-10.234.77}" # a /24 that exists only on the bridge and in the namespaces
BRIDGE=vaelab-br0
CTL_ADDR="$SUBNET.1"
NS_NODES=(vaelab-n1 vaelab-n2) # node i has the address $SUBNET.1i and the namespace of its name
HOST=$(hostname -s)

say() { echo "start-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

ns_addr() { # ns_addr NODE: the address of a namespaced node
  echo "$SUBNET.1${1##*-n}"
}
node_addr() { # node_addr NODE: where its slurmd listens
  if [ "$1" = "$HOST" ]; then echo 127.0.0.1; else ns_addr "$1"; fi
}
in_node() { # in_node NODE COMMAND...: run COMMAND in the node's network namespace (or on the host)
  local node=$1
  shift
  if [ "$node" = "$HOST" ]; then "$@"; else ip netns exec "$node" "$@"; fi
}
all_nodes() { echo "$HOST" "${NS_NODES[@]}"; }

node_states() { # "<node> <state>" per responding node (per node with --all)
  local which=--responding
  [ "${1:-}" = --all ] && which=""
  command -v sinfo >/dev/null 2>&1 || return 1
  timeout 10 sinfo --noheader $which --Node --format='%N %T' 2>/dev/null | sort -u
}
usable_state() {
  case "$1" in idle* | mix* | alloc* | completing*) return 0 ;; *) return 1 ;; esac
}
some_node_usable() { # the controller answers and some node is usable (any cluster)
  local states
  states=$(node_states) || return 1
  while read -r _ state; do usable_state "$state" && return 0; done <<<"$states"
  return 1
}
all_nodes_usable() { # every node of this script's cluster is usable
  local states node state
  states=$(node_states) || return 1
  for node in $(all_nodes); do
    state=$(awk -v n="$node" '$1 == n {print $2}' <<<"$states")
    usable_state "${state:-down}" || return 1
  done
}
pid_of() { # pid_of NAME: the pid of this script's daemon NAME (slurmctld, slurmd-<node>) if it runs
  local pid
  pid=$(cat "$BASE/run/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "$pid"
}
ours() { [ -f "$CONF" ] && head -n1 "$CONF" | grep -qxF "$MARK"; }
slurmd_listens() { # slurmd_listens NODE
  in_node "$1" timeout 2 bash -c "</dev/tcp/$(node_addr "$1")/6818" 2>/dev/null
}
daemons_alive() { # all of this script's daemons run and every slurmd answers on its address
  # (slurmctld notices a dead slurmd only minutes later, and says "idle" meanwhile)
  local node
  pid_of slurmctld >/dev/null || return 1
  for node in $(all_nodes); do
    pid_of "slurmd-$node" >/dev/null && slurmd_listens "$node" || return 1
  done
}
cluster_ok() { # usable; and if the cluster is this script's, all its nodes and daemons
  if ours; then all_nodes_usable && daemons_alive; else some_node_usable; fi
}
up() { # print the one-line status and exit 0
  echo "SLURM cluster $1: $(sinfo --noheader --format='partition %P, %D node(s) %N %T, CPUs %C (alloc/idle/other/total)' | paste -sd ';' | sed 's/;/; /g')"
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
command -v ip >/dev/null || die "the ip command (iproute2) is needed for the two namespaced nodes: apt-get install iproute2"
command -v unshare >/dev/null || die "unshare (util-linux) is needed for the two namespaced nodes"

# --- configure ---------------------------------------------------------------------------------
NEW_CONF=$(mktemp)
trap 'rm -f "$NEW_CONF"' EXIT
cat >"$NEW_CONF" <<EOF
$MARK
# A throwaway test cluster. Do not use auth/none on a shared machine.
ClusterName=vaelab-ci
# On the host side of the bridge to the namespaced nodes; host commands reach it there too.
SlurmctldHost=$HOST($CTL_ADDR)
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
# The nodes have the CPUs configured here even where the machine reports fewer.
SlurmdParameters=config_overrides
StateSaveLocation=$BASE/state
# One spool directory, pid and log file per node (%n: the node's name).
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
EOF
for node in "${NS_NODES[@]}"; do
  echo "NodeName=$node NodeAddr=$(ns_addr "$node") CPUs=2 State=UNKNOWN" >>"$NEW_CONF"
done
cat >>"$NEW_CONF" <<EOF
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=twonode Nodes=$(
  IFS=,
  echo "${NS_NODES[*]}"
) MaxTime=INFINITE State=UP
EOF

# --- the namespaced nodes' network -------------------------------------------------------------
# Idempotent: what exists is kept. Bridge $BRIDGE with $CTL_ADDR/24 on the host; per node a
# namespace named after it, a veth pair <node>-h (host, on the bridge) / eth0 (in the namespace).
setup_network() {
  local node addr used
  used=$(ip -4 -o addr show to "$SUBNET.0/24" | awk '$2 != "'"$BRIDGE"'" {print $2}')
  [ -z "$used" ] || die "$SUBNET.0/24 is already used on this host ($used): choose another with VAELAB_SLURM_SUBNET=10.x.y"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE (needs CAP_NET_ADMIN)"
  fi
  ip -4 -o addr show dev "$BRIDGE" | grep -qF " $CTL_ADDR/24 " || ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for node in "${NS_NODES[@]}"; do
    addr=$(ns_addr "$node")
    [ -e "/run/netns/$node" ] || ip netns add "$node" || die "cannot create the network namespace $node"
    if ! ip netns exec "$node" ip link show eth0 >/dev/null 2>&1; then
      ip link del "$node-h" 2>/dev/null || true
      ip link add "$node-h" type veth peer name "$node-n"
      ip link set "$node-n" netns "$node"
      ip netns exec "$node" ip link set "$node-n" name eth0
    fi
    ip link set "$node-h" master "$BRIDGE"
    ip link set "$node-h" up
    ip netns exec "$node" ip link set lo up
    ip -4 -o -n "$node" addr show dev eth0 | grep -qF " $addr/24 " || ip -n "$node" addr add "$addr/24" dev eth0
    ip -n "$node" link set eth0 up
    # The namespace's /etc/hosts (ip netns exec binds /etc/netns/<name>/hosts over /etc/hosts).
    mkdir -p "/etc/netns/$node"
    {
      echo "127.0.0.1 localhost"
      echo "$CTL_ADDR $HOST"
      for other in "${NS_NODES[@]}"; do echo "$(ns_addr "$other") $other"; done
    } >"/etc/netns/$node/hosts.tmp"
    mv "/etc/netns/$node/hosts.tmp" "/etc/netns/$node/hosts"
  done
}

if [ -e "$CONF" ] && ! ours; then
  some_node_usable && up "already up (not this script's config: $CONF)"
  die "$CONF exists and was not written by this script: refusing to overwrite another cluster's config"
fi
setup_network
if cmp -s "$NEW_CONF" "$CONF"; then
  cluster_ok && up "already up"
else
  # Every daemon of an earlier config, including pid files of the one-node layout (run/slurmd.pid).
  for pidfile in "$BASE"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    name=$(basename "$pidfile" .pid)
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
mkdir -p "$BASE/state" "$BASE/log" "$BASE/run"
start() { # start NAME COMMAND...: a daemon of this script, unless it runs already
  local name=$1
  shift
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid)"
  else
    say "starting $name"
    # The daemons fork into the background; setsid and /dev/null keep them off the caller's
    # terminal and pipes.
    "$@" </dev/null >>"$BASE/log/$name.stdout" 2>&1 ||
      die "$name failed to start: $(tail -n 20 "$BASE/log/$name.log" "$BASE/log/$name.stdout" 2>/dev/null)"
  fi
}
start slurmctld setsid slurmctld
for node in $(all_nodes); do
  mkdir -p "$BASE/spool/$node"
  if [ "$node" = "$HOST" ]; then
    start "slurmd-$node" setsid slurmd -N "$node"
  else
    # Its network namespace; its own UTS namespace (hostname = node name); its own mount
    # namespace, only to bind its /etc/hosts (not `ip netns exec`, which also remounts /sys and
    # so hides the cgroup file systems slurmd looks at).
    start "slurmd-$node" nsenter --net="/run/netns/$node" unshare --uts --mount --propagation slave -- \
      sh -c 'mount --bind "/etc/netns/$1/hosts" /etc/hosts && hostname "$1" && exec setsid slurmd -N "$1"' - "$node"
  fi
done

deadline=$((SECONDS + WAIT_S))
until all_nodes_usable && daemons_alive; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "the nodes did not become usable within ${WAIT_S}s:"
    sinfo --Node --long >&2 || true
    for name in slurmctld $(printf 'slurmd-%s ' $(all_nodes)); do
      say "--- last lines of $BASE/log/$name.log"
      tail -n 15 "$BASE/log/$name.log" >&2 || true
    done
    exit 1
  fi
  # A node left DOWN or DRAINED by an earlier life of the cluster: bring it back.
  node_states --all | while read -r node state; do
    case "$state" in down* | drain*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;; esac
  done
  sleep 0.5
done
up "started"
