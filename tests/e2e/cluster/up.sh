#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster from the binaries that build.sh
# compiled: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd and kubelet, all as host processes bound to 127.0.0.1. Waits
# until the node is Ready and schedulable, then writes
#   ${PHANTOM_E2E_STATE}/kubeconfig   cluster-admin kubeconfig
#   ${PHANTOM_E2E_STATE}/env          variables to source (KUBECONFIG, etcdctl, paths)
#   ${PHANTOM_E2E_STATE}/pids         "name pid start-time" per started process
#   ${PHANTOM_E2E_STATE}/timings      seconds spent in each phase
#
# Any earlier state directory is removed first, so every run starts from an
# empty cluster. On failure the logs' last lines are printed and down.sh runs,
# unless E2E_KEEP_ON_FAILURE=1.
#
# Usage: up.sh   (after build.sh; up.sh runs images.sh base itself)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_state_paths

KUBECTL="${E2E_BIN}/kubectl"
ETCDCTL="${E2E_BIN}/etcdctl"
APISERVER_URL="https://127.0.0.1:${E2E_APISERVER_PORT}"
# Where hostNetwork pods and host tools reach the API server. The cluster has
# no service proxy, so the kubernetes Service IP is not routable.
SERVICE_ACCOUNT_ISSUER="${APISERVER_URL}"
# How often kubelet resyncs each pod, which is also how often it calls
# NodePublishVolume for a CSI driver with requiresRepublish.
E2E_KUBELET_SYNC_FREQUENCY="${E2E_KUBELET_SYNC_FREQUENCY:-1m}"
E2E_WAIT_SECONDS="${E2E_WAIT_SECONDS:-180}"

# -------------------------------------------------------------------------
# Preconditions

check_prerequisites() {
  require_root
  local name
  for name in etcd etcdctl kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [[ -x "${E2E_BIN}/${name}" ]] || die "${E2E_BIN}/${name} not found; run build.sh first"
  done
  for name in containerd containerd-shim-runc-v2 ctr runc openssl curl go ip; do
    command -v "${name}" >/dev/null ||
      die "${name} not found; install it (apt-get install -y containerd runc containernetworking-plugins busybox-static openssl curl)"
  done
  [[ -x /usr/lib/cni/loopback ]] || die "/usr/lib/cni/loopback not found; apt-get install -y containernetworking-plugins"
  [[ -f /sys/fs/cgroup/cgroup.controllers || -d /sys/fs/cgroup/memory ]] || die "no cgroup hierarchy found under /sys/fs/cgroup"

  if [[ -s "${PIDS}" ]]; then
    local pid_name pid start
    while read -r pid_name pid start; do
      if process_matches "${pid}" "${start}"; then
        die "${pid_name} (pid ${pid}) of an earlier cluster still runs; run down.sh first"
      fi
    done <"${PIDS}"
  fi

  local port
  for port in "${E2E_ETCD_CLIENT_PORT}" "${E2E_ETCD_PEER_PORT}" "${E2E_APISERVER_PORT}" \
    "${E2E_CONTROLLER_MANAGER_PORT}" "${E2E_SCHEDULER_PORT}" "${E2E_KUBELET_PORT}" "${E2E_KUBELET_HEALTHZ_PORT}"; do
    if [[ -n "$(ss -Hltn "sport = :${port}")" ]]; then
      die "port ${port} is already in use; stop its owner or override the E2E_*_PORT variable in lib.sh"
    fi
  done
}

