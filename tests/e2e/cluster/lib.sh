# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for the end-to-end cluster scripts.
# Sourced by build.sh, images.sh, up.sh, smoke.sh and down.sh, and not meant
# to run alone.
# Every setting can be overridden from the environment.

E2E_CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Versions of the components that build.sh compiles. The tool modules under
# tools/ pin the same versions, so change both together.
KUBE_VERSION="v1.37.2"
ETCD_VERSION="v3.6.17"

# Cache of compiled binaries and images, kept across runs.
PHANTOM_E2E_CACHE="${PHANTOM_E2E_CACHE:-/var/cache/phantom-e2e}"
E2E_BIN="${PHANTOM_E2E_CACHE}/bin"
E2E_IMAGES="${PHANTOM_E2E_CACHE}/images"

# Per-cluster state: certificates, configs, logs, data, sockets, pid file.
PHANTOM_E2E_STATE="${PHANTOM_E2E_STATE:-/tmp/phantom-e2e}"

# Loopback ports. Fixed so that logs and kubeconfigs are predictable, and
# overridable so that a second cluster or a busy port can be worked around.
E2E_ETCD_CLIENT_PORT="${E2E_ETCD_CLIENT_PORT:-23790}"
E2E_ETCD_PEER_PORT="${E2E_ETCD_PEER_PORT:-23800}"
E2E_APISERVER_PORT="${E2E_APISERVER_PORT:-16443}"
E2E_CONTROLLER_MANAGER_PORT="${E2E_CONTROLLER_MANAGER_PORT:-16257}"
E2E_SCHEDULER_PORT="${E2E_SCHEDULER_PORT:-16259}"
E2E_KUBELET_PORT="${E2E_KUBELET_PORT:-16250}"
E2E_KUBELET_HEALTHZ_PORT="${E2E_KUBELET_HEALTHZ_PORT:-16248}"

# Name of the single node, and the service CIDR handed to the API server.
E2E_NODE_NAME="${E2E_NODE_NAME:-phantom-e2e}"
E2E_SERVICE_CIDR="${E2E_SERVICE_CIDR:-10.96.0.0/16}"

# Images of the pod sandbox (pause) container and of test pods, which
# images.sh builds.
E2E_PAUSE_IMAGE="${E2E_PAUSE_IMAGE:-docker.io/phantom/pause:e2e}"
E2E_BUSYBOX_IMAGE="${E2E_BUSYBOX_IMAGE:-docker.io/phantom/busybox:e2e}"

# containerd namespace of the CRI plugin, which contains kubelet's images and
# containers.
E2E_CTR_NAMESPACE="k8s.io"

# Paths inside the state directory.
e2e_state_paths() {
  STATE="${PHANTOM_E2E_STATE}"
  PKI="${STATE}/pki"
  LOGS="${STATE}/logs"
  PIDS="${STATE}/pids"
  KUBECONFIG_ADMIN="${STATE}/kubeconfig"
  CONTAINERD_ROOT="${STATE}/containerd/root"
  CONTAINERD_STATE="${STATE}/containerd/state"
  CONTAINERD_SOCK="${STATE}/containerd/containerd.sock"
  KUBELET_ROOT="${E2E_KUBELET_ROOT:-${STATE}/kubelet}"
  if [[ "${STATE}" =~ [[:space:]] || "${KUBELET_ROOT}" =~ [[:space:]] ]]; then
    die "state directory '${STATE}' or kubelet root '${KUBELET_ROOT}' contains whitespace; choose a path without it"
  fi
  # Host paths outside the state directory that the cluster's programs create
  # at fixed locations: kubelet's device-plugin socket directory, and the
  # directory of containerd's shim sockets. up.sh lists in CREATED_PATHS the
  # ones that did not exist before, and down.sh removes exactly those.
  FIXED_HOST_PATHS=(/var/lib/kubelet /run/containerd)
  CREATED_PATHS="${STATE}/created-paths"
  # The cgroup parent under which kubelet puts every pod (cgroupfs driver).
  # down.sh removes it in every hierarchy.
  CGROUP_ROOT="/phantom-e2e"
  # Present when up.sh added the local route for the service CIDR, which
  # down.sh then deletes.
  SERVICE_ROUTE="${STATE}/service-route"
  # Comment of the iptables rules that forward a Service's ClusterIP to a
  # host-network pod on 127.0.0.1 (see the README). down.sh deletes every
  # rule that carries it.
  IPTABLES_COMMENT="phantom-e2e"
}

log() {
  printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# Wait until the command succeeds, polling every half second, for at most
# $1 seconds. The command's output is discarded, and a timeout returns 1.
wait_for() {
  local timeout="$1"
  shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
}

require_root() {
  if [[ "$(id -u)" != 0 ]]; then
    die "$(basename "$0") must run as root: containerd, kubelet and the mounts they make need it"
  fi
}

# Print the start time of a process in clock ticks since boot (field 22 of
# /proc/PID/stat). Together with the pid it identifies one process, so a
# recycled pid is never mistaken for a recorded one.
process_start_time() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # The command name in field 2 may contain spaces, so cut after its ')'.
  stat="${stat##*) }"
  awk '{print $20}' <<<"${stat}"
}

# Succeed when pid $1 runs and started at time $2. A zombie counts as
# stopped: it has exited and waits only for its parent to reap it.
process_matches() {
  local pid="$1" start="$2" stat
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/${pid}/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  local fields
  read -r -a fields <<<"${stat}"
  [[ "${fields[0]}" != Z && "${fields[19]}" == "${start}" ]]
}

# Print the mount points at or below directory $1, deepest (most recently
# mounted) first, which is the order to unmount them in.
# NOTE: mountinfo escapes a space as \040 and this prints it escaped, so
# e2e_state_paths rejects state directories that contain whitespace.
mounts_under() {
  local dir="${1%/}"
  awk -v dir="${dir}" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo | tac
}

# Print the mount point of every cgroup hierarchy (v1 controllers, named v1
# hierarchies and the v2 unified hierarchy).
cgroup_hierarchies() {
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}
