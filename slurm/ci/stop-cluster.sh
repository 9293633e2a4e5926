#!/usr/bin/env bash
# Stop the test cluster of slurm/ci/start-cluster.sh and remove what it made for its namespaced
# nodes: the network namespaces vaelab-n1 and vaelab-n2, the bridge vaelab-br0 (veth pairs go
# with their namespaces) and /etc/netns/vaelab-n*/. slurm-wlm, /etc/slurm/slurm.conf and
# /var/lib/vaelab-slurm (state and logs) stay, so start-cluster.sh starts it again quickly.
#
#   slurm/ci/stop-cluster.sh      # as root; exit 0 when nothing of the cluster runs any more
set -euo pipefail
BASE=/var/lib/vaelab-slurm
BRIDGE=vaelab-br0
NS_NODES=(vaelab-n1 vaelab-n2)

[ "$(id -u)" -eq 0 ] || { echo "stop-cluster: run this as root" >&2; exit 1; }
for pidfile in "$BASE"/run/*.pid; do # slurmd-<node>.pid first, slurmctld.pid last
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q slurm "/proc/$pid/comm" 2>/dev/null; then
    echo "stop-cluster: stopping $(basename "$pidfile" .pid) (pid $pid)" >&2
    kill "$pid" || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
done
for node in "${NS_NODES[@]}"; do
  if [ -e "/run/netns/$node" ]; then ip netns del "$node"; fi
  ip link del "$node-h" 2>/dev/null || true
  rm -rf "/etc/netns/$node"
done
ip link del "$BRIDGE" 2>/dev/null || true
echo "stop-cluster: stopped" >&2