# Remove an earlier run's state. Refuses while anything is mounted below it,
# because rm -rf would descend into the mounts.
reset_state() {
  local dir
  for dir in "${STATE}" "${KUBELET_ROOT}"; do
    if mounts_under "${dir}" | grep -q .; then
      die "mounts remain under ${dir}; run down.sh first"
    fi
  done
  if [[ -d "${STATE}" ]]; then
    rm -rf --one-file-system "${STATE}"
  fi
  mkdir -p "${STATE}" "${PKI}" "${LOGS}"
  chmod 0700 "${STATE}"
  : >"${PIDS}"
  : >"${STATE}/timings"
  # down.sh reads this to find a kubelet root directory outside the state
  # directory even when E2E_KUBELET_ROOT is no longer set.
  echo "${KUBELET_ROOT}" >"${STATE}/kubelet-root"
  local path
  : >"${CREATED_PATHS}"
  for path in "${FIXED_HOST_PATHS[@]}"; do
    [[ -e "${path}" ]] || echo "${path}" >>"${CREATED_PATHS}"
  done
}

# -------------------------------------------------------------------------
# Certificates and kubeconfigs

# Write a key and a certificate signed by the cluster CA.
# Arguments: file stem, subject, extended key usage, optional subjectAltName.
issue_cert() {
  local stem="$1" subject="$2" usage="$3" san="${4:-}"
  local ext="${PKI}/${stem}.ext"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = ${usage}"
    [[ -n "${san}" ]] && echo "subjectAltName = ${san}"
  } >"${ext}"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "${PKI}/${stem}.key" -subj "${subject}" -out "${PKI}/${stem}.csr" 2>/dev/null
  openssl x509 -req -in "${PKI}/${stem}.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "${ext}" -out "${PKI}/${stem}.crt" 2>/dev/null
  rm -f "${PKI}/${stem}.csr" "${ext}"
}

