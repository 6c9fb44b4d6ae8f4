#!/usr/bin/env bash
# Two network-namespace "hosts" on this machine, for testing a hostfile run over TCP without a
# second machine (tests/netns.rs; the README's "across machines" section).
#
#   netns-hosts.sh up NAME          make hosts NAME-h1 and NAME-h2; prints `subnet CIDR` and, per
#                                   host, `host ADDRESS NAMESPACE` (the lines a test parses)
#   netns-hosts.sh down NAME        remove them: their processes, namespaces, veths and bridge
#   netns-hosts.sh agent HOST CMD…  Open MPI's rsh agent: run CMD inside the namespace that owns
#                                   address HOST (`mpirun --mca plm_rsh_agent "$0 agent"`),
#                                   with Open MPI's session directories under a per-host
#                                   $TMPDIR/netns-hosts.NAMESPACE (removed by `down`)
#
# Layout (NAME: 1-9 lowercase letters or digits, so every interface name fits in 15 bytes):
#
#   root namespace:  bridge NAME-br 10.231.X.1/24 (where mpirun runs)
#                      ├── veth NAME-v1 ── eth0 10.231.X.2/24 in namespace NAME-h1
#                      └── veth NAME-v2 ── eth0 10.231.X.3/24 in namespace NAME-h2
#
# A bridge rather than one routed link per host: traffic between the hosts stays layer 2, so the
# machine-wide net.ipv4.ip_forward (0 here) is left alone. X is the first free third octet, so
# several sets of hosts can be up at once; nothing leaves the machine (no default route inside).
# `up` starts with `down`, so both are idempotent and a failed test's leftovers never block a rerun.
# Needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN (`ip netns add`).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

die() {
  echo "netns-hosts.sh: $*" >&2
  exit 2
}

check_name() {
  [[ "${1:-}" =~ ^[a-z0-9]{1,9}$ ]] || die "NAME must be 1-9 lowercase letters or digits, got '${1:-}'"
}

# The first 10.231.X.0/24 (X from 1) that no interface in the root namespace uses yet.
free_octet() {
  local used x
  used=$(ip -4 -o addr show | awk '{print $4}')
  for x in $(seq 1 254); do
    if ! grep -q "^10\.231\.$x\." <<<"$used"; then
      echo "$x"
      return
    fi
  done
  die "no free 10.231.X.0/24 left in the root namespace"
}

down() {
  local name=$1 ns pid i
  for i in 1 2; do
    ns="$name-h$i"
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      # A namespace outlives its name while processes (a hung orted) hold it; end them first.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      ip netns del "$ns"
    fi
    # Deleting the namespace deletes the veth pair with it; this covers a half-made `up`.
    ip link del "$name-v$i" 2>/dev/null || true
    rm -rf "${TMPDIR:-/tmp}/netns-hosts.$ns"
  done
  ip link del "$name-br" 2>/dev/null || true
}

up() {
  local name=$1 x ns i
  down "$name"
  x=$(free_octet)
  ip netns add "$name-h1" 2>/dev/null ||
    die "'ip netns add $name-h1' was refused: this needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN)"
  ip netns add "$name-h2"
  ip link add "$name-br" type bridge
  ip addr add "10.231.$x.1/24" dev "$name-br"
  ip link set "$name-br" up
  for i in 1 2; do
    ns="$name-h$i"
    ip link add "$name-v$i" type veth peer name eth0 netns "$ns"
    ip link set "$name-v$i" master "$name-br" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "10.231.$x.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  echo "subnet 10.231.$x.0/24"
  for i in 1 2; do
    echo "host 10.231.$x.$((i + 1)) $name-h$i"
  done
}

# Called by mpirun as `agent HOST CMD...` (CMD may be one word or many; sh re-splits it, as ssh would).
agent() {
  local host=$1 ns
  shift
  for ns in $(ip netns list | awk '{print $1}'); do
    if ip -n "$ns" -4 -o addr show 2>/dev/null | awk '{print $4}' | grep -qx "$host/[0-9]*"; then
      # Every namespace host has the same hostname and the same /tmp. Left alone, both daemons
      # (started a few ms apart) build and later delete one shared Open MPI session tree,
      # ompi.HOSTNAME.UID/jf.FAMILY/ with its hwloc.sm, racing each other; with it shared, 6 of
      # 142 launches under load had a daemon that daemonized and never reported (0 of 192 with
      # this), and mpirun waited until killed. A real host has its own /tmp; so does each one here.
      export OMPI_MCA_orte_tmpdir_base="${TMPDIR:-/tmp}/netns-hosts.$ns"
      mkdir -p "$OMPI_MCA_orte_tmpdir_base"
      exec ip netns exec "$ns" sh -c "$*"
    fi
  done
  die "agent: no network namespace has address $host (is 'netns-hosts.sh up' done?)"
}

case "${1:-}" in
  # Serialised machine-wide: two `up`s at once (parallel tests) must not pick the same subnet.
  up) check_name "${2:-}"; exec 9>"${TMPDIR:-/tmp}/netns-hosts.$(id -u).lock"; flock 9; up "$2" ;;
  down) check_name "${2:-}"; down "$2" ;;
  agent) [ $# -ge 3 ] || die "usage: agent HOST CMD..."; shift; agent "$@" ;;
  *) die "usage: netns-hosts.sh up NAME | down NAME | agent HOST CMD..." ;;
esac