generate_pki() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "${PKI}/ca.key" -out "${PKI}/ca.crt" -days 30 -subj "/CN=phantom-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

  # The API server's certificate also names the kubernetes Service's first
  # IP and DNS names, so in-cluster clients that do reach it can verify it.
  local service_ip
  service_ip="$(first_service_ip "${E2E_SERVICE_CIDR}")"
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:${service_ip},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  issue_cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  issue_cert etcd-server "/CN=etcd" serverAuth "IP:127.0.0.1,DNS:localhost"
  issue_cert admin "/O=system:masters/CN=phantom-e2e-admin" clientAuth
  issue_cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert scheduler "/CN=system:kube-scheduler" clientAuth
  issue_cert kubelet-client "/O=system:nodes/CN=system:node:${E2E_NODE_NAME}" clientAuth
  issue_cert kubelet-server "/CN=${E2E_NODE_NAME}" serverAuth "IP:127.0.0.1,DNS:${E2E_NODE_NAME},DNS:localhost"

  # Service-account tokens are signed with RS256, the algorithm every JWT
  # verifier (OpenBao's JWT auth method included) accepts.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${PKI}/sa.key" 2>/dev/null
  openssl pkey -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub"
  chmod 0600 "${PKI}"/*.key
}

# Print the first host address of an IPv4 CIDR, the kubernetes Service's IP.
first_service_ip() {
  local base="${1%/*}" a b c d
  IFS=. read -r a b c d <<<"${base}"
  echo "${a}.${b}.${c}.$((d + 1))"
}

# Write a kubeconfig with embedded credentials.
# Arguments: output file, user name, certificate stem in the PKI directory.
write_kubeconfig() {
  local file="$1" user="$2" stem="$3"
  cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: phantom-e2e
  cluster:
    server: ${APISERVER_URL}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: ${user}
  user:
    client-certificate-data: $(base64 -w0 "${PKI}/${stem}.crt")
    client-key-data: $(base64 -w0 "${PKI}/${stem}.key")
contexts:
- name: phantom-e2e
  context:
    cluster: phantom-e2e
    user: ${user}
current-context: phantom-e2e
EOF
  chmod 0600 "${file}"
}

generate_kubeconfigs() {
  write_kubeconfig "${KUBECONFIG_ADMIN}" phantom-e2e-admin admin
  write_kubeconfig "${STATE}/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "${STATE}/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "${STATE}/kubelet.kubeconfig" "system:node:${E2E_NODE_NAME}" kubelet-client
}

# -------------------------------------------------------------------------
# Process management

# Start a daemon in its own session with its output in ${LOGS}/NAME.log, and
# record its pid and start time so down.sh stops exactly this process.
# setsid runs the command in place, without a fork, because a script without
# job control is never a process group leader. The exe check below verifies it.
start_daemon() {
  local name="$1"
  shift
  setsid "$@" >"${LOGS}/${name}.log" 2>&1 </dev/null &
  local pid=$!
  local want
  want="$(readlink -f "$(command -v "$1")")"
  local i
  for ((i = 0; i < 50; i++)); do
    [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${want}" ]] && break
    kill -0 "${pid}" 2>/dev/null || die "${name} exited at start; see ${LOGS}/${name}.log"
    sleep 0.1
  done
  [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${want}" ]] ||
    die "pid ${pid} is not ${want}; cannot track ${name}"
  echo "${name} ${pid} $(process_start_time "${pid}")" >>"${PIDS}"
  log "started ${name} (pid ${pid})"
}

# Fail with the log's tail when the recorded daemon is gone, else succeed.
daemon_alive() {
  local name="$1" pid start
  read -r _ pid start < <(grep "^${name} " "${PIDS}")
  process_matches "${pid}" "${start}"
}

wait_ready() {
  local name="$1"
  shift
  local started=${SECONDS}
  local deadline=$((SECONDS + E2E_WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$(grep "^${name} " "${PIDS}" || true)" ]] && ! daemon_alive "${name}"; then
      die "${name} exited; see ${LOGS}/${name}.log"
    fi
    ((SECONDS < deadline)) || die "${name} not ready after ${E2E_WAIT_SECONDS}s; see ${LOGS}/${name}.log"
    sleep 0.5
  done
  log "${name} ready after $((SECONDS - started))s"
}

record_phase() {
  echo "$1 $2" >>"${STATE}/timings"
}

# -------------------------------------------------------------------------
# Control plane

start_etcd() {
  start_daemon etcd "${E2E_BIN}/etcd" \
    --name "${E2E_NODE_NAME}" \
    --data-dir "${STATE}/etcd" \
    --listen-client-urls "https://127.0.0.1:${E2E_ETCD_CLIENT_PORT}" \
    --advertise-client-urls "https://127.0.0.1:${E2E_ETCD_CLIENT_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${E2E_ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${E2E_ETCD_PEER_PORT}" \
    --initial-cluster "${E2E_NODE_NAME}=http://127.0.0.1:${E2E_ETCD_PEER_PORT}" \
    --initial-cluster-state new \
    --cert-file "${PKI}/etcd-server.crt" --key-file "${PKI}/etcd-server.key" \
    --trusted-ca-file "${PKI}/ca.crt" --client-cert-auth \
    --unsafe-no-fsync
  wait_ready etcd "${ETCDCTL}" --endpoints "https://127.0.0.1:${E2E_ETCD_CLIENT_PORT}" \
    --cacert "${PKI}/ca.crt" --cert "${PKI}/apiserver-etcd-client.crt" --key "${PKI}/apiserver-etcd-client.key" \
    endpoint health
}

start_apiserver() {
  start_daemon kube-apiserver "${E2E_BIN}/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${E2E_APISERVER_PORT}" \
    --etcd-servers "https://127.0.0.1:${E2E_ETCD_CLIENT_PORT}" \
    --etcd-cafile "${PKI}/ca.crt" --etcd-certfile "${PKI}/apiserver-etcd-client.crt" --etcd-keyfile "${PKI}/apiserver-etcd-client.key" \
    --tls-cert-file "${PKI}/apiserver.crt" --tls-private-key-file "${PKI}/apiserver.key" \
    --client-ca-file "${PKI}/ca.crt" \
    --kubelet-client-certificate "${PKI}/apiserver-kubelet-client.crt" --kubelet-client-key "${PKI}/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "${PKI}/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "${SERVICE_ACCOUNT_ISSUER}" \
    --service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
    --service-cluster-ip-range "${E2E_SERVICE_CIDR}" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --profiling=false \
    --v 2
  wait_ready kube-apiserver "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get --raw /readyz
}

start_controller_manager() {
  local kubeconfig="${STATE}/controller-manager.kubeconfig"
  start_daemon kube-controller-manager "${E2E_BIN}/kube-controller-manager" \
    --kubeconfig "${kubeconfig}" --authentication-kubeconfig "${kubeconfig}" --authorization-kubeconfig "${kubeconfig}" \
    --bind-address 127.0.0.1 --secure-port "${E2E_CONTROLLER_MANAGER_PORT}" \
    --cert-dir "${STATE}/controller-manager" \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "${PKI}/sa.key" \
    --root-ca-file "${PKI}/ca.crt" \
    --cluster-signing-cert-file "${PKI}/ca.crt" --cluster-signing-key-file "${PKI}/ca.key" \
    --profiling=false \
    --v 2
  wait_ready kube-controller-manager curl -fsk "https://127.0.0.1:${E2E_CONTROLLER_MANAGER_PORT}/healthz"
}

start_scheduler() {
  local kubeconfig="${STATE}/scheduler.kubeconfig"
  cat >"${STATE}/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ${kubeconfig}
leaderElection:
  leaderElect: false
EOF
  start_daemon kube-scheduler "${E2E_BIN}/kube-scheduler" \
    --config "${STATE}/scheduler.yaml" \
    --authentication-kubeconfig "${kubeconfig}" --authorization-kubeconfig "${kubeconfig}" \
    --bind-address 127.0.0.1 --secure-port "${E2E_SCHEDULER_PORT}" \
    --profiling=false \
    --v 2
  wait_ready kube-scheduler curl -fsk "https://127.0.0.1:${E2E_SCHEDULER_PORT}/healthz"
}

# -------------------------------------------------------------------------
# Node: containerd and kubelet

start_containerd() {
  local cni_conf="${STATE}/cni/net.d"
  mkdir -p "${cni_conf}" "$(dirname "${CONTAINERD_SOCK}")"
  # Pods use the host network, so the only CNI network is loopback. Its
  # config makes containerd report the network ready, as the node's Ready
  # condition requires.
  cat >"${cni_conf}/99-loopback.conf" <<EOF
{"cniVersion": "0.4.0", "name": "phantom-e2e-loopback", "type": "loopback"}
EOF

  # restrict_oom_score_adj: containers may not lower their OOM score below
  # containerd's, which needs no CAP_SYS_RESOURCE. SystemdCgroup = false: the
  # cgroupfs driver, as kubelet uses, because no systemd runs here.
  cat >"${STATE}/containerd.toml" <<EOF
version = 2
root = "${CONTAINERD_ROOT}"
state = "${CONTAINERD_STATE}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "${STATE}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${E2E_PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "${STATE}/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${cni_conf}"
EOF
  start_daemon containerd "$(command -v containerd)" --config "${STATE}/containerd.toml"
  wait_ready containerd ctr --address "${CONTAINERD_SOCK}" version
}

import_images() {
  "${E2E_CLUSTER_DIR}/images.sh" base
  "${E2E_CLUSTER_DIR}/images.sh" import "${E2E_IMAGES}/pause.tar" "${E2E_IMAGES}/busybox.tar"
}

# kubelet puts every pod cgroup below ${CGROUP_ROOT}, which must exist in
# every hierarchy before kubelet starts. down.sh removes the whole subtree.
create_cgroup_root() {
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do
    mkdir -p "${hierarchy}${CGROUP_ROOT}"
    # A new cpuset v1 group starts with no CPUs and no memory nodes, and a
    # group without them cannot hold processes.
    if [[ -f "${hierarchy}/cpuset.cpus" && ! -f "${hierarchy}/cgroup.controllers" ]]; then
      cat "${hierarchy}/cpuset.cpus" >"${hierarchy}${CGROUP_ROOT}/cpuset.cpus"
      cat "${hierarchy}/cpuset.mems" >"${hierarchy}${CGROUP_ROOT}/cpuset.mems"
    fi
  done
}

start_kubelet() {
  mkdir -p "${KUBELET_ROOT}" "${STATE}/pod-logs"
  cat >"${STATE}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: ${E2E_KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${E2E_KUBELET_HEALTHZ_PORT}
tlsCertFile: ${PKI}/kubelet-server.crt
tlsPrivateKeyFile: ${PKI}/kubelet-server.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${PKI}/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
cgroupDriver: cgroupfs
cgroupRoot: ${CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
podLogsDir: ${STATE}/pod-logs
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
syncFrequency: ${E2E_KUBELET_SYNC_FREQUENCY}
serializeImagePulls: false
# Images are imported, never pulled, so image garbage collection would only
# delete them. Disk-pressure eviction starts only on a nearly full disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
EOF
  # --cloud-provider=external keeps kubelet from overwriting the node's
  # addresses: without it kubelet reports the default-route interface's
  # address, where it does not listen, and it rejects 127.0.0.1 as --node-ip.
  # This script then does the cloud controller's part in set_node_address.
  start_daemon kubelet "${E2E_BIN}/kubelet" \
    --config "${STATE}/kubelet.yaml" \
    --kubeconfig "${STATE}/kubelet.kubeconfig" \
    --root-dir "${KUBELET_ROOT}" \
    --cert-dir "${STATE}/kubelet-pki" \
    --hostname-override "${E2E_NODE_NAME}" \
    --cloud-provider external \
    --v 2
  wait_ready kubelet curl -fs "http://127.0.0.1:${E2E_KUBELET_HEALTHZ_PORT}/healthz"
  wait_ready kubelet "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get node "${E2E_NODE_NAME}"
}

# Set the node's InternalIP to 127.0.0.1, where kubelet listens and where the
# API server connects for logs and exec, and remove the taint that marks a
# node as waiting for its cloud controller.
set_node_address() {
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" patch node "${E2E_NODE_NAME}" --subresource status --type merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"},{\"type\":\"Hostname\",\"address\":\"${E2E_NODE_NAME}\"}]}}" >/dev/null
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" taint node "${E2E_NODE_NAME}" \
    node.cloudprovider.kubernetes.io/uninitialized:NoSchedule- >/dev/null 2>&1 || true
}

node_ready_and_untainted() {
  local ready taints
  ready="$("${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get node "${E2E_NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
  taints="$("${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get node "${E2E_NODE_NAME}" -o jsonpath='{.spec.taints}')"
  [[ "${ready}" == True && -z "${taints}" ]]
}

node_address_is_loopback() {
  [[ "$("${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get node "${E2E_NODE_NAME}" \
    -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')" == 127.0.0.1 ]]
}

# -------------------------------------------------------------------------
# Cluster objects and outputs

configure_cluster() {
  # Anonymous clients (OpenBao's JWT auth method among them) may read the
  # service-account issuer's discovery document and keys.
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" create clusterrolebinding phantom-e2e-issuer-discovery \
    --clusterrole system:service-account-issuer-discovery --group system:unauthenticated >/dev/null
  wait_ready kube-controller-manager "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get serviceaccount default -n default
}

write_env() {
  cat >"${STATE}/env" <<EOF
# Source this file to use the end-to-end cluster from a shell or a test.
export PHANTOM_E2E_STATE=${STATE}
export KUBECONFIG=${KUBECONFIG_ADMIN}
export PATH=${E2E_BIN}:\${PATH}
export PHANTOM_E2E_BIN=${E2E_BIN}
export PHANTOM_E2E_CACHE=${PHANTOM_E2E_CACHE}
export PHANTOM_E2E_APISERVER=${APISERVER_URL}
export PHANTOM_E2E_APISERVER_PORT=${E2E_APISERVER_PORT}
export PHANTOM_E2E_SERVICE_ACCOUNT_ISSUER=${SERVICE_ACCOUNT_ISSUER}
export PHANTOM_E2E_CA=${PKI}/ca.crt
export PHANTOM_E2E_ADMIN_CERT=${PKI}/admin.crt
export PHANTOM_E2E_ADMIN_KEY=${PKI}/admin.key
export PHANTOM_E2E_NODE=${E2E_NODE_NAME}
export PHANTOM_E2E_KUBELET_ROOT=${KUBELET_ROOT}
export PHANTOM_E2E_CONTAINERD_ADDRESS=${CONTAINERD_SOCK}
export PHANTOM_E2E_ETCD_DATA=${STATE}/etcd
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS=https://127.0.0.1:${E2E_ETCD_CLIENT_PORT}
export ETCDCTL_CACERT=${PKI}/ca.crt
export ETCDCTL_CERT=${PKI}/apiserver-etcd-client.crt
export ETCDCTL_KEY=${PKI}/apiserver-etcd-client.key
EOF
}

# -------------------------------------------------------------------------

# Runs on every exit. After a failure it prints the last lines of each log
# and stops what was started, so a failed run leaves nothing behind.
on_exit() {
  local status="$1"
  ((status != 0)) || return 0
  log "up.sh failed (exit ${status}); last lines of each log:"
  local f
  for f in "${LOGS}"/*.log; do
    [[ -f "${f}" ]] || continue
    echo "----- ${f}" >&2
    tail -n 15 "${f}" >&2
  done
  if [[ "${E2E_KEEP_ON_FAILURE:-0}" == 1 ]]; then
    log "E2E_KEEP_ON_FAILURE=1: leaving the cluster as it is; run down.sh to stop it"
  else
    "${E2E_CLUSTER_DIR}/down.sh" || log "down.sh failed; run it again"
  fi
}

# No service proxy runs. Without a route of their own, connections to the
# service CIDR (an API server calling a webhook through its Service, a pod
# dialing the kubernetes Service) would follow the default route and leave
# the machine. A local route keeps them on this host: they are refused,
# unless an iptables rule that the installation adds forwards a ClusterIP
# to a host-network pod on 127.0.0.1.
add_service_route() {
  if [[ -n "$(ip route show table local exact "${E2E_SERVICE_CIDR}")$(ip route show exact "${E2E_SERVICE_CIDR}")" ]]; then
    log "a route for the service CIDR ${E2E_SERVICE_CIDR} exists already; leaving it as it is"
    return 0
  fi
  ip route add local "${E2E_SERVICE_CIDR}" dev lo || die "cannot add a local route for ${E2E_SERVICE_CIDR}"
  echo "${E2E_SERVICE_CIDR}" >"${SERVICE_ROUTE}"
}

main() {
  check_prerequisites
  reset_state
  trap 'on_exit $?' EXIT
  add_service_route

  local total_start=${SECONDS} phase_start=${SECONDS}
  generate_pki
  generate_kubeconfigs
  record_phase pki $((SECONDS - phase_start))

  phase_start=${SECONDS}
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  record_phase control-plane $((SECONDS - phase_start))

  phase_start=${SECONDS}
  start_containerd
  import_images
  create_cgroup_root
  start_kubelet
  set_node_address
  wait_ready kubelet node_ready_and_untainted
  node_address_is_loopback || die "kubelet replaced the node's InternalIP 127.0.0.1; see ${LOGS}/kubelet.log"
  record_phase node $((SECONDS - phase_start))

  phase_start=${SECONDS}
  configure_cluster
  write_env
  record_phase configure $((SECONDS - phase_start))
  record_phase total $((SECONDS - total_start))

  log "cluster up in $((SECONDS - total_start))s; source ${STATE}/env (KUBECONFIG=${KUBECONFIG_ADMIN})"
}

main "$@"
